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

/// Packet-shape counters of one watched interface, as seen by XDP.
///
/// The field order is the hot path's: what every frame touches comes
/// first and together (the sampler and the scalar counters fill the first
/// cache line; a UDP or TCP frame's protocol and size counters the next
/// two), so a frame costs four cache lines of this value, not six, when
/// the stack between two frames has evicted them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IfaceStats {
    /// The XDP program's sampling state for this CPU (not a counter).
    pub sampler: Sampler,
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
            sampler: Sampler::default(),
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

    /// Counts one parsed frame of `len` bytes: the XDP program's hot path,
    /// and the host's oracle in tests.
    #[inline(always)]
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
    /// Per-CPU array indexed by slot: packet-shape counters per interface.
    pub const IFACE_STATS: &str = "IFACE_STATS";
    /// Array: UDP port -> bucket (written by user space).
    pub const PORT_BUCKETS: &str = "PORT_BUCKETS";
    /// Per-CPU array indexed by slot * UDP_PORT_BUCKETS + bucket.
    pub const UDP_SRC_PORTS: &str = "UDP_SRC_PORTS";
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for IfaceStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_touches_the_first_three_cache_lines_and_one_ttl() {
        use core::mem::offset_of;
        // Sampler and scalar counters: the first line.
        assert!(offset_of!(IfaceStats, fragments) + 8 <= 64);
        // A UDP or TCP frame's protocol counters and size bucket: the next two.
        assert!(offset_of!(IfaceStats, proto_packets) >= 64);
        assert!(offset_of!(IfaceStats, size_buckets) + 8 <= 192);
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
