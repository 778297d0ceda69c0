//! Live figures per route and backend over the last minute: one-second slots holding request and
//! error counts and a log-scale latency histogram, cheap enough to record on every request. The
//! admin API reads rates, error rates, percentiles and sparklines from them; auto-rollback its SLOs.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Seconds kept.
pub const SLOTS: usize = 64;
const BUCKETS: usize = 64;
/// Upper bound of bucket 0, in milliseconds; each next bucket is `GROWTH` times wider.
const FIRST_MS: f64 = 0.1;
const GROWTH: f64 = 1.25;

/// The current second since the epoch.
pub fn now_sec() -> u64 {
    sec_at(Instant::now())
}

/// The second since the epoch at `at`: the wall clock is read once, then the monotonic clock
/// carries it, so that recording a request needs no clock read beyond its latency's, and a step
/// of the wall clock does not jump the windows.
pub fn sec_at(at: Instant) -> u64 {
    static ANCHOR: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (start, wall) = ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), wall)
    });
    (*wall + at.saturating_duration_since(*start)).as_secs()
}

/// The smallest bucket whose upper bound holds `ms` (a search over the bounds: no logarithm on
/// the request path).
fn bucket_of(ms: f64) -> usize {
    static UPPER: LazyLock<[f64; BUCKETS]> = LazyLock::new(|| std::array::from_fn(upper_ms));
    UPPER.partition_point(|u| *u < ms).min(BUCKETS - 1)
}

fn upper_ms(bucket: usize) -> f64 {
    FIRST_MS * GROWTH.powi(bucket as i32)
}

struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            second: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// One backend's last minute.
pub struct Window {
    slots: Box<[Slot]>,
    reset: Mutex<()>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            reset: Mutex::new(()),
        }
    }
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Window")
    }
}

/// Figures over a span of seconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    /// Requests per second over the span.
    pub rate: f64,
    /// Errors / requests (0 without requests).
    pub error_rate: f64,
    /// Percentiles in milliseconds, at the upper edge of their histogram bucket (within 25%).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests in each second of the span, oldest first (for sparklines).
    pub series: Vec<u64>,
}

impl Window {
    /// Records one request that took `ms` milliseconds at second `sec`.
    pub fn record(&self, sec: u64, ms: f64, error: bool) {
        let slot = &self.slots[(sec % SLOTS as u64) as usize];
        if slot.second.load(Ordering::Acquire) != sec {
            let _one = self.reset.lock().expect("window reset lock");
            if slot.second.load(Ordering::Acquire) != sec {
                slot.requests.store(0, Ordering::Relaxed);
                slot.errors.store(0, Ordering::Relaxed);
                for b in &slot.latency {
                    b.store(0, Ordering::Relaxed);
                }
                slot.second.store(sec, Ordering::Release);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    /// Figures for seconds `from..=to` (at most the last [`SLOTS`] seconds before `to`).
    pub fn summary(&self, from: u64, to: u64) -> Summary {
        summarize(from, to, &self.slots(from, to))
    }

    /// The seconds of `from..=to` that saw requests, as plain data (what a replica publishes
    /// to the fleet).
    pub fn slots(&self, from: u64, to: u64) -> Vec<SlotData> {
        let from = from.max(to.saturating_sub(SLOTS as u64 - 1));
        let mut out = Vec::new();
        for sec in from..=to {
            let slot = &self.slots[(sec % SLOTS as u64) as usize];
            if slot.second.load(Ordering::Acquire) != sec {
                continue;
            }
            let requests = slot.requests.load(Ordering::Relaxed);
            if requests == 0 {
                continue;
            }
            out.push(SlotData {
                second: sec,
                requests,
                errors: slot.errors.load(Ordering::Relaxed),
                latency: slot
                    .latency
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| {
                        let n = b.load(Ordering::Relaxed);
                        (n > 0).then_some((i as u8, n))
                    })
                    .collect(),
            });
        }
        out
    }
}

/// One second of one backend on one replica: counts and the non-empty latency buckets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlotData {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    /// (bucket, requests) for the buckets that have any.
    pub latency: Vec<(u8, u32)>,
}

/// Figures for seconds `from..=to` (clamped to the last [`SLOTS`]) over `slots`, which may come
/// from several replicas: the same second's counts and histograms add up.
pub fn summarize(from: u64, to: u64, slots: &[SlotData]) -> Summary {
    let from = from.max(to.saturating_sub(SLOTS as u64 - 1));
    let mut out = Summary::default();
    let mut hist = [0u64; BUCKETS];
    let mut series = vec![0u64; (to + 1).saturating_sub(from) as usize];
    for slot in slots {
        if slot.second < from || slot.second > to {
            continue;
        }
        out.requests += slot.requests;
        out.errors += slot.errors;
        series[(slot.second - from) as usize] += slot.requests;
        for (b, n) in &slot.latency {
            hist[(*b as usize).min(BUCKETS - 1)] += u64::from(*n);
        }
    }
    out.series = series;
    let seconds = (to + 1).saturating_sub(from).max(1) as f64;
    out.rate = out.requests as f64 / seconds;
    if out.requests > 0 {
        out.error_rate = out.errors as f64 / out.requests as f64;
    }
    let total: u64 = hist.iter().sum();
    let percentile = |q: f64| {
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some((upper_ms(i) * 1000.0).round() / 1000.0);
            }
        }
        None
    };
    out.p50_ms = percentile(0.50);
    out.p95_ms = percentile(0.95);
    out.p99_ms = percentile(0.99);
    out
}

/// A route's figures, on each side. Carried over config reloads by route name.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub monolith: Window,
    /// Requests meant for the service: answered by it, or failed and fallen back.
    pub service: Window,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for ms in [0.05, 0.1, 0.3, 1.0, 7.5, 120.0, 2500.0] {
            let b = bucket_of(ms);
            assert!(upper_ms(b) >= ms, "{ms} in bucket {b}");
            if b > 0 {
                assert!(upper_ms(b - 1) < ms, "{ms} belongs lower than {b}");
            }
        }
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
    }

    #[test]
    fn summary_counts_rates_and_percentiles() {
        let w = Window::default();
        let t = 1_000_000;
        for i in 0..100 {
            // 1 ms for most, 100 ms for the slowest 5, errors on 10.
            let ms = if i < 95 { 1.0 } else { 100.0 };
            w.record(t + (i % 2), ms, i % 10 == 0);
        }
        let s = w.summary(t, t + 1);
        assert_eq!((s.requests, s.errors), (100, 10));
        assert_eq!(s.series, vec![50, 50]);
        assert!((s.rate - 50.0).abs() < 1e-9);
        assert!((s.error_rate - 0.1).abs() < 1e-9);
        let p50 = s.p50_ms.unwrap();
        assert!((1.0..1.25).contains(&p50), "{p50}");
        assert!(s.p95_ms.unwrap() < 1.25, "{:?}", s.p95_ms);
        let p99 = s.p99_ms.unwrap();
        assert!((100.0..125.0).contains(&p99), "{p99}");
    }

    #[test]
    fn replicas_slots_add_up_second_by_second() {
        let (a, b) = (Window::default(), Window::default());
        let t = 9_000;
        for _ in 0..90 {
            a.record(t, 1.0, false);
        }
        for _ in 0..10 {
            b.record(t, 200.0, true);
            b.record(t + 1, 1.0, false);
        }
        let mut all = a.slots(t, t + 1);
        all.extend(b.slots(t, t + 1));
        let s = summarize(t, t + 1, &all);
        assert_eq!((s.requests, s.errors), (110, 10));
        assert_eq!(s.series, vec![100, 10]);
        // The slow tenth of the fleet shows in its p99, which neither replica alone has right.
        assert!(s.p99_ms.unwrap() >= 200.0, "{:?}", s.p99_ms);
        assert!(a.summary(t, t + 1).p99_ms.unwrap() < 2.0);
        // Plain data survives the trip through the shared store.
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(serde_json::from_str::<Vec<SlotData>>(&json).unwrap(), all);
        assert_eq!(a.summary(t, t + 1), summarize(t, t + 1, &a.slots(t, t + 1)));
    }

    #[test]
    fn old_seconds_are_forgotten_and_ranges_clamped() {
        let w = Window::default();
        let t = 5_000;
        w.record(t, 2.0, true);
        // The same slot a full turn later starts from zero.
        w.record(t + SLOTS as u64, 2.0, false);
        let s = w.summary(t + 1, t + SLOTS as u64);
        assert_eq!((s.requests, s.errors), (1, 0));
        assert_eq!(w.summary(t, t).requests, 0);
        // A range longer than the window is clamped to it.
        assert_eq!(w.summary(0, t + SLOTS as u64).series.len(), SLOTS);
        // No requests: no percentiles, no division by zero.
        let empty = Window::default().summary(t, t + 9);
        assert_eq!(
            (empty.rate, empty.error_rate, empty.p99_ms),
            (0.0, 0.0, None)
        );
    }
}
