//! What `top` remembers of the reports it showed: drops/s per drop row and
//! packets/s per attack, one point per report, for the chart, the row
//! sparklines and the attack panel. Bounded in time and in points.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::report::Report;

/// How far back the chart looks.
pub(super) const WINDOW: Duration = Duration::from_secs(300);
/// At most this many points (a 100 ms interval fills five minutes).
const MAX_POINTS: usize = 3000;

/// A drop row as the table shows it: its label and interface.
pub(super) type RowKey = (String, String);

pub(super) struct History {
    start: Instant,
    /// Seconds since `start` of each point; every series is aligned with it.
    times: VecDeque<f64>,
    rows: HashMap<RowKey, VecDeque<f64>>,
    attacks: HashMap<u64, VecDeque<f64>>,
}

impl History {
    pub(super) fn new() -> Self {
        History {
            start: Instant::now(),
            times: VecDeque::new(),
            rows: HashMap::new(),
            attacks: HashMap::new(),
        }
    }

    /// Adds the report as the newest point.
    pub(super) fn push(&mut self, r: &Report) {
        self.push_at(r, self.start.elapsed().as_secs_f64());
    }

    fn push_at(&mut self, r: &Report, t: f64) {
        self.times.push_back(t);
        let n = self.times.len();
        let rows = r
            .drops
            .iter()
            .map(|d| ((d.label(), d.iface.clone()), d.rate));
        extend(&mut self.rows, rows, n);
        let attacks = r.attacks.iter().map(|a| (a.id, a.pps));
        extend(&mut self.attacks, attacks, n);
        while self.times.len() > MAX_POINTS
            || self
                .times
                .front()
                .is_some_and(|&t0| t - t0 > WINDOW.as_secs_f64())
        {
            self.times.pop_front();
            for s in self.rows.values_mut().chain(self.attacks.values_mut()) {
                s.pop_front();
            }
        }
        // A series that is all zeros has left the window.
        self.rows.retain(|_, s| s.iter().any(|&v| v > 0.0));
        self.attacks.retain(|_, s| s.iter().any(|&v| v > 0.0));
    }

    /// (seconds before the newest point, value) of a row, oldest first.
    pub(super) fn row_points(&self, key: &RowKey) -> Vec<(f64, f64)> {
        let now = self.times.back().copied().unwrap_or(0.0);
        match self.rows.get(key) {
            Some(s) => self
                .times
                .iter()
                .zip(s)
                .map(|(t, v)| (t - now, *v))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Seconds the history spans (for the chart's axis).
    pub(super) fn span(&self) -> f64 {
        match (self.times.front(), self.times.back()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }

    pub(super) fn row_spark(&self, key: &RowKey, width: usize) -> String {
        self.rows
            .get(key)
            .map(|s| spark(s, width))
            .unwrap_or_default()
    }

    pub(super) fn attack_spark(&self, id: u64, width: usize) -> String {
        self.attacks
            .get(&id)
            .map(|s| spark(s, width))
            .unwrap_or_default()
    }
}

/// Appends this point's values: a series missing from the report gets 0,
/// a new one is padded with zeros before it.
fn extend<K: std::hash::Hash + Eq>(
    series: &mut HashMap<K, VecDeque<f64>>,
    now: impl Iterator<Item = (K, f64)>,
    n: usize,
) {
    for (k, v) in now {
        let s = series
            .entry(k)
            .or_insert_with(|| VecDeque::from(vec![0.0; n - 1]));
        // Two rows of the same key in one report (not expected) add up.
        if s.len() == n {
            *s.back_mut().expect("n >= 1") += v;
        } else {
            s.push_back(v);
        }
    }
    for s in series.values_mut() {
        if s.len() < n {
            s.push_back(0.0);
        }
    }
}

/// The last `width` points as block characters, scaled to their own
/// maximum; zero is a blank.
pub(super) fn spark(s: &VecDeque<f64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail: Vec<f64> = s
        .iter()
        .skip(s.len().saturating_sub(width))
        .copied()
        .collect();
    let max = tail.iter().copied().fold(0.0, f64::max);
    let mut out: String = std::iter::repeat_n(' ', width - tail.len()).collect();
    for v in tail {
        out.push(if v <= 0.0 || max <= 0.0 {
            ' '
        } else {
            BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparks_scale_to_their_own_maximum() {
        let s: VecDeque<f64> = [0.0, 1.0, 2.0, 4.0, 8.0].into();
        assert_eq!(spark(&s, 5), " ▂▃▅█");
        assert_eq!(spark(&s, 7), "   ▂▃▅█");
        assert_eq!(spark(&s, 2), "▅█");
        assert_eq!(spark(&VecDeque::new(), 3), "   ");
    }
}
