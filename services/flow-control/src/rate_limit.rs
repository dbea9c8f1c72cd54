//! Intake rate limiting: a token bucket shared by all partitions, and a meter of the accepted rate.
//! Over the limit, intake waits (the delivery stays unacknowledged), which is backpressure to the broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `rate_per_second` tokens are added per second up to `burst`.
/// A request for more tokens than the bucket holds is granted once the bucket
/// is full, leaving it in debt, so batches larger than the burst still pass
/// and the long-run rate stays at `rate_per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate_per_second` and `burst` are at least 1.
    pub fn new(rate_per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate_per_second: f64::from(rate_per_second.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_second).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens when available (`None`), or says how long to wait
    /// before asking again (`Some(wait)`; nothing is taken).
    pub fn try_take(&mut self, n: u64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let needed = (n as f64).min(self.burst);
        if self.tokens >= needed {
            self.tokens -= n as f64;
            None
        } else {
            let missing = needed - self.tokens;
            Some(
                Duration::from_secs_f64(missing / self.rate_per_second)
                    .max(Duration::from_millis(1)),
            )
        }
    }
}

/// The token bucket shared by every partition's intake.
#[derive(Clone)]
pub struct RateLimiter {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl RateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        RateLimiter {
            bucket: Arc::new(Mutex::new(TokenBucket::new(
                rate_per_second,
                burst,
                Instant::now(),
            ))),
        }
    }

    /// Waits until `n` changes may pass. Returns how long it waited (zero when
    /// the bucket had room).
    pub async fn acquire(&self, n: u64) -> Duration {
        let started = Instant::now();
        loop {
            let wait = {
                let mut bucket = match self.bucket.lock() {
                    Ok(b) => b,
                    // A panic while holding this lock cannot leave the bucket
                    // inconsistent (plain arithmetic), so keep using it.
                    Err(poisoned) => poisoned.into_inner(),
                };
                bucket.try_take(n, Instant::now())
            };
            match wait {
                None => return started.elapsed(),
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// Counts accepted changes and turns the count into a per-second rate.
#[derive(Default)]
pub struct RateMeter {
    total: AtomicU64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl RateMeter {
    pub fn record(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The rate since the previous call (0 on the first call).
    pub fn sample(&self, now: Instant) -> f64 {
        let total = self.total();
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let rate = match *last {
            Some((at, count)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    total.saturating_sub(count) as f64 / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        *last = Some((now, total));
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_bucket_grants_burst_then_waits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 50, t0);
        assert_eq!(b.try_take(50, t0), None);
        let wait = b.try_take(10, t0).expect("bucket is empty");
        // 10 tokens at 100/s take 100 ms.
        assert!((wait.as_millis() as i64 - 100).abs() <= 1, "{wait:?}");
        assert_eq!(b.try_take(10, t0 + Duration::from_millis(100)), None);
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 20, t0);
        assert_eq!(b.try_take(20, t0), None);
        // A long idle time refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.try_take(20, later), None);
        assert!(b.try_take(1, later).is_some());
    }

    #[test]
    fn batch_larger_than_burst_passes_on_a_full_bucket_and_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 10, t0);
        assert_eq!(b.try_take(30, t0), None);
        // 20 tokens of debt plus 5 wanted → 250 ms at 100/s.
        let wait = b.try_take(5, t0).expect("in debt");
        assert!((wait.as_millis() as i64 - 250).abs() <= 1, "{wait:?}");
    }

    #[tokio::test]
    async fn limiter_enforces_the_long_run_rate() {
        let limiter = RateLimiter::new(200, 20);
        let started = Instant::now();
        // 20 from the burst + 40 at 200/s ≈ 200 ms.
        for _ in 0..6 {
            limiter.acquire(10).await;
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(180), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
    }

    #[test]
    fn meter_reports_rate_between_samples() {
        let m = RateMeter::default();
        let t0 = Instant::now();
        assert_eq!(m.sample(t0), 0.0);
        m.record(500);
        let rate = m.sample(t0 + Duration::from_millis(500));
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert_eq!(m.total(), 500);
    }
}
