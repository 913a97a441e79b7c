//! The `--enforce` blocklist: LPM trie values and the first-16-bits
//! prefilter (maps: `flood_maps::{BLOCK_V4, BLOCK_V6, BLOCK_FILTER}`).

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

/// The names of the maps this concept owns (the statics' names in the
/// eBPF object); `crate::maps` and `crate::flood_maps` index them all.
pub(crate) mod map_names {
    /// LPM tries of the `--enforce` blocklist.
    pub const BLOCK_V4: &str = "BLOCK_V4";
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// Array of [`crate::BLOCK_FILTER_WORDS`] bitmap words: which first 16
    /// address bits any blocklist prefix covers (IPv4 half, then IPv6), so
    /// most packets skip the trie.
    pub const BLOCK_FILTER: &str = "BLOCK_FILTER";
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for BlockEntry {}
}
