//! Process-wide pacing statistics of the zone players, for `paging_bench` and diagnostics:
//! how late each packet tick ran against its absolute schedule, in 1 ms buckets (the last
//! bucket holds everything at or above 63 ms). One relaxed atomic add per tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: usize = 64;

static LATENESS: [AtomicU64; BUCKETS] = [const { AtomicU64::new(0) }; BUCKETS];

pub(crate) fn record_tick_lateness(late: Duration) {
    let ms = usize::try_from(late.as_millis())
        .unwrap_or(usize::MAX)
        .min(BUCKETS - 1);
    LATENESS[ms].fetch_add(1, Ordering::Relaxed);
}

/// Ticks per lateness bucket: index `i` counts ticks that ran `i`..`i+1` ms late.
pub fn tick_lateness_histogram() -> Vec<u64> {
    LATENESS.iter().map(|b| b.load(Ordering::Relaxed)).collect()
}

/// The lateness under which a fraction `p` of ticks ran (upper bucket edge), in ms.
pub fn tick_lateness_percentile(p: f64) -> Option<u64> {
    let h = tick_lateness_histogram();
    let total: u64 = h.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (total as f64 * p).ceil() as u64;
    let mut seen = 0;
    for (i, n) in h.iter().enumerate() {
        seen += n;
        if seen >= want {
            return Some(i as u64 + 1);
        }
    }
    Some(BUCKETS as u64)
}

/// Clears the histogram (between benchmark phases).
pub fn reset() {
    for b in &LATENESS {
        b.store(0, Ordering::Relaxed);
    }
}
