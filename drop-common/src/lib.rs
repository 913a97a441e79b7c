//! Types shared by the eBPF programs (drop-ebpf) and user space (drop-user).
//!
//! Everything here is `#[repr(C)]` and plain old data: the kernel writes these
//! into maps and user space reads them back byte for byte. With the `user`
//! feature each type also implements `aya::Pod`. One file per concept:
//! `drops`, `attribution`, `iface`, `flood`, `sampler`, `blocklist`, `pcap`,
//! `generator` (test-only), and `parse`, the frame parser both sides run.
#![no_std]

mod attribution;
mod blocklist;
mod drops;
mod flood;
mod generator;
mod iface;
pub mod parse;
mod pcap;
mod sampler;

pub use attribution::*;
pub use blocklist::*;
pub use drops::*;
pub use flood::*;
pub use generator::*;
pub use iface::*;
pub use pcap::*;
pub use sampler::*;

/// Map names, bound once so neither side can drift (each concept's file
/// says which it owns); a unit test in drop-user checks them against the
/// built objects.
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
