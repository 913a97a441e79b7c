//! What XDP counts per watched interface: packet shapes, sizes, TTLs,
//! UDP source-port buckets (maps: `maps::{IFACE_SLOT_ARRAY, IFACE_SLOTS,
//! IFACE_STATS, PORT_BUCKETS, UDP_SRC_PORTS}`).

use crate::{parse, sampler::Sampler};

/// Interfaces with an ifindex below this find their slot by array lookup.
pub const SLOT_ARRAY_IFINDEXES: u32 = 4096;
/// Upper bound of watched interfaces.
pub const MAX_IFACES: u32 = 64;

/// UDP source ports 0..1023 each get their own bucket; user space may give up
/// to `UDP_EXTRA_PORTS` higher ports (reflectors such as 1900 or 11211) their
/// own bucket too; every other port lands in `UDP_OTHER_BUCKET`.
pub const UDP_EXTRA_PORTS: u32 = 63;
pub const UDP_OTHER_BUCKET: u32 = 1024 + UDP_EXTRA_PORTS;
pub const UDP_PORT_BUCKETS: u32 = UDP_OTHER_BUCKET + 1;

/// Frame size buckets: upper bounds (inclusive) in bytes; the last is open.
pub const SIZE_BUCKET_LIMITS: [u32; SIZE_BUCKETS - 1] = [64, 128, 256, 512, 1024, 1518, 9018];
pub const SIZE_BUCKETS: usize = 8;

/// Index into [`IfaceStats::proto_packets`] / `proto_bytes`.
pub mod proto {
    pub const TCP: usize = 0;
    pub const UDP: usize = 1;
    pub const ICMP: usize = 2;
    pub const ICMPV6: usize = 3;
    /// IPv4 or IPv6 with another transport. (A non-first fragment counts
    /// under the transport its header names: TCP, UDP, ICMP.)
    pub const OTHER_IP: usize = 4;
    /// ARP, LLDP and everything else that is not IP.
    pub const NON_IP: usize = 5;
    /// Cut short or inconsistent headers.
    pub const MALFORMED: usize = 6;
    pub const COUNT: usize = 7;
    pub const NAMES: [&str; COUNT] = [
        "tcp",
        "udp",
        "icmp",
        "icmpv6",
        "other_ip",
        "non_ip",
        "malformed",
    ];
}

/// Packet-shape counters of one watched interface, summed and derived
/// from [`IfaceCounters`] by user space (and counted directly by the
/// host-side oracle, [`IfaceStats::count`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceStats {
    pub packets: u64,
    pub bytes: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    /// Frames with at least one 802.1Q/802.1ad tag.
    pub vlan: u64,
    /// IPv4 with MF or offset set, IPv6 with a fragment header.
    pub fragments: u64,
    pub proto_packets: [u64; proto::COUNT],
    pub proto_bytes: [u64; proto::COUNT],
    pub size_buckets: [u64; SIZE_BUCKETS],
    pub tcp_syn: u64,
    pub tcp_syn_ack: u64,
    /// Pure ACKs: ACK set, no SYN, FIN or RST, and no payload.
    pub tcp_ack_only: u64,
    pub tcp_rst: u64,
    pub tcp_fin: u64,
    /// Dropped by the `--enforce` blocklist.
    pub blocked: u64,
    pub blocked_bytes: u64,
    /// IPv4 TTL / IPv6 hop limit histogram.
    pub ttl: [u64; 256],
}

/// Shape classes: every combination of the per-frame facts the shape
/// counters split on, so a frame costs one increment for all of them.
pub mod class {
    use crate::proto;

    /// TCP frames with flags: `TCP_FLAGS + (kind | rst << 2 | fin << 3)`,
    /// kind 0 other, 1 SYN, 2 SYN-ACK, 3 pure ACK. Below it, the protocol
    /// index (TCP there: a later fragment, no header).
    pub const TCP_FLAGS: usize = proto::COUNT;
    /// Protocol-and-flags values per (family, vlan, fragment).
    pub const PROTO_FLAGS: usize = TCP_FLAGS + 16;
    /// Family 0 (not IP), 1 (IPv4), 2 (IPv6) x vlan x fragment.
    pub const COUNT: usize = 3 * 2 * 2 * PROTO_FLAGS;
}

/// What XDP counts per watched interface, per CPU: the kernel side of
/// [`IfaceStats`].
///
/// Every frame touches four places here (the sampler's countdown, its
/// size bucket beside it, its shape class's packets and bytes side by
/// side, its TTL), not the fifteen counters a counter per fact would: the
/// per-frame path is the XDP program's whole cost in NAPI, and each cache
/// line it touches is a likely miss after the stack ran between two
/// frames. User space derives the per-fact counters
/// ([`IfaceCounters::stats`]); they are exact sums.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IfaceCounters {
    /// The XDP program's sampling state for this CPU (not a counter).
    pub sampler: Sampler,
    /// Right after the sampler: the buckets up to 1024 bytes share its
    /// cache line.
    pub size_buckets: [u64; SIZE_BUCKETS],
    pub blocked: u64,
    pub blocked_bytes: u64,
    /// (packets, bytes) per shape class (see [`class`]): a protocol's
    /// bytes are its classes' bytes, one line with the packet count.
    pub classes: [[u64; 2]; class::COUNT],
    /// IPv4 TTL / IPv6 hop limit histogram.
    pub ttl: [u64; 256],
}

impl Default for IfaceCounters {
    fn default() -> Self {
        Self {
            sampler: Sampler::default(),
            size_buckets: [0; SIZE_BUCKETS],
            blocked: 0,
            blocked_bytes: 0,
            classes: [[0; 2]; class::COUNT],
            ttl: [0; 256],
        }
    }
}

/// The class of a TCP frame with a header (see [`class::TCP_FLAGS`]).
#[inline(always)]
fn tcp_class(flags: u8, payload: bool) -> usize {
    let syn = flags & 0x02 != 0;
    let ack = flags & 0x10 != 0;
    let rst = flags & 0x04 != 0;
    let fin = flags & 0x01 != 0;
    let kind = if syn {
        1 + ack as usize
    } else if ack && !rst && !fin && !payload {
        3
    } else {
        0
    };
    class::TCP_FLAGS + (kind | (rst as usize) << 2 | (fin as usize) << 3)
}

/// The per-frame count's view of a parse ([`parse::walk`]): the frame's
/// shape class, its TTL and where its source address is, as three small
/// integers. The XDP program carries these through the parse instead of
/// a whole [`parse::Shape`]; the fuzzer checks that both views agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classify {
    /// `(family * 2 + vlan) * 2 + fragment`, family 0 (not IP), 1 (IPv4)
    /// or 2 (IPv6): the class's index without its protocol part.
    outer: usize,
    /// The protocol-and-flags part of the class.
    pf: usize,
    /// IPv4 TTL or IPv6 hop limit.
    ttl: u8,
    /// Offset of the source address in the frame; 0 (never an address's
    /// offset) when the IP header was not sane.
    source_off: usize,
}

impl Default for Classify {
    #[inline(always)]
    fn default() -> Self {
        Classify {
            outer: 0,
            pf: proto::MALFORMED,
            ttl: 0,
            source_off: 0,
        }
    }
}

impl Classify {
    /// The view of a frame already parsed into `shape`.
    pub fn of(shape: &parse::Shape) -> Classify {
        let family = shape.ipv4 as usize | (shape.ipv6 as usize) << 1;
        let (ttl, source_off) = match shape.source_at.get() {
            Some((_, off)) => (shape.ttl, off),
            None => (0, 0),
        };
        Classify {
            outer: (family * 2 + shape.vlan as usize) * 2 + shape.fragment as usize,
            pf: match shape.tcp_flags.get() {
                Some(flags) => tcp_class(flags, shape.tcp_payload),
                None => shape.proto,
            },
            ttl,
            source_off,
        }
    }

    /// (4 or 6, offset) of the source address, when the frame has one
    /// (an [`parse::Opt`]: old verifiers refuse an `Option`'s unwritten
    /// payload).
    #[inline(always)]
    pub fn source_at(&self) -> parse::Opt<(u8, usize)> {
        if self.source_off == 0 {
            return parse::Opt::none();
        }
        parse::Opt::some((if self.outer >> 2 == 1 { 4 } else { 6 }, self.source_off))
    }
}

impl parse::Visit for Classify {
    #[inline(always)]
    fn vlan(&mut self) {
        self.outer |= 2;
    }

    #[inline(always)]
    fn family(&mut self, family: u8) {
        self.outer |= if family == 4 { 4 } else { 8 };
    }

    #[inline(always)]
    fn ip(&mut self, _family: u8, ttl: u8, source_off: usize) {
        self.ttl = ttl;
        self.source_off = source_off;
    }

    #[inline(always)]
    fn fragment(&mut self) {
        self.outer |= 1;
    }

    #[inline(always)]
    fn proto(&mut self, p: usize) {
        self.pf = p;
    }

    #[inline(always)]
    fn tcp(&mut self, flags: u8, payload: bool, _dport: u16) {
        self.pf = tcp_class(flags, payload);
    }

    #[inline(always)]
    fn udp(&mut self, _sport: u16, _dport: u16) {
        self.pf = proto::UDP;
    }
}

impl IfaceCounters {
    /// Counts one parsed frame of `len` bytes.
    /// Must agree with [`IfaceStats::count`] (a unit test checks it).
    #[inline(always)]
    pub fn count(&mut self, shape: &parse::Shape, len: u64) {
        self.count_class(&Classify::of(shape), len);
    }

    /// Counts one frame of `len` bytes by its class: the XDP program's
    /// hot path.
    #[inline(always)]
    pub fn count_class(&mut self, k: &Classify, len: u64) {
        // black_box: LLVM proves both indexes in range from how the walk
        // builds them and drops the checks; Linux 5.10's verifier, which
        // forgets a spilled value's bounds, cannot, and refuses the
        // program. Behind the box the checks stay, just before each use.
        let c = core::hint::black_box(k.outer * class::PROTO_FLAGS + k.pf);
        if c < class::COUNT {
            self.classes[c][0] += 1;
            self.classes[c][1] += len;
        }
        let b = size_bucket(len as u32);
        if b < self.size_buckets.len() {
            self.size_buckets[b] += 1;
        }
        let t = core::hint::black_box(k.ttl as usize);
        if k.source_off != 0 && t < self.ttl.len() {
            self.ttl[t] += 1;
        }
    }

    /// The per-fact counters these add up to.
    pub fn stats(&self) -> IfaceStats {
        let mut s = IfaceStats {
            blocked: self.blocked,
            blocked_bytes: self.blocked_bytes,
            size_buckets: self.size_buckets,
            ttl: self.ttl,
            ..IfaceStats::default()
        };
        for (c, &[n, bytes]) in self.classes.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let pf = c % class::PROTO_FLAGS;
            let frag = (c / class::PROTO_FLAGS) & 1;
            let vlan = (c / class::PROTO_FLAGS / 2) & 1;
            let family = c / class::PROTO_FLAGS / 4;
            s.packets += n;
            s.bytes += bytes;
            // Below TCP_FLAGS the class is the protocol; above, TCP's flags.
            let p = if pf < class::TCP_FLAGS {
                pf
            } else {
                proto::TCP
            };
            s.proto_bytes[p] += bytes;
            s.fragments += n * frag as u64;
            s.vlan += n * vlan as u64;
            s.ipv4 += n * (family & 1) as u64;
            s.ipv6 += n * (family >> 1) as u64;
            if pf < class::TCP_FLAGS {
                s.proto_packets[pf] += n;
                continue;
            }
            s.proto_packets[proto::TCP] += n;
            let t = pf - class::TCP_FLAGS;
            match t & 3 {
                1 => s.tcp_syn += n,
                2 => s.tcp_syn_ack += n,
                3 => s.tcp_ack_only += n,
                _ => {}
            }
            s.tcp_rst += n * ((t >> 2) & 1) as u64;
            s.tcp_fin += n * ((t >> 3) & 1) as u64;
        }
        s
    }
}

impl Default for IfaceStats {
    fn default() -> Self {
        Self {
            packets: 0,
            bytes: 0,
            proto_packets: [0; proto::COUNT],
            proto_bytes: [0; proto::COUNT],
            ipv4: 0,
            ipv6: 0,
            vlan: 0,
            tcp_syn: 0,
            tcp_syn_ack: 0,
            tcp_ack_only: 0,
            tcp_rst: 0,
            tcp_fin: 0,
            fragments: 0,
            size_buckets: [0; SIZE_BUCKETS],
            ttl: [0; 256],
            blocked: 0,
            blocked_bytes: 0,
        }
    }
}

impl IfaceStats {
    /// Adds `o` field by field (summing per-CPU values).
    pub fn add(&mut self, o: &IfaceStats) {
        self.combine(o, |a, b| a + b);
    }

    /// `self - earlier`, field by field, never below zero (an interval's delta).
    pub fn since(&self, earlier: &IfaceStats) -> IfaceStats {
        let mut d = *self;
        d.combine(earlier, u64::saturating_sub);
        d
    }

    /// Counts one parsed frame of `len` bytes, a counter per fact: the
    /// host's oracle in tests, written apart from [`IfaceCounters::count`]
    /// (the XDP program's) so that each checks the other.
    pub fn count(&mut self, shape: &parse::Shape, len: u64) {
        self.packets += 1;
        self.bytes += len;
        if shape.proto < proto::COUNT {
            self.proto_packets[shape.proto] += 1;
            self.proto_bytes[shape.proto] += len;
        }
        self.ipv4 += shape.ipv4 as u64;
        self.ipv6 += shape.ipv6 as u64;
        self.vlan += shape.vlan as u64;
        self.fragments += shape.fragment as u64;
        if let Some(flags) = shape.tcp_flags.get() {
            let syn = flags & 0x02 != 0;
            let ack = flags & 0x10 != 0;
            let rst = flags & 0x04 != 0;
            let fin = flags & 0x01 != 0;
            self.tcp_syn += (syn && !ack) as u64;
            self.tcp_syn_ack += (syn && ack) as u64;
            self.tcp_ack_only += (ack && !syn && !rst && !fin && !shape.tcp_payload) as u64;
            self.tcp_rst += rst as u64;
            self.tcp_fin += fin as u64;
        }
        let b = size_bucket(len as u32);
        if b < self.size_buckets.len() {
            self.size_buckets[b] += 1;
        }
        if shape.source_at.is_some() {
            self.ttl[shape.ttl as usize] += 1;
        }
    }

    /// Applies `f(self.field, o.field)` to every counter.
    fn combine(&mut self, o: &IfaceStats, f: impl Fn(u64, u64) -> u64) {
        let scalars = [
            (&mut self.packets, o.packets),
            (&mut self.bytes, o.bytes),
            (&mut self.ipv4, o.ipv4),
            (&mut self.ipv6, o.ipv6),
            (&mut self.vlan, o.vlan),
            (&mut self.tcp_syn, o.tcp_syn),
            (&mut self.tcp_syn_ack, o.tcp_syn_ack),
            (&mut self.tcp_ack_only, o.tcp_ack_only),
            (&mut self.tcp_rst, o.tcp_rst),
            (&mut self.tcp_fin, o.tcp_fin),
            (&mut self.fragments, o.fragments),
            (&mut self.blocked, o.blocked),
            (&mut self.blocked_bytes, o.blocked_bytes),
        ];
        for (a, b) in scalars {
            *a = f(*a, b);
        }
        let arrays: [(&mut [u64], &[u64]); 4] = [
            (&mut self.proto_packets, &o.proto_packets),
            (&mut self.proto_bytes, &o.proto_bytes),
            (&mut self.size_buckets, &o.size_buckets),
            (&mut self.ttl, &o.ttl),
        ];
        for (a, b) in arrays {
            for (x, y) in a.iter_mut().zip(b) {
                *x = f(*x, *y);
            }
        }
    }
}

/// Maps a frame length to its size bucket.
#[inline(always)]
pub fn size_bucket(len: u32) -> usize {
    let mut i = 0;
    while i < SIZE_BUCKET_LIMITS.len() {
        if len <= SIZE_BUCKET_LIMITS[i] {
            return i;
        }
        i += 1;
    }
    SIZE_BUCKETS - 1
}

/// The names of the maps this concept owns (the statics' names in the
/// eBPF object); `crate::maps` and `crate::flood_maps` index them all.
pub(crate) mod map_names {
    /// Array indexed by ifindex (< SLOT_ARRAY_IFINDEXES): slot + 1, 0 = not watched.
    pub const IFACE_SLOT_ARRAY: &str = "IFACE_SLOT_ARRAY";
    /// Hash: ifindex -> slot, for larger ifindexes (written by user space).
    pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
    /// Per-CPU array indexed by slot: [`IfaceCounters`] per interface.
    pub const IFACE_STATS: &str = "IFACE_STATS";
    /// Array: UDP port -> bucket (written by user space).
    pub const PORT_BUCKETS: &str = "PORT_BUCKETS";
    /// Per-CPU array indexed by slot: [`UdpPortCounts`] per interface.
    pub const UDP_SRC_PORTS: &str = "UDP_SRC_PORTS";
}

/// Packets per UDP source-port bucket on one interface (one CPU's share).
/// One value per interface, not one per (interface, bucket): a per-CPU
/// array allocates each element on its own, and 64 x 1088 of them took a
/// quarter second to create under emulation.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UdpPortCounts {
    pub packets: [u64; UDP_PORT_BUCKETS as usize],
}

impl Default for UdpPortCounts {
    fn default() -> Self {
        UdpPortCounts {
            packets: [0; UDP_PORT_BUCKETS as usize],
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for IfaceCounters {}
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for UdpPortCounts {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_touches_the_first_line_a_class_and_one_ttl() {
        use core::mem::offset_of;
        // The sampler and the size buckets up to 1024 bytes: 64 bytes.
        assert!(offset_of!(IfaceCounters, size_buckets) + 8 * 6 <= 64);
        assert_eq!(SIZE_BUCKET_LIMITS[4], 1024);
        // A class's packets and bytes side by side, 16 bytes at a 16-byte
        // offset (the kernel aligns a per-CPU value to 8 only, so a pair
        // may still cross a line, rarely).
        assert_eq!(offset_of!(IfaceCounters, classes) % 16, 0);
        // Fits a per-CPU array value (the kernel's limit is 32 KiB).
        assert!(core::mem::size_of::<IfaceCounters>() <= 32 * 1024);
    }

    /// Every shape the parser can give, counted by class and derived,
    /// equals the per-fact counters the host oracle counts.
    #[test]
    fn classes_derive_exactly_the_per_fact_counters() {
        use crate::parse::{Opt, Shape};
        let mut want = IfaceStats::default();
        let mut got = IfaceCounters::default();
        let mut n = 0u64;
        for p in 0..proto::COUNT {
            for family in 0..3 {
                for bits in 0..4u8 {
                    for flags in 0..=255u8 {
                        let tcp = p == proto::TCP && flags != 0;
                        if !tcp && flags > 1 {
                            continue;
                        }
                        for payload in [false, true] {
                            let s = Shape {
                                proto: p,
                                vlan: bits & 1 != 0,
                                ipv4: family == 1,
                                ipv6: family == 2,
                                fragment: bits & 2 != 0,
                                tcp_flags: if tcp { Opt::some(flags) } else { Opt::none() },
                                tcp_payload: payload,
                                udp_sport: Opt::none(),
                                dport: Opt::none(),
                                ttl: flags,
                                source_at: if family == 0 {
                                    Opt::none()
                                } else {
                                    Opt::some((family as u8 * 2 + 2, 26))
                                },
                            };
                            let len = 40 + (n * 37) % 10_000;
                            want.count(&s, len);
                            got.count(&s, len);
                            n += 1;
                        }
                    }
                }
            }
        }
        got.blocked = 3;
        want.blocked = 3;
        let d = got.stats();
        assert_eq!(d.packets, n);
        assert!(d.tcp_syn > 0 && d.tcp_ack_only > 0 && d.tcp_rst > 0 && d.fragments > 0);
        assert_eq!(d, want);
    }

    #[test]
    fn add_and_since_cover_every_counter() {
        let mut a = IfaceStats {
            packets: 5,
            tcp_fin: 2,
            ..Default::default()
        };
        a.proto_bytes[proto::UDP] = 100;
        a.size_buckets[3] = 4;
        a.ttl[64] = 5;
        let mut sum = a;
        sum.add(&a);
        assert_eq!(
            (sum.packets, sum.tcp_fin, sum.proto_bytes[proto::UDP]),
            (10, 4, 200)
        );
        assert_eq!((sum.size_buckets[3], sum.ttl[64]), (8, 10));
        let d = sum.since(&a);
        assert_eq!((d.packets, d.ttl[64], d.size_buckets[3]), (5, 5, 4));
        // Counters never go below zero (a restarted source of truth).
        assert_eq!(a.since(&sum).packets, 0);
    }
}
