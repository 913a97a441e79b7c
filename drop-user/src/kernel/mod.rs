//! The kernel side from user space: load and attach the programs with
//! settings probed from the running kernel, then read their maps into a
//! [`Snapshot`] each interval, and drain the trigger and sample rings.
//! What is `pub` here is what the integration tests and benchmarks load.

mod batch;
mod load;
mod observe;
mod snapshot;

pub(crate) use load::{DropHook, follow_observed, reattach, xdp_can_copy_packets};
pub use load::{
    EBPF_OBJECT, KfreeChoice, LoadOptions, Probes, TEST_OBJECT, XdpChoice, default_xdp_config,
    load, prepare_xdp,
};
pub(crate) use observe::ObservedProg;
pub(crate) use snapshot::{EpochSummary, Maps, Snapshot, Sources};

/// A user-side copy of a kernel table (sources, drop rows): hashed with
/// foldhash, seeded per process, several times cheaper than SipHash on
/// these small keys.
pub(crate) type Table<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
