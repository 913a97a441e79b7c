//! Flood accounting in XDP: per-epoch sketches and HyperLogLog
//! registers, the exact per-source table, heavy destination ports, and
//! in-kernel threshold triggers (maps: `flood_maps::{EPOCH, SRC_SKETCH,
//! EPOCH_STATE, HEAVY_PORTS, TRIGGERS}`, `maps::SOURCES`).

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

/// 32-bit mix of an address's words (murmur3 finalizer; an IPv4
/// address is one word).
#[inline(always)]
pub fn hash_addr(words: &[u32; 4], family: u8) -> u32 {
    let mut h: u32 = 0x9747_b28c ^ family as u32;
    let n = if family == 4 { 1 } else { 4 };
    let mut i = 0;
    while i < n {
        h ^= words[i]
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

/// Upper bound of tracked source addresses (LRU: least recently seen go first).
pub const MAX_SOURCES: u32 = 65536;

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

impl SourceKey {
    /// The key of `addr` on `ifindex`, built in words: byte by byte, the
    /// eBPF build copies (and spills) every byte.
    #[inline(always)]
    pub fn new(addr: &crate::parse::Addr, ifindex: u32) -> Self {
        let w = addr.words;
        let tail = u32::from_ne_bytes([addr.family, 0, 0, 0]);
        // SAFETY: SourceKey is repr(C), 24 bytes at alignment 4: the
        // address's 16 bytes, ifindex, then family and its 3 pad bytes,
        // exactly the six words' bytes in memory order.
        unsafe {
            core::mem::transmute::<[u32; 6], SourceKey>([w[0], w[1], w[2], w[3], ifindex, tail])
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceStats {
    pub packets: u64,
    pub bytes: u64,
}

/// Slots of the per-CPU cache in front of [`map_names::SOURCES`].
pub const SRC_CACHE_SLOTS: usize = 64;
/// A cached source's counts go to the table once they reach this many
/// packets: what a read of table and cache together can miss while a
/// flush races it (the next read has it).
pub const SRC_CACHE_FLUSH: u64 = 1024;

/// One cached source: its key as three words (compared in three loads),
/// and the packets and bytes not yet added to the source table. All zero
/// is empty: a real key has family 4 or 6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SrcCacheSlot {
    pub key: [u64; 3],
    pub pending: SourceStats,
}

impl SrcCacheSlot {
    /// The key as stored.
    #[inline(always)]
    pub fn words(key: &SourceKey) -> [u64; 3] {
        // SAFETY: SourceKey is repr(C), 24 bytes with no padding the
        // compiler owns (`_pad` is a field), so every byte is initialized.
        unsafe { core::mem::transmute::<SourceKey, [u64; 3]>(*key) }
    }

    /// The cached source's key, or None when the slot is empty.
    #[inline(always)]
    pub fn source(&self) -> Option<SourceKey> {
        if self.key[0] | self.key[1] | self.key[2] == 0 {
            return None;
        }
        // SAFETY: the inverse of `words`; any 24 bytes are a SourceKey.
        Some(unsafe { core::mem::transmute::<[u64; 3], SourceKey>(self.key) })
    }
}

/// Per-CPU, direct-mapped by the source's hash: heavy sources count here
/// and reach the (hashed, costlier) source table once per
/// [`SRC_CACHE_FLUSH`] packets. User space adds the pending counts.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SrcCache {
    pub slots: [SrcCacheSlot; SRC_CACHE_SLOTS],
}

/// The names of the maps this concept owns (the statics' names in the
/// eBPF object); `crate::maps` and `crate::flood_maps` index them all.
pub(crate) mod map_names {
    /// LRU per-CPU hash: source address -> packets and bytes.
    pub const SOURCES: &str = "SOURCES";
    /// Per-CPU array[1]: the [`crate::SrcCache`] in front of SOURCES.
    pub const SRC_CACHE: &str = "SRC_CACHE";
    /// Array[1]: current epoch; its low bit picks the sketch/state pair in use.
    pub const EPOCH: &str = "EPOCH";
    /// Per-CPU array[2]: count-min sketch of sources, one per epoch parity.
    pub const SRC_SKETCH: &str = "SRC_SKETCH";
    /// Per-CPU array[2]: HyperLogLog registers, budgets, port sketch, triggers.
    pub const EPOCH_STATE: &str = "EPOCH_STATE";
    /// LRU per-CPU hash: destination ports past the promotion threshold.
    pub const HEAVY_PORTS: &str = "HEAVY_PORTS";
    /// Ring buffer of [`crate::Trigger`]s.
    pub const TRIGGERS: &str = "TRIGGERS";
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for SrcSketch {}
    unsafe impl aya::Pod for EpochState {}
    unsafe impl aya::Pod for XdpConfig {}
    unsafe impl aya::Pod for Trigger {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for SourceKey {}
    unsafe impl aya::Pod for SourceStats {}
    unsafe impl aya::Pod for SrcCache {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::source_at;

    /// A frame's source read as words gives the same key, byte for byte, as
    /// the address copied field by field (what user space reads back).
    #[test]
    fn source_key_from_words_is_the_bytes_key() {
        let mut frame = [0u8; 64];
        for (i, b) in frame.iter_mut().enumerate() {
            *b = 0xa0 ^ i as u8;
        }
        for (family, n) in [(4u8, 4usize), (6, 16)] {
            let addr = source_at(&frame[..], family, 22).get().unwrap();
            let mut bytes = [0u8; 16];
            bytes[..n].copy_from_slice(&frame[22..22 + n]);
            assert_eq!(addr.bytes(), bytes);
            assert_eq!(
                SourceKey::new(&addr, 7),
                SourceKey {
                    addr: bytes,
                    ifindex: 7,
                    family,
                    _pad: [0; 3],
                }
            );
            // Cut one byte short: no address.
            assert!(source_at(&frame[..22 + n - 1], family, 22).get().is_none());
        }
    }
}
