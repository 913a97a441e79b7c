//! Loss patterns: are a reason's drops random (isolated) or bursty
//! (clustered)? Judged from per-drop kernel timestamps.
//!
//! Two views of the same timestamps:
//! * runs: drops closer than `gap` to the previous one form a burst; burst
//!   lengths and the gaps between bursts go into HDR histograms;
//! * dispersion: drops counted in fine bins over the whole window. A random
//!   (Poisson) process has variance/mean (the Fano factor) near 1; clusters
//!   push it far above, whatever the average rate.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::taxonomy::PatternVerdict;

/// Drops further apart than this start a new burst.
pub(crate) const BURST_GAP_NS: u64 = 1_000_000;
/// Bin width for the dispersion test.
pub(crate) const BIN_NS: u64 = 1_000_000;
/// Timestamps kept per reason (about 800 KiB at most for each).
pub(crate) const MAX_EVENTS_PER_REASON: usize = 100_000;

#[derive(Default)]
pub(crate) struct PatternCollector {
    events: BTreeMap<u32, Vec<u64>>,
    pub truncated: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Pattern {
    #[serde(rename = "reason_code")]
    pub reason: u32,
    pub drops: u64,
    pub bursts: u64,
    /// Share of drops that belong to a burst of two or more.
    pub share_in_bursts: f64,
    pub burst_len_p50: u64,
    pub burst_len_p99: u64,
    pub burst_len_max: u64,
    /// Gap between bursts (or isolated drops), microseconds.
    pub gap_us_p50: u64,
    pub gap_us_p99: u64,
    /// Variance / mean of drops per 1 ms bin; about 1 for random loss.
    pub fano: f64,
    /// "bursty", "random", "mixed", or "too-few".
    pub verdict: PatternVerdict,
}

impl PatternCollector {
    pub(crate) fn add(&mut self, reason: u32, ts_ns: u64) {
        let v = self.events.entry(reason).or_default();
        if v.len() < MAX_EVENTS_PER_REASON {
            v.push(ts_ns);
        } else {
            self.truncated += 1;
        }
    }

    /// Patterns over the window [start_ns, end_ns] (monotonic clock).
    pub(crate) fn analyse(&self, start_ns: u64, end_ns: u64) -> Vec<Pattern> {
        self.events
            .iter()
            .map(|(r, ts)| analyse(*r, ts, start_ns, end_ns))
            .collect()
    }
}

pub(crate) fn analyse(reason: u32, ts: &[u64], start_ns: u64, end_ns: u64) -> Pattern {
    let mut ts = ts.to_vec();
    ts.sort_unstable();
    let mut lens = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram bounds");
    let mut gaps =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
    let (mut bursts, mut in_bursts, mut run) = (0u64, 0u64, 0u64);
    let mut close_run = |run: u64, bursts: &mut u64, in_bursts: &mut u64| {
        if run >= 2 {
            *bursts += 1;
            *in_bursts += run;
            let _ = lens.record(run);
        }
    };
    for (i, t) in ts.iter().enumerate() {
        if i > 0 {
            let gap = t - ts[i - 1];
            if gap > BURST_GAP_NS {
                close_run(run, &mut bursts, &mut in_bursts);
                run = 0;
                let _ = gaps.record((gap / 1000).max(1));
            }
        }
        run += 1;
    }
    close_run(run, &mut bursts, &mut in_bursts);

    let drops = ts.len() as u64;
    let fano = fano_factor(&ts, start_ns, end_ns.max(start_ns + BIN_NS));
    let share = if drops == 0 {
        0.0
    } else {
        in_bursts as f64 / drops as f64
    };
    let verdict = if drops < 10 {
        PatternVerdict::TooFew
    } else if fano >= 3.0 && share >= 0.5 {
        PatternVerdict::Bursty
    } else if fano < 2.0 {
        PatternVerdict::Random
    } else {
        PatternVerdict::Mixed
    };
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    Pattern {
        reason,
        drops,
        bursts,
        share_in_bursts: share,
        burst_len_p50: q(&lens, 0.5),
        burst_len_p99: q(&lens, 0.99),
        burst_len_max: if lens.is_empty() { 0 } else { lens.max() },
        gap_us_p50: q(&gaps, 0.5),
        gap_us_p99: q(&gaps, 0.99),
        fano,
        verdict,
    }
}

/// Variance/mean of counts per BIN_NS bin over [start, end].
fn fano_factor(sorted: &[u64], start: u64, end: u64) -> f64 {
    let bins = (end.saturating_sub(start) / BIN_NS).max(1) as usize;
    let mut counts: BTreeMap<usize, u64> = BTreeMap::new();
    for t in sorted {
        if *t < start {
            continue;
        }
        let b = ((t - start) / BIN_NS) as usize;
        *counts.entry(b.min(bins - 1)).or_default() += 1;
    }
    let n = bins as f64;
    let sum: f64 = counts.values().map(|c| *c as f64).sum();
    let mean = sum / n;
    if mean == 0.0 {
        return 0.0;
    }
    let sq: f64 = counts.values().map(|c| (*c as f64).powi(2)).sum();
    let var = sq / n - mean * mean;
    var / mean
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: deterministic pseudo-random numbers for the ground truth.
    fn rng(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 1_000_000) as f64 / 1_000_000.0
    }

    #[test]
    fn poisson_drops_are_random() {
        let mut seed = 0x9e3779b97f4a7c15;
        let mut t = 0u64;
        let mut ts = Vec::new();
        // Mean gap 20 ms for 10 s.
        while t < 10_000_000_000 {
            t += (-(1.0 - rng(&mut seed)).ln() * 20e6) as u64 + 1;
            ts.push(t);
        }
        let p = analyse(3, &ts, 0, 10_000_000_000);
        assert_eq!(p.verdict, "random", "{p:?}");
        assert!(p.fano < 1.5, "{p:?}");
    }

    #[test]
    fn clustered_drops_are_bursty() {
        let mut ts = Vec::new();
        // 40 drops 10 us apart every 200 ms, for 10 s.
        for b in 0..50u64 {
            for i in 0..40u64 {
                ts.push(b * 200_000_000 + i * 10_000);
            }
        }
        let p = analyse(3, &ts, 0, 10_000_000_000);
        assert_eq!(p.verdict, "bursty", "{p:?}");
        assert_eq!(p.bursts, 50);
        assert_eq!(p.burst_len_p50, 40);
        assert!((p.share_in_bursts - 1.0).abs() < 1e-9);
        assert!((p.gap_us_p50 as i64 - 199_610).abs() < 500, "{p:?}");
    }

    #[test]
    fn few_drops_get_no_verdict() {
        assert_eq!(analyse(3, &[1, 2, 3], 0, 1_000_000_000).verdict, "too-few");
    }
}
