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

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for BlockEntry {}
}
