//! Packet samples for the PCAP writer (map: `flood_maps::SAMPLES`).

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

/// The names of the maps this concept owns (the statics' names in the
/// eBPF object); `crate::maps` and `crate::flood_maps` index them all.
pub(crate) mod map_names {
    /// Ring buffer of [`crate::PacketSample`]s (PCAP sampling).
    pub const SAMPLES: &str = "SAMPLES";
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for PacketSample {}
}
