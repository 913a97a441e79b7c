//! The frame parser, shared: the XDP program runs it on packets (through
//! bounds-checked loads from the context) and the host runs the very same
//! code on byte slices, so it can be fuzzed and used as the oracle the
//! kernel's counters are checked against.

use crate::proto;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 headers past the fixed one that we walk before giving up.
pub const MAX_IPV6_EXT: usize = 6;

/// Bounds-checked reads from a frame.
pub trait Bytes {
    /// Copies `N` bytes at `off`, or None past the end. In eBPF N must be
    /// at least 2 (see the XDP side).
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// The frame's length.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline(always)]
    fn be16(&self, off: usize) -> Option<u16> {
        self.load::<2>(off).map(u16::from_be_bytes)
    }
}

impl Bytes for [u8] {
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let s = self.get(off..off.checked_add(N)?)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(out)
    }

    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

/// An optional value whose bytes are always written. An `Option`'s `None`
/// leaves its payload undefined, and LLVM may load that payload before it
/// tests the tag (the result is then discarded): verifiers before Linux
/// 6.5 reject any read of a stack slot never written, so the XDP program
/// would not load there. Here `None` stores a zero value too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opt<T> {
    present: bool,
    value: T,
}

impl<T: Copy + Default> Opt<T> {
    #[inline(always)]
    pub fn none() -> Self {
        Opt {
            present: false,
            value: T::default(),
        }
    }

    #[inline(always)]
    pub fn some(value: T) -> Self {
        Opt {
            present: true,
            value,
        }
    }

    #[inline(always)]
    pub fn get(self) -> Option<T> {
        if self.present { Some(self.value) } else { None }
    }

    #[inline(always)]
    pub fn is_some(&self) -> bool {
        self.present
    }

    #[inline(always)]
    pub fn is_none(&self) -> bool {
        !self.present
    }
}

/// What the parser learned about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub proto: usize,
    pub vlan: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub fragment: bool,
    pub tcp_flags: Opt<u8>,
    /// The TCP segment carries data (a pure ACK carries none).
    pub tcp_payload: bool,
    pub udp_sport: Opt<u16>,
    /// (IP protocol, destination port) for TCP and UDP first fragments.
    pub dport: Opt<(u8, u16)>,
    pub ttl: u8,
    /// (4 or 6, offset of the source address in the frame): read on demand
    /// with [`Shape::source`], so packets that never need it don't pay for
    /// copying it.
    pub source_at: Opt<(u8, usize)>,
}

impl Shape {
    /// The source address, read from the frame.
    #[inline(always)]
    pub fn source<B: Bytes + ?Sized>(&self, f: &B) -> Opt<Addr> {
        let Some((family, off)) = self.source_at.get() else {
            return Opt::none();
        };
        source_at(f, family, off)
    }
}

/// A source address as it lies in the frame, in four native-endian words
/// (IPv4: the first; the rest zero). Words rather than 16 bytes: in eBPF
/// every byte of an array is a register of its own, and 16 of them live
/// across a branchy path are 16 stack spills and 16 byte copies per use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr {
    /// 4 or 6.
    pub family: u8,
    pub words: [u32; 4],
}

impl Addr {
    /// The address bytes in network order (IPv4 in the first 4).
    #[inline(always)]
    pub fn bytes(&self) -> [u8; 16] {
        // SAFETY: same size, and any 16 bytes are a valid [u8; 16]; the
        // words hold the bytes in memory order.
        unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(self.words) }
    }
}

/// The source address of `family` (4 or 6) at `off` in the frame.
#[inline(always)]
pub fn source_at<B: Bytes + ?Sized>(f: &B, family: u8, off: usize) -> Opt<Addr> {
    // One read per family, each checked before its bytes are used: older
    // verifiers (5.10) refuse code that reads a word of a None.
    let words = if family == 4 {
        let Some(b) = f.load::<4>(off) else {
            return Opt::none();
        };
        [u32::from_ne_bytes(b), 0, 0, 0]
    } else {
        let Some(b) = f.load::<16>(off) else {
            return Opt::none();
        };
        let w = |i: usize| u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        [w(0), w(1), w(2), w(3)]
    };
    Opt::some(Addr { family, words })
}

/// What [`walk`] reports as it parses a frame, in frame order. [`Shape`]
/// keeps every fact; the XDP program's per-frame count keeps only its
/// class ([`crate::Classify`]), so a few small integers live
/// through the walk instead of every field of a Shape (which the BPF
/// backend spilled to the stack at each branch). One walk for both keeps
/// one parser: the fuzzer checks that the two views agree.
pub trait Visit {
    /// An 802.1Q or 802.1ad tag (once per tag).
    fn vlan(&mut self);
    /// IPv4 (4) or IPv6 (6) by ethertype, before its header is checked.
    fn family(&mut self, family: u8);
    /// A sane IP header: its TTL or hop limit, and where the source is.
    fn ip(&mut self, family: u8, ttl: u8, source_off: usize);
    /// An IPv4 fragment (MF or offset set) or an IPv6 fragment header.
    fn fragment(&mut self);
    /// The protocol index of a frame with no TCP or UDP header to report.
    fn proto(&mut self, p: usize);
    /// A TCP header inside the IP payload.
    fn tcp(&mut self, flags: u8, payload: bool, dport: u16);
    /// A UDP header inside the IP payload.
    fn udp(&mut self, sport: u16, dport: u16);
}

impl Shape {
    /// What an empty or unparsable frame is.
    #[inline(always)]
    pub fn malformed() -> Shape {
        Shape {
            proto: proto::MALFORMED,
            vlan: false,
            ipv4: false,
            ipv6: false,
            fragment: false,
            tcp_flags: Opt::none(),
            tcp_payload: false,
            udp_sport: Opt::none(),
            dport: Opt::none(),
            ttl: 0,
            source_at: Opt::none(),
        }
    }
}

impl Visit for Shape {
    #[inline(always)]
    fn vlan(&mut self) {
        self.vlan = true;
    }

    #[inline(always)]
    fn family(&mut self, family: u8) {
        self.ipv4 = family == 4;
        self.ipv6 = family == 6;
    }

    #[inline(always)]
    fn ip(&mut self, family: u8, ttl: u8, source_off: usize) {
        self.ttl = ttl;
        self.source_at = Opt::some((family, source_off));
    }

    #[inline(always)]
    fn fragment(&mut self) {
        self.fragment = true;
    }

    #[inline(always)]
    fn proto(&mut self, p: usize) {
        self.proto = p;
    }

    #[inline(always)]
    fn tcp(&mut self, flags: u8, payload: bool, dport: u16) {
        self.proto = proto::TCP;
        self.tcp_flags = Opt::some(flags);
        self.tcp_payload = payload;
        self.dport = Opt::some((IPPROTO_TCP, dport));
    }

    #[inline(always)]
    fn udp(&mut self, sport: u16, dport: u16) {
        self.proto = proto::UDP;
        self.udp_sport = Opt::some(sport);
        self.dport = Opt::some((IPPROTO_UDP, dport));
    }
}

/// Parses Ethernet (up to two VLAN tags), IPv4 or IPv6 (extension headers,
/// fragments) and the TCP/UDP/ICMP header. A frame whose headers are cut
/// short or whose IP length disagrees with the frame (as the kernel's
/// ip_rcv/ipv6_rcv checks) is `proto::MALFORMED`, with its source kept.
#[inline(always)]
pub fn parse<B: Bytes + ?Sized>(f: &B) -> Shape {
    let mut shape = Shape::malformed();
    walk(f, &mut shape);
    shape
}

/// The parse itself: reports each fact to `v` as it finds it. A visitor
/// that reports nothing about the protocol leaves it malformed.
#[inline(always)]
pub fn walk<B: Bytes + ?Sized, V: Visit>(f: &B, v: &mut V) {
    let Some(mut ethertype) = f.be16(12) else {
        return;
    };
    let mut off: usize = 14;
    // Up to two tags: 802.1ad outer, 802.1Q inner (QinQ).
    let mut tags = 0;
    while tags < 2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        v.vlan();
        let Some(inner) = f.be16(off + 2) else {
            return;
        };
        ethertype = inner;
        off += 4;
        tags += 1;
    }

    let (l4proto, l4off, ip_end) = match ethertype {
        ETH_P_IP => {
            v.family(4);
            let Some(h) = f.load::<20>(off) else {
                return;
            };
            let ihl = (h[0] & 0x0f) as usize * 4;
            if h[0] >> 4 != 4 || ihl < 20 {
                return;
            }
            v.ip(4, h[8], off + 12);
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            // Claims more than it carries, or less than its own header.
            if off + total > f.len() || total < ihl {
                return;
            }
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if frag & 0x3fff != 0 {
                v.fragment();
            }
            if frag & 0x1fff != 0 {
                // Later fragments carry no transport header.
                v.proto(proto_index(h[9]));
                return;
            }
            (h[9], off + ihl, off + total)
        }
        ETH_P_IPV6 => {
            v.family(6);
            let Some(h) = f.load::<40>(off) else {
                return;
            };
            v.ip(6, h[7], off + 8);
            let plen = u16::from_be_bytes([h[4], h[5]]) as usize;
            // A zero length with a hop-by-hop header may be a jumbogram.
            if (plen != 0 || h[6] != 0) && off + 40 + plen > f.len() {
                return;
            }
            let mut next = h[6];
            let mut hoff = off + 40;
            let mut i = 0;
            while i < MAX_IPV6_EXT {
                if !matches!(next, 0 | 43 | 60 | 51 | 44) {
                    break;
                }
                // Every extension header starts with (next header, length).
                let Some(e) = f.load::<8>(hoff) else {
                    return;
                };
                match next {
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                    0 | 43 | 60 => hoff += (e[1] as usize + 1) * 8,
                    // Authentication header: (len + 2) * 4 bytes.
                    51 => hoff += (e[1] as usize + 2) * 4,
                    // Fragment header: 8 bytes; later fragments have no transport header.
                    _ => {
                        v.fragment();
                        if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                            v.proto(proto_index6(e[0]));
                            return;
                        }
                        hoff += 8;
                    }
                }
                next = e[0];
                // Keeps the offset provably small for the verifier.
                if hoff > 1024 {
                    return;
                }
                i += 1;
            }
            (next, hoff, off + 40 + plen)
        }
        _ => {
            v.proto(proto::NON_IP);
            return;
        }
    };

    match l4proto {
        IPPROTO_TCP => {
            if let Some(t) = f.load::<20>(l4off)
                && l4off + 20 <= ip_end
            {
                let doff = (t[12] >> 4) as usize * 4;
                v.tcp(
                    t[13],
                    ip_end > l4off + doff,
                    u16::from_be_bytes([t[2], t[3]]),
                );
            }
        }
        IPPROTO_UDP => {
            if let Some(u) = f.load::<8>(l4off)
                && l4off + 8 <= ip_end
            {
                v.udp(
                    u16::from_be_bytes([u[0], u[1]]),
                    u16::from_be_bytes([u[2], u[3]]),
                );
            }
        }
        // ICMP belongs to IPv4 and ICMPv6 to IPv6; the other way round is
        // just an unusual transport.
        IPPROTO_ICMP if ethertype == ETH_P_IP => {
            if f.load::<4>(l4off).is_some() && l4off + 4 <= ip_end {
                v.proto(proto::ICMP);
            }
        }
        IPPROTO_ICMPV6 if ethertype == ETH_P_IPV6 => {
            if f.load::<4>(l4off).is_some() && l4off + 4 <= ip_end {
                v.proto(proto::ICMPV6);
            }
        }
        _ => v.proto(proto::OTHER_IP),
    }
}

#[inline(always)]
pub fn proto_index(p: u8) -> usize {
    match p {
        IPPROTO_TCP => proto::TCP,
        IPPROTO_UDP => proto::UDP,
        IPPROTO_ICMP => proto::ICMP,
        _ => proto::OTHER_IP,
    }
}

#[inline(always)]
pub fn proto_index6(p: u8) -> usize {
    match p {
        IPPROTO_ICMPV6 => proto::ICMPV6,
        IPPROTO_ICMP => proto::OTHER_IP,
        p => proto_index(p),
    }
}

/// What the parser promises for any input whatsoever, as one check the
/// tests and the coverage-guided fuzzer (`tests/fuzz`) share. Host-side
/// only; the kernel never calls it.
pub mod promises {
    use super::{Bytes, Shape, parse};
    use crate::proto;

    /// A frame followed by `pad` zero bytes (Ethernet padding), unallocated.
    struct Padded<'a>(&'a [u8], usize);

    impl Bytes for Padded<'_> {
        fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
            let end = off.checked_add(N)?;
            if end > self.len() {
                return None;
            }
            let mut out = [0u8; N];
            for (i, b) in out.iter_mut().enumerate() {
                *b = self.0.get(off + i).copied().unwrap_or(0);
            }
            Some(out)
        }

        fn len(&self) -> usize {
            self.0.len() + self.1
        }
    }

    /// The fields of one shape agree with each other and with the frame.
    pub fn consistent(s: &Shape, f: &[u8]) -> Result<(), &'static str> {
        let ok = |c: bool, why| if c { Ok(()) } else { Err(why) };
        ok(s.proto < proto::COUNT, "protocol index out of range")?;
        ok(!(s.ipv4 && s.ipv6), "both IPv4 and IPv6")?;
        // Later fragments count under their transport but carry no header.
        if s.tcp_flags.is_some() || (s.proto == proto::TCP && !s.fragment) {
            ok(
                s.tcp_flags.is_some() && s.proto == proto::TCP,
                "TCP flags without TCP",
            )?;
        }
        if s.udp_sport.is_some() || (s.proto == proto::UDP && !s.fragment) {
            ok(
                s.udp_sport.is_some() && s.proto == proto::UDP,
                "UDP port without UDP",
            )?;
        }
        if s.dport.is_some() {
            ok(
                s.proto == proto::TCP || s.proto == proto::UDP,
                "port without TCP/UDP",
            )?;
        }
        if s.source_at.is_some() {
            ok(s.ipv4 || s.ipv6, "source without IP")?;
            ok(s.source(f).is_some(), "source address outside the frame")?;
        }
        if s.proto == proto::NON_IP {
            ok(
                !s.ipv4 && !s.ipv6 && s.source_at.is_none(),
                "non-IP with IP fields",
            )?;
        }
        if s.proto == proto::ICMPV6 {
            ok(s.ipv6, "ICMPv6 outside IPv6")?;
        }
        if s.proto == proto::ICMP {
            ok(s.ipv4, "ICMP outside IPv4")?;
        }
        Ok(())
    }

    /// Every promise for frame `f`: a consistent shape; padding after a
    /// parsed packet changes nothing; a frame cut anywhere in its first 128
    /// bytes parses the same or as malformed, never as something else; and
    /// the shape counters count it once.
    pub fn check(f: &[u8]) -> Result<Shape, &'static str> {
        let s = parse(f);
        consistent(&s, f)?;
        if s.proto != proto::MALFORMED && parse(&Padded(f, 24)) != s {
            return Err("Ethernet padding changed the shape");
        }
        for k in 0..f.len().min(128) {
            let t = parse(&f[..k]);
            consistent(&t, &f[..k])?;
            if t != s && t.proto != proto::MALFORMED {
                return Err("a cut frame parsed as something else");
            }
        }
        // The XDP program's per-frame view of the same walk.
        let mut k = crate::Classify::default();
        super::walk(f, &mut k);
        if k != crate::Classify::of(&s) {
            return Err("the per-frame class differs from the shape's");
        }
        let mut st = crate::IfaceStats::default();
        st.count(&s, f.len() as u64);
        let by_proto: u64 = st.proto_packets.iter().sum();
        if st.packets != 1 || by_proto != 1 || st.size_buckets.iter().sum::<u64>() != 1 {
            return Err("the counters did not count the frame exactly once");
        }
        Ok(s)
    }
}
