//! Jittered exponential backoff, for every link that is retried: device
//! ports and radios, the LAN and upstream brokers, a failing disk; and
//! [`LogLimit`], the same restraint for log lines about them.

use std::time::{Duration, Instant};

/// Backoff between attempts to (re)open a link.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: doubles up to `max`, with up to 25 % jitter so many
    /// devices (or gateways) do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base.mul_f64(1.0 - fastrand::f64() * 0.25)
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// At most one log line per `every`, with a count of what was left out.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    next: Instant,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            next: Instant::now(),
            suppressed: 0,
        }
    }

    /// Lines left out since the last one logged.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// `Some(suppressed since the last line)` when a line may be logged.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if now < self.next {
            self.suppressed += 1;
            return None;
        }
        self.next = now + self.every;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        for (d, base) in delays.iter().zip([100u128, 200, 400, 800, 800, 800]) {
            assert!(*d <= base && *d >= base * 3 / 4, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn log_limit_counts_what_it_leaves_out() {
        let mut l = LogLimit::new(Duration::from_secs(60));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        l.next = Instant::now();
        assert_eq!(l.allow(), Some(2));
    }
}
