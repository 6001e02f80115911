//! Meters that hold a rate or a running total to a limit: what enforces a
//! hosted tenant's quotas that are not checked once at a request (records
//! ingested per second, API calls per second, dead-letter bytes kept).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::units::ByteSize;

/// A token bucket: `rate` per second, up to one second's worth at once.
pub struct RateMeter {
    state: Mutex<(f64, Instant)>,
}

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter {
            state: Mutex::new((f64::MAX, Instant::now())),
        }
    }
}

impl RateMeter {
    /// Takes `n` at `rate` per second; when there are not enough, takes
    /// nothing and says how many seconds to wait.
    pub fn take(&self, n: u64, rate: u64) -> Result<(), u64> {
        let rate = rate.max(1) as f64;
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let (tokens, at) = *state;
        let tokens = (tokens.min(rate) + now.duration_since(at).as_secs_f64() * rate).min(rate);
        let n = n as f64;
        if n <= tokens {
            *state = (tokens - n, now);
            return Ok(());
        }
        *state = (tokens, now);
        // A request larger than a second's worth waits for a full bucket.
        let missing = (n.min(rate) - tokens).max(0.0);
        Err((missing / rate).ceil().max(1.0) as u64)
    }
}

/// A running total against a limit (dead-letter bytes).
#[derive(Debug)]
pub struct ByteMeter {
    used: AtomicU64,
    limit: AtomicU64,
    /// The quota's name, for messages.
    name: &'static str,
}

impl ByteMeter {
    /// A meter named `name` starting at `used`, limited to `limit`.
    pub fn new(name: &'static str, used: u64, limit: u64) -> Self {
        ByteMeter {
            used: AtomicU64::new(used),
            limit: AtomicU64::new(limit),
            name,
        }
    }

    /// Adds `bytes` if that stays within the limit; otherwise adds
    /// nothing and says which quota.
    pub fn add(&self, bytes: u64) -> Result<(), String> {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + bytes > limit {
                return Err(format!(
                    "quota `{}` of {} reached ({} used)",
                    self.name,
                    ByteSize(limit),
                    ByteSize(used)
                ));
            }
            match self.used.compare_exchange(
                used,
                used + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// A new limit.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_meter_allows_a_seconds_worth_then_says_when() {
        let meter = RateMeter::default();
        assert!(meter.take(60, 100).is_ok());
        assert!(meter.take(40, 100).is_ok());
        assert_eq!(meter.take(50, 100), Err(1));
        // One larger than a second's worth is told to wait for a full bucket.
        assert_eq!(meter.take(1000, 100), Err(1));
    }

    #[test]
    fn the_byte_meter_refuses_past_its_limit_naming_the_quota() {
        let meter = ByteMeter::new("dead_letter_bytes", 10, 100);
        assert!(meter.add(90).is_ok());
        let err = meter.add(1).unwrap_err();
        assert!(err.contains("`dead_letter_bytes` of 100B"), "{err}");
    }
}
