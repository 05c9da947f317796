//! Mergeable aggregates of one (window, group): counts, a log-bucketed
//! histogram for percentiles, and a bounded count map for the top values.
//!
//! - **Histogram.** Value `v > 0` goes to bucket `ceil(ln v / ln γ)` with
//!   `γ = 1.02`; a bucket's representative `2γ^i / (γ + 1)` is within 1 % of
//!   every value in it, so a percentile read from the merged buckets is within
//!   1 % of the exact one (clamped to the exact min and max). Zero and negative
//!   values share one bucket, read as 0. Merging two histograms adds their
//!   buckets: a chunk's partial aggregate merges into the stored row exactly.
//! - **Top values.** A count map of at most `keep` values (default ten times
//!   `n`, at least 100). When a new value would exceed it, the values with the
//!   smallest counts are dropped down to `keep`. The counts kept are exact
//!   unless the value was dropped once and came back (it then restarts from
//!   its new count); with skewed traffic (a few hot paths, a long tail) the top
//!   `n` are those of an exact count. The `top` column lists the `n` largest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The histogram's bucket growth factor: 1 % relative error.
const GAMMA: f64 = 1.02;

/// The aggregate of one (window, group), stored as JSON in the `state` column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    /// Items.
    pub count: u64,
    /// Items that matched `error_when`.
    pub errors: u64,
    /// Per `count_when` name, items that matched it.
    #[serde(default)]
    pub flags: BTreeMap<String, u64>,
    /// Items with a numeric value.
    pub n: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
    /// Histogram bucket → items (`i32::MIN`: zero and below).
    #[serde(default)]
    pub hist: BTreeMap<i32, u64>,
    /// Bounded count map of the `top` field's values.
    #[serde(default)]
    pub top: BTreeMap<String, u64>,
}

fn bucket(v: f64) -> i32 {
    if v <= 0.0 || !v.is_finite() {
        return i32::MIN;
    }
    (v.ln() / GAMMA.ln()).ceil() as i32
}

fn representative(b: i32) -> f64 {
    if b == i32::MIN {
        return 0.0;
    }
    2.0 * GAMMA.powi(b) / (GAMMA + 1.0)
}

impl Agg {
    /// Adds one value.
    pub fn add_value(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
        *self.hist.entry(bucket(v)).or_default() += 1;
    }

    /// Counts one occurrence of a top value, keeping at most `keep` values.
    pub fn add_top(&mut self, value: &str, keep: usize) {
        *self.top.entry(value.to_owned()).or_default() += 1;
        bound(&mut self.top, keep);
    }

    /// Merges `other` into this one.
    pub fn merge(&mut self, other: &Agg, keep: usize) {
        self.count += other.count;
        self.errors += other.errors;
        for (k, v) in &other.flags {
            *self.flags.entry(k.clone()).or_default() += v;
        }
        self.n += other.n;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (b, c) in &other.hist {
            *self.hist.entry(*b).or_default() += c;
        }
        for (v, c) in &other.top {
            *self.top.entry(v.clone()).or_default() += c;
        }
        bound(&mut self.top, keep);
    }

    /// The `q` quantile (0 to 1) of the values, within 1 % (`None` without
    /// values).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        // The rank of the nearest-rank definition: the smallest value with at
        // least q·n values at or below it.
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (b, c) in &self.hist {
            seen += c;
            if seen >= rank {
                let v = representative(*b);
                return Some(v.clamp(self.min.unwrap_or(v), self.max.unwrap_or(v)));
            }
        }
        self.max
    }

    /// The mean value.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The `n` most frequent top values, most frequent first (ties by value).
    pub fn top_n(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.top.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// Drops the least counted values down to `keep`.
fn bound(top: &mut BTreeMap<String, u64>, keep: usize) {
    if top.len() <= keep {
        return;
    }
    let mut counts: Vec<u64> = top.values().copied().collect();
    counts.sort_unstable();
    // Drop everything at or below the count that leaves at most `keep`.
    let cut = counts[top.len() - keep - 1];
    top.retain(|_, c| *c > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    #[test]
    fn percentiles_are_within_one_percent_and_merge_exactly() {
        let values: Vec<f64> = (1..=5000).map(|i| (i as f64 * 7.3) % 997.0 + 0.5).collect();
        let mut whole = Agg::default();
        let mut parts = [Agg::default(), Agg::default(), Agg::default()];
        for (i, v) in values.iter().enumerate() {
            whole.add_value(*v);
            parts[i % 3].add_value(*v);
        }
        let mut merged = Agg::default();
        for p in &parts {
            merged.merge(p, 100);
        }
        assert_eq!(merged, whole);
        for q in [0.5, 0.95, 0.99, 1.0, 0.0001] {
            let want = exact(&mut values.clone(), q);
            let got = whole.quantile(q).unwrap();
            assert!((got - want).abs() <= want * 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(Agg::default().quantile(0.5), None);
        let json = serde_json::to_string(&whole).unwrap();
        assert_eq!(serde_json::from_str::<Agg>(&json).unwrap(), whole);
    }

    #[test]
    fn the_top_map_stays_bounded_and_keeps_the_heavy_values() {
        let mut a = Agg::default();
        for i in 0..10_000u32 {
            let v = if i.is_multiple_of(2) {
                format!("/hot{}", i % 6)
            } else {
                format!("/tail{i}")
            };
            a.add_top(&v, 50);
        }
        assert!(a.top.len() <= 50);
        let top = a.top_n(3);
        assert_eq!(top[0], ("/hot0".to_owned(), 1667));
        assert_eq!(top.len(), 3);
    }
}
