//! Types shared by the eBPF programs (drop-ebpf) and user space (drop-user).
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these
//! into maps and user space reads them back byte for byte. With the `user`
//! feature each type also implements `aya::Pod`.
#![no_std]

/// Map names, shared so neither side can drift.
pub mod parse;

pub mod maps {
    /// Per-CPU array: reason (below MAX_REASONS) -> drops.
    pub const REASON_COUNTS: &str = "REASON_COUNTS";
    /// Per-CPU hash: reason (subsystem reasons, high bits set) -> drops.
    pub const DROPS_BY_REASON: &str = "DROPS_BY_REASON";
    /// Per-CPU hash: (reason, ifindex, netns) -> drops.
    pub const DROPS_BY_IFACE: &str = "DROPS_BY_IFACE";
    /// Ring buffer of [`super::DropEvent`]s, written only while switched on.
    pub const DROP_EVENTS: &str = "DROP_EVENTS";
    /// Array[1]: non-zero switches the drop event stream on.
    pub const EVENT_SWITCH: &str = "EVENT_SWITCH";
    /// Per-CPU hash: (reason, kernel location) -> drops, for NOT_SPECIFIED.
    pub const DROP_LOCATIONS: &str = "DROP_LOCATIONS";
    /// LRU per-CPU hash: (reason, source address) -> drops (attribution).
    pub const DROP_SOURCES: &str = "DROP_SOURCES";
    /// LRU per-CPU hash: (reason, protocol, destination port) -> drops.
    pub const DROP_PORTS: &str = "DROP_PORTS";
    /// Per-CPU array[1]: the attribution sampler and budgets.
    pub const ATTR_STATE: &str = "ATTR_STATE";
    /// Per-CPU array: kfree_skb program health counters (see [`super::KfreeHealth`]).
    pub const KFREE_HEALTH: &str = "KFREE_HEALTH";
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
    /// LRU per-CPU hash: source address -> packets and bytes.
    pub const SOURCES: &str = "SOURCES";
    /// Every name above: user space looks each one up.
    pub const ALL: [&str; 16] = [
        REASON_COUNTS,
        DROPS_BY_REASON,
        DROPS_BY_IFACE,
        DROP_EVENTS,
        EVENT_SWITCH,
        DROP_LOCATIONS,
        DROP_SOURCES,
        DROP_PORTS,
        ATTR_STATE,
        KFREE_HEALTH,
        IFACE_SLOT_ARRAY,
        IFACE_SLOTS,
        IFACE_STATS,
        PORT_BUCKETS,
        UDP_SRC_PORTS,
        SOURCES,
    ];
}

/// Flood-detection maps (XDP side).
pub mod flood_maps {
    /// Array[1]: current epoch; its low bit picks the sketch/state pair in use.
    pub const EPOCH: &str = "EPOCH";
    /// Per-CPU array[2]: count-min sketch of sources, one per epoch parity.
    pub const SRC_SKETCH: &str = "SRC_SKETCH";
    /// Per-CPU array[2]: HyperLogLog registers, budgets, port sketch, triggers.
    pub const EPOCH_STATE: &str = "EPOCH_STATE";
    /// LRU per-CPU hash: destination ports past the promotion threshold.
    pub const HEAVY_PORTS: &str = "HEAVY_PORTS";
    /// Ring buffer of [`super::Trigger`]s.
    pub const TRIGGERS: &str = "TRIGGERS";
    /// Ring buffer of [`super::PacketSample`]s (PCAP sampling).
    pub const SAMPLES: &str = "SAMPLES";
    /// LPM tries of the `--enforce` blocklist.
    pub const BLOCK_V4: &str = "BLOCK_V4";
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// Array of [`super::BLOCK_FILTER_WORDS`] bitmap words: which first 16
    /// address bits any blocklist prefix covers (IPv4 half, then IPv6), so
    /// most packets skip the trie.
    pub const BLOCK_FILTER: &str = "BLOCK_FILTER";
    /// Every name above: user space looks each one up.
    pub const ALL: [&str; 9] = [
        EPOCH,
        SRC_SKETCH,
        EPOCH_STATE,
        HEAVY_PORTS,
        TRIGGERS,
        SAMPLES,
        BLOCK_V4,
        BLOCK_V6,
        BLOCK_FILTER,
    ];
}

/// Global variable names in the eBPF object, set by user space at load time.
pub mod globals {
    pub const KFREE_CONFIG: &str = "KFREE_CONFIG";
    pub const XDP_CONFIG: &str = "XDP_CONFIG";
    /// The production object's globals.
    pub const ALL: [&str; 2] = [KFREE_CONFIG, XDP_CONFIG];
    /// In the test object (drop-ebpf-test) only.
    pub const GEN_CONFIG: &str = "GEN_CONFIG";
}

/// Program names (the functions' names in the eBPF objects).
pub mod programs {
    /// tp_btf/kfree_skb: typed arguments, direct field loads.
    pub const KFREE_SKB_BTF: &str = "kfree_skb_btf";
    /// The classic skb:kfree_skb tracepoint (offsets from tracefs).
    pub const KFREE_SKB_TP: &str = "kfree_skb_tp";
    /// The XDP observer (and --enforce blocklist).
    pub const XDP: &str = "dropscope_xdp";
    /// The production object's programs.
    pub const ALL: [&str; 3] = [KFREE_SKB_BTF, KFREE_SKB_TP, XDP];
    /// In the test object only: the live-frames traffic generator.
    pub const GENERATOR: &str = "dropscope_gen";
    /// In the test object only: the benchmarks' empty XDP floor.
    pub const PASS: &str = "dropscope_pass";
}

/// Count-min sketch geometry: estimates exceed the truth by at most
/// e/WIDTH of the epoch's packets with probability 1 - e^-DEPTH.
pub const SKETCH_DEPTH: usize = 4;
pub const SKETCH_WIDTH: usize = 1024;
/// HyperLogLog registers (standard error 1.04/sqrt(256) = 6.5%).
pub const HLL_REGISTERS: usize = 256;
pub const PORT_SKETCH_DEPTH: usize = 2;
pub const MAX_HEAVY_PORTS: u32 = 4096;
pub const TRIGGER_RING_BYTES: u32 = 1 << 18;

/// Per-epoch, per-CPU source sketch (packets).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SrcSketch {
    pub pkts: [[u32; SKETCH_WIDTH]; SKETCH_DEPTH],
}

/// Per-epoch, per-CPU state: zeroed by user space when an epoch is read.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EpochState {
    pub hll_src: [u8; HLL_REGISTERS],
    pub hll_dport: [u8; HLL_REGISTERS],
    pub port_sketch: [[u32; SKETCH_WIDTH]; PORT_SKETCH_DEPTH],
    /// Sources inserted into the exact table this epoch.
    pub new_sources: u32,
    /// Ports promoted this epoch.
    pub new_ports: u32,
    /// Packets (each sampled packet counts for its gap, see [`Sampler`]).
    pub packets: u32,
    pub syn: u32,
    pub bytes: u64,
    /// Packets that took the full path (== packets while nothing is sampled).
    pub samples: u32,
    pub _pad: u32,
}

/// Thresholds are per epoch and per CPU (user space turns rates into counts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpConfig {
    /// New sources per epoch tracked exactly before flood mode (0: never).
    pub source_budget: u32,
    /// In flood mode, a source joins the exact table at this many packets.
    pub promote_packets: u32,
    pub port_budget: u32,
    pub promote_port_packets: u32,
    /// Trigger counts (0 disables the trigger).
    pub trigger_source: u32,
    pub trigger_port: u32,
    pub trigger_packets: u32,
    pub trigger_syn: u32,
    /// Benchmarks only: replace each IPv4 source with one of this many
    /// random addresses (BPF_PROG_TEST_RUN repeats one frame). 0 in
    /// production, where the verifier prunes the branch (read-only value).
    pub bench_random_sources: u32,
    /// Non-zero with `--enforce`: drop sources found in the blocklist.
    pub enforce: u32,
    /// Send 1 in this many packets to the sample ring (0: off).
    pub sample_every: u32,
    /// Bytes of each sampled packet (at most SAMPLE_SNAP_MAX).
    pub snaplen: u32,
    /// Per CPU and epoch, packets past this many feed the sketches 1 in
    /// about `flood_sample_every` (a power of two; 0 or 1: never sample).
    pub exact_packets: u32,
    /// Mean gap between packets that take the full path once sampling is on.
    pub flood_sample_every: u32,
}

/// Blocklist entries (IPv4 and IPv6 LPM tries, each this big).
pub const MAX_BLOCKS: u32 = 16384;
/// 65 536 bits per family.
pub const BLOCK_FILTER_WORDS: u32 = 2 * 65536 / 64;

/// Value of a blocklist entry. Keys are `{prefix_len: u32, addr}` as the
/// kernel's LPM trie wants them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockEntry {
    /// CLOCK_MONOTONIC ns (bpf_ktime_get_ns) after which the entry no longer
    /// matches; 0 never expires.
    pub expires_ns: u64,
    /// Unix seconds when it was added.
    pub added_unix: u64,
    /// Packets and bytes dropped by this entry (plain adds: two CPUs
    /// may race and lose a hit; the exact count is per interface).
    pub packets: u64,
    pub bytes: u64,
}

/// Largest snap length of a sampled packet.
pub const SAMPLE_SNAP_MAX: usize = 256;
// The XDP program bounds the copy length with a mask.
const _: () = assert!(SAMPLE_SNAP_MAX.is_power_of_two());
pub const SAMPLE_RING_BYTES: u32 = 1 << 20;

/// One sampled packet's first bytes, for the PCAP writer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PacketSample {
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Length on the wire.
    pub len: u32,
    /// Bytes captured in `data`.
    pub caplen: u32,
    pub _pad: u32,
    pub data: [u8; SAMPLE_SNAP_MAX],
}

pub mod trigger_kind {
    pub const SOURCE: u32 = 1;
    pub const PORT: u32 = 2;
    pub const PACKETS: u32 = 3;
    pub const SYN: u32 = 4;
}

/// An in-kernel threshold crossing, sent at once through a ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Trigger {
    pub ts_ns: u64,
    pub kind: u32,
    pub ifindex: u32,
    pub epoch: u32,
    /// Destination port (PORT), with protocol in the high 16 bits.
    pub port: u32,
    pub value: u64,
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 7],
}

/// Key of the heavy destination port table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub ifindex: u32,
    pub proto: u16,
    pub port: u16,
}

/// 32-bit mix of an address (murmur3 finalizer over folded words; an
/// IPv4 address is one word).
#[inline(always)]
pub fn hash_addr(addr: &[u8; 16], family: u8) -> u32 {
    let word = |i: usize| {
        u32::from_le_bytes([
            addr[i * 4],
            addr[i * 4 + 1],
            addr[i * 4 + 2],
            addr[i * 4 + 3],
        ])
    };
    let mut h: u32 = 0x9747_b28c ^ family as u32;
    let words = if family == 4 { 1 } else { 4 };
    let mut i = 0;
    while i < words {
        h ^= word(i)
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        i += 1;
    }
    fmix(h)
}

#[inline(always)]
pub fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Column of row `row` for hash `h` (double hashing).
#[inline(always)]
pub fn sketch_index(h: u32, row: usize) -> usize {
    let h2 = fmix(h ^ 0x5bd1_e995) | 1;
    (h.wrapping_add((row as u32).wrapping_mul(h2)) as usize) & (SKETCH_WIDTH - 1)
}

/// HyperLogLog (register, rank) for hash `h`.
#[inline(always)]
pub fn hll_slot(h: u32) -> (usize, u8) {
    let reg = (h >> 24) as usize;
    let rest = (h << 8) | 0x80;
    (reg, rest.leading_zeros() as u8 + 1)
}

/// Upper bound of distinct reasons tracked (the kernel has about 120).
pub const MAX_REASONS: u32 = 1024;
/// Upper bound of (reason, interface, netns) rows.
pub const MAX_DROP_ROWS: u32 = 8192;
/// Upper bound of (reason, location) rows.
pub const MAX_LOCATIONS: u32 = 4096;
/// Drop event ring size in bytes (a power of two; 32 bytes an event).
pub const DROP_EVENT_RING_BYTES: u32 = 1 << 22;
/// Interfaces with an ifindex below this find their slot by array lookup.
pub const SLOT_ARRAY_IFINDEXES: u32 = 4096;
/// Upper bound of watched interfaces.
pub const MAX_IFACES: u32 = 64;
/// Upper bound of tracked source addresses (LRU: least recently seen go first).
pub const MAX_SOURCES: u32 = 65536;

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

/// Key of the per-(reason, interface) drop map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// Raw `enum skb_drop_reason` value, subsystem bits included.
    pub reason: u32,
    /// Ingress ifindex (`skb_iif`), else the device's ifindex, else 0.
    pub ifindex: u32,
    /// Inode number of the device's (or socket's) network namespace, 0 if unknown.
    pub netns: u32,
    pub _pad: u32,
}

/// Test traffic generator settings (the `dropscope_gen` XDP program run
/// through BPF_PROG_TEST_RUN live frames): it rewrites each frame's IPv4
/// source and TTL, then transmits it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GenConfig {
    /// Sources drawn at random from base .. base + sources (0 or 1: keep).
    pub sources: u32,
    /// First source address, host byte order.
    pub base: u32,
    /// Non-zero: random TTL per frame, as spoofing tools do.
    pub spoof_ttl: u32,
    /// Redirect target; 0 transmits out of the ingress interface (XDP_TX).
    pub ifindex: u32,
}

/// One drop, as streamed for loss-pattern analysis (burst vs random).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropEvent {
    /// bpf_ktime_get_ns().
    pub ts_ns: u64,
    /// Kernel address that freed the skb.
    pub location: u64,
    pub reason: u32,
    pub ifindex: u32,
    pub netns: u32,
    pub _pad: u32,
}

/// Key of the per-location map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocationKey {
    pub location: u64,
    pub reason: u32,
    /// Where the packet came in, as in [`DropKey`]: on kernels without
    /// drop reasons (before 5.17) the location is all there is, and it is
    /// counted per interface.
    pub ifindex: u32,
    pub netns: u32,
    pub _pad: u32,
}

/// Offsets and constants the kfree_skb programs need, all read from the
/// running kernel (BTF, tracefs) by user space: nothing is hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KfreeConfig {
    /// `enum skb_drop_reason` values that are not drops.
    pub reason_not_dropped_yet: u32,
    pub reason_consumed: u32,
    /// Drops with this reason are also counted per kernel location.
    pub reason_not_specified: u32,
    /// Bit 0: the sk_buff offsets below are valid.
    pub flags: u32,
    /// Only count drops in this network namespace (inode); 0 counts every namespace.
    pub netns_filter: u32,
    pub skb_dev: u32,
    pub skb_iif: u32,
    pub skb_sk: u32,
    pub dev_ifindex: u32,
    /// Offset of `net_device.nd_net.net`.
    pub dev_net: u32,
    /// Offset of `sock.__sk_common.skc_net.net`.
    pub sk_net: u32,
    /// Offset of `net.ns.inum`.
    pub net_inum: u32,
    /// Classic tracepoint record layout (from tracefs `format`).
    pub tp_skbaddr: u32,
    pub tp_location: u32,
    pub tp_reason: u32,
    /// 0: the record has no reason (before 5.17); every event is a drop,
    /// counted as `reason_not_specified`, by location.
    pub tp_reason_size: u32,
    /// sk_buff `head` (pointer) and the u16 header offsets from it, and
    /// `protocol` (big-endian ethertype): where the dropped packet's
    /// addresses and ports are.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_protocol: u32,
    /// Attribution: per CPU and epoch, drops past this many are attributed
    /// 1 in about `attr_every` (a power of two, weighted by the gap; 0 or
    /// 1: never sample).
    pub attr_exact: u32,
    pub attr_every: u32,
    /// New (reason, source) and (reason, port) rows per CPU and epoch.
    pub attr_source_budget: u32,
    pub attr_port_budget: u32,
}

pub const KFREE_FLAG_SKB_OFFSETS: u32 = 1;
/// The packet-header offsets in [`KfreeConfig`] are valid.
pub const KFREE_FLAG_PKT_OFFSETS: u32 = 2;

/// Bounds of the drop-attribution tables.
pub const MAX_DROP_SOURCES: u32 = 4096;
pub const MAX_DROP_PORTS: u32 = 4096;

/// Key of `DROP_SOURCES`: an IPv4 address is stored in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropSourceKey {
    pub reason: u32,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

/// Key of `DROP_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropPortKey {
    pub reason: u32,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub _pad: u8,
    pub port: u16,
}

/// Per-CPU attribution state; reset by the program when the epoch moves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrState {
    pub sampler: Sampler,
    pub epoch: u32,
    /// Drops seen this epoch (weighted).
    pub drops: u32,
    pub new_sources: u32,
    pub new_ports: u32,
}

/// Slots of the `KFREE_HEALTH` array.
pub mod kfree_health {
    /// Drop events counted.
    pub const EVENTS: u32 = 0;
    /// Events whose row could not be inserted because a map was full.
    pub const MAP_FULL: u32 = 1;
    /// Kernel reads that failed.
    pub const READ_ERRORS: u32 = 2;
    /// Events dropped by the namespace filter.
    pub const OTHER_NETNS: u32 = 3;
    /// Drop events the event ring had no room for.
    pub const EVENTS_LOST: u32 = 4;
    /// Drops whose source or port had no row (budget spent or table full).
    pub const UNATTRIBUTED: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// Packet-shape counters of one watched interface, as seen by XDP.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IfaceStats {
    pub packets: u64,
    pub bytes: u64,
    pub proto_packets: [u64; proto::COUNT],
    pub proto_bytes: [u64; proto::COUNT],
    pub ipv4: u64,
    pub ipv6: u64,
    /// Frames with at least one 802.1Q/802.1ad tag.
    pub vlan: u64,
    pub tcp_syn: u64,
    pub tcp_syn_ack: u64,
    /// Pure ACKs: ACK set, no SYN, FIN or RST, and no payload.
    pub tcp_ack_only: u64,
    pub tcp_rst: u64,
    pub tcp_fin: u64,
    /// IPv4 with MF or offset set, IPv6 with a fragment header.
    pub fragments: u64,
    pub size_buckets: [u64; SIZE_BUCKETS],
    /// IPv4 TTL / IPv6 hop limit histogram.
    pub ttl: [u64; 256],
    /// Dropped by the `--enforce` blocklist.
    pub blocked: u64,
    pub blocked_bytes: u64,
    /// The XDP program's sampling state for this CPU (not a counter).
    pub sampler: Sampler,
}

/// Which packets take the per-source/per-port path once a CPU is busy.
/// Gaps are random (so no sender can time its packets around them) and each
/// sampled packet counts for the gap that ended at it: sums stay unbiased.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Sampler {
    /// Packets until the next sample (0 or 1: this one).
    pub countdown: u32,
    /// Length of the gap that the next sample ends: its weight.
    pub gap: u32,
    /// xorshift32 state (0: not seeded yet).
    pub rng: u32,
    pub _pad: u32,
}

impl Sampler {
    /// Some(weight) when this packet takes the full path.
    #[inline(always)]
    pub fn take(&mut self) -> Option<u32> {
        if self.countdown > 1 {
            self.countdown -= 1;
            None
        } else {
            Some(if self.gap > 1 { self.gap } else { 1 })
        }
    }

    /// Draws the gap to the next full-path packet: 1 unless `busy`, then
    /// uniform in 1..=2*every (`every` a power of two, mean about `every`).
    #[inline(always)]
    pub fn next(&mut self, busy: bool, every: u32, seed: impl FnOnce() -> u32) {
        let gap = if busy && every > 1 {
            let mut x = self.rng;
            if x == 0 {
                x = seed() | 1;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.rng = x;
            1 + (x & (2 * every - 1))
        } else {
            1
        };
        self.gap = gap;
        self.countdown = gap;
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

/// Key of the per-source map: an IPv4 address is stored in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceStats {
    pub packets: u64,
    pub bytes: u64,
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

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for DropEvent {}
    unsafe impl aya::Pod for LocationKey {}
    unsafe impl aya::Pod for KfreeConfig {}
    unsafe impl aya::Pod for IfaceStats {}
    unsafe impl aya::Pod for SourceKey {}
    unsafe impl aya::Pod for SourceStats {}
    unsafe impl aya::Pod for SrcSketch {}
    unsafe impl aya::Pod for GenConfig {}
    unsafe impl aya::Pod for EpochState {}
    unsafe impl aya::Pod for XdpConfig {}
    unsafe impl aya::Pod for Trigger {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for BlockEntry {}
    unsafe impl aya::Pod for PacketSample {}
    unsafe impl aya::Pod for DropSourceKey {}
    unsafe impl aya::Pod for DropPortKey {}
    unsafe impl aya::Pod for AttrState {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
