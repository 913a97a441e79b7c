//! Drop attribution: who sent the dropped packets and to which port
//! (maps: `maps::{DROP_SOURCES, DROP_PORTS}`; the sampler's state is in
//! each CPU's `DROP_SLOTS` value, beside what every drop touches).

use crate::sampler::Sampler;

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

/// The names of the maps this concept owns (the statics' names in the
/// eBPF object); `crate::maps` and `crate::flood_maps` index them all.
pub(crate) mod map_names {
    /// LRU per-CPU hash: (reason, source address) -> drops (attribution).
    pub const DROP_SOURCES: &str = "DROP_SOURCES";
    /// LRU per-CPU hash: (reason, protocol, destination port) -> drops.
    pub const DROP_PORTS: &str = "DROP_PORTS";
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for DropSourceKey {}
    unsafe impl aya::Pod for DropPortKey {}
    unsafe impl aya::Pod for AttrState {}
}
