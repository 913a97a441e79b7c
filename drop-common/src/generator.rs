//! The test traffic generator's settings (the test-only object).

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
    /// UDP only: destination ports drawn at random from 1024 .. 1024 +
    /// dports (0: keep the frame's), as a flood to random ports does.
    pub dports: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for GenConfig {}
}
