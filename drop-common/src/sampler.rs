//! The sampler that keeps per-packet cost flat under floods.

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
