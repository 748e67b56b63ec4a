//! The one back-off every retry loop uses (the worker's reconnects, the
//! producer's republishing, DynamoDB's unprocessed items, the gate when
//! Redis is unreachable): capped exponential, with jitter so that many
//! processes failing together do not retry together.
//!
//! Each step doubles the base delay from `first` up to `max`; the delay
//! handed out is a random 50–100 % of the base ("equal jitter"), so it is
//! never more than `max` and never less than half the base.

use rand::Rng;
use std::time::Duration;

/// Capped, jittered exponential back-off.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Backoff {
            first,
            max,
            base: first,
        }
    }

    /// The delay to wait now (jittered); the base of the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(self.base);
        self.base = (self.base * 2).min(self.max);
        delay
    }

    /// The base the next delay is drawn from, for messages ("again in …").
    pub fn peek(&self) -> Duration {
        self.base
    }

    /// Back to `first`, after a success.
    pub fn reset(&mut self) {
        self.base = self.first;
    }
}

/// A random 50–100 % of `base`.
pub(crate) fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_their_jitter_and_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1_000));
        for base in [100, 200, 400, 800, 1_000, 1_000] {
            assert_eq!(backoff.peek(), ms(base));
            let delay = backoff.next_delay();
            assert!(
                delay >= ms(base / 2) && delay <= ms(base),
                "{delay:?} for a base of {base} ms"
            );
        }
        backoff.reset();
        assert_eq!(backoff.peek(), ms(100));
        assert_eq!(
            Backoff::new(ms(10_000), ms(500)).peek(),
            ms(500),
            "the first delay is capped too"
        );
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::BTreeSet<Duration> = (0..50).map(|_| jittered(Duration::from_secs(1))).collect();
        assert!(delays.len() > 40, "{} distinct delays of 50", delays.len());
    }
}
