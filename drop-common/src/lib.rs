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
mod observe;
pub mod parse;
mod pcap;
mod sampler;

pub use attribution::*;
pub use blocklist::*;
pub use drops::*;
pub use flood::*;
pub use generator::*;
pub use iface::*;
pub use observe::*;
pub use pcap::*;
pub use sampler::*;

/// Map names, bound once beside their types (each concept's `map_names`)
/// and indexed here so neither side can drift; a unit test in drop-user
/// checks them against the built objects.
pub mod maps {
    pub use crate::attribution::map_names::{DROP_PORTS, DROP_SOURCES};
    pub use crate::drops::map_names::{
        DROP_EVENTS, DROP_LOCATIONS, DROP_SLOTS, DROPS_BY_IFACE, DROPS_BY_REASON, EVENT_SWITCH,
        KFREE_HEALTH, REASON_COUNTS,
    };
    pub use crate::flood::map_names::{SOURCES, SRC_CACHE};
    pub use crate::iface::map_names::{
        IFACE_SLOT_ARRAY, IFACE_SLOTS, IFACE_STATS, PORT_BUCKETS, UDP_SRC_PORTS,
    };
    pub use crate::observe::map_names::{OBSERVE_STASH, XDP_VERDICTS};
    /// Every name here: user space looks each one up.
    pub const ALL: [&str; 19] = [
        REASON_COUNTS,
        DROPS_BY_REASON,
        DROP_SLOTS,
        DROPS_BY_IFACE,
        DROP_EVENTS,
        EVENT_SWITCH,
        DROP_LOCATIONS,
        DROP_SOURCES,
        DROP_PORTS,
        KFREE_HEALTH,
        IFACE_SLOT_ARRAY,
        IFACE_SLOTS,
        IFACE_STATS,
        PORT_BUCKETS,
        UDP_SRC_PORTS,
        SOURCES,
        SRC_CACHE,
        XDP_VERDICTS,
        OBSERVE_STASH,
    ];
}

/// Flood-detection maps (XDP side).
pub mod flood_maps {
    pub use crate::blocklist::map_names::{BLOCK_FILTER, BLOCK_V4, BLOCK_V6};
    pub use crate::flood::map_names::{EPOCH, EPOCH_STATE, HEAVY_PORTS, SRC_SKETCH, TRIGGERS};
    pub use crate::pcap::map_names::SAMPLES;
    /// Every name here: user space looks each one up.
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
    pub const OBSERVE_CONFIG: &str = "OBSERVE_CONFIG";
    /// The production object's globals.
    pub const ALL: [&str; 3] = [KFREE_CONFIG, XDP_CONFIG, OBSERVE_CONFIG];
    /// In the test object (drop-ebpf-test) only.
    pub const GEN_CONFIG: &str = "GEN_CONFIG";
}

/// Program names (the functions' names in the eBPF objects).
pub mod programs {
    /// tp_btf/kfree_skb: typed arguments, direct field loads.
    pub const KFREE_SKB_BTF: &str = "kfree_skb_btf";
    /// The classic skb:kfree_skb tracepoint (offsets from tracefs).
    pub const KFREE_SKB_TP: &str = "kfree_skb_tp";
    /// The XDP observer (and --enforce blocklist), for any watched
    /// interface: finds the interface's slot from the frame's ifindex.
    pub const XDP: &str = "dropscope_xdp";
    /// The same program with the interface slot fixed at build time:
    /// `XDP_SLOT[s]` serves slot `s` without the per-frame ifindex read
    /// and slot lookup (the first interfaces, i.e. nearly every host).
    /// Names fit the kernel's 15 characters.
    pub const XDP_SLOT: [&str; 4] = [
        "dropscope_xdp_0",
        "dropscope_xdp_1",
        "dropscope_xdp_2",
        "dropscope_xdp_3",
    ];

    /// The XDP program serving interface slot `slot`.
    pub fn xdp_for_slot(slot: usize) -> &'static str {
        match XDP_SLOT.get(slot) {
            Some(name) => name,
            None => XDP,
        }
    }
    /// Observe mode: fentry on an XDP program already attached.
    pub const XDP_ENTRY: &str = "dropscope_xdp_entry";
    /// Observe mode: fexit programs, one per observed program; `XDP_EXIT[s]`
    /// counts observed slot `s`.
    pub const XDP_EXIT: [&str; crate::MAX_OBSERVED as usize] = [
        "dropscope_xdp_exit_0",
        "dropscope_xdp_exit_1",
        "dropscope_xdp_exit_2",
        "dropscope_xdp_exit_3",
        "dropscope_xdp_exit_4",
        "dropscope_xdp_exit_5",
        "dropscope_xdp_exit_6",
        "dropscope_xdp_exit_7",
        "dropscope_xdp_exit_8",
        "dropscope_xdp_exit_9",
        "dropscope_xdp_exit_10",
        "dropscope_xdp_exit_11",
        "dropscope_xdp_exit_12",
        "dropscope_xdp_exit_13",
        "dropscope_xdp_exit_14",
        "dropscope_xdp_exit_15",
    ];
    /// The production object's programs (besides `XDP_EXIT`).
    pub const ALL: [&str; 4] = [KFREE_SKB_BTF, KFREE_SKB_TP, XDP, XDP_ENTRY];
    /// In the test object only: the live-frames traffic generator.
    pub const GENERATOR: &str = "dropscope_gen";
    /// In the test object only: the benchmarks' empty XDP floor.
    pub const PASS: &str = "dropscope_pass";
    /// In the test object only: the empty XDP floor plus one read of the
    /// frame's Ethernet type.
    pub const TOUCH: &str = "dropscope_touch";
    /// In the test object only: the benchmarks' empty tp_btf/kfree_skb
    /// floor (the cost of the dispatch alone).
    pub const KFREE_EMPTY: &str = "dropscope_kfree_empty";
}
