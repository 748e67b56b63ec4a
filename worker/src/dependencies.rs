//! The worker's own view of the parts around it that it writes to: a
//! per-process circuit breaker (the `failsafe` crate) for the store and one
//! for Redis. A job that fails because the store failed under it, or a
//! Redis ping that fails, counts against that dependency's breaker; two
//! store failures in a row, or three failed pings, open it. While one is open the worker consumes nothing: its
//! session ends (every message it held returns to its queue, no attempt
//! counted, nothing dead-lettered) and it probes the dependency at the
//! breaker's back-off (1 s doubling to 30 s) until it answers, then
//! consumes again. So a store outage costs the calls already in flight
//! when it began, not a fetch per job on the queue.
//!
//! The per-API breakers of the budget stay shared in Redis (every process
//! sees the API fail alike); these are per process, because a worker's
//! path to its store or its Redis can fail alone.

use failsafe::backoff::{exponential, Exponential};
use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use std::sync::Arc;
use std::time::Duration;

use signal9_shared::redis_conn::RedisPool;
use signal9_shared::shutdown::Shutdown;
use signal9_shared::store::Store;

type Breaker = failsafe::StateMachine<ConsecutiveFailures<Exponential>, ()>;

/// Store failures in a row that open its breaker: each came after its
/// job's calls were spent, so the second stops the spending.
const STORE_FAILURES_TO_OPEN: u32 = 2;
/// Failed Redis pings (one a second) in a row that open its breaker.
const REDIS_FAILURES_TO_OPEN: u32 = 3;

/// A part the worker writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dependency {
    /// The bar and asset store.
    Store,
    /// Redis: the budget, the breakers, the heartbeats.
    Redis,
}

impl Dependency {
    /// Both.
    pub(crate) const ALL: [Dependency; 2] = [Dependency::Store, Dependency::Redis];

    /// The name in errors, metrics and `/readyz`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dependency::Store => "store",
            Dependency::Redis => "redis",
        }
    }

    fn parse(name: &str) -> Option<Dependency> {
        Dependency::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// The two breakers.
pub(crate) struct Dependencies {
    store: Breaker,
    redis: Breaker,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies").finish_non_exhaustive()
    }
}

impl Default for Dependencies {
    fn default() -> Self {
        Dependencies::new()
    }
}

fn breaker(failures: u32) -> Breaker {
    let backoff = exponential(Duration::from_secs(1), Duration::from_secs(30));
    failsafe::Config::new()
        .failure_policy(consecutive_failures(failures, backoff))
        .build()
}

impl Dependencies {
    /// Both closed.
    pub(crate) fn new() -> Self {
        Dependencies {
            store: breaker(STORE_FAILURES_TO_OPEN),
            redis: breaker(REDIS_FAILURES_TO_OPEN),
        }
    }

    fn breaker(&self, dependency: Dependency) -> &Breaker {
        match dependency {
            Dependency::Store => &self.store,
            Dependency::Redis => &self.redis,
        }
    }

    /// Records a job's end: a failure of `failed` (a dependency's name, as
    /// `Classify::dependency` gives it) counts against that breaker; a
    /// job that succeeded is a success of the store's.
    pub(crate) fn record_job(&self, failed: Option<&str>, succeeded: bool) {
        match failed.and_then(Dependency::parse) {
            Some(dependency) => self.breaker(dependency).on_error(),
            None if succeeded => self.store.on_success(),
            None => {}
        }
    }

    /// Records one Redis ping.
    pub(crate) fn record_redis(&self, answered: bool) {
        if answered {
            self.redis.on_success();
        } else {
            self.redis.on_error();
        }
    }

    /// The first dependency whose breaker is open, if any.
    pub(crate) fn open(&self) -> Option<Dependency> {
        // is_call_permitted moves an open breaker whose back-off passed to
        // half-open: the next outcome (a probe's) decides it.
        Dependency::ALL
            .into_iter()
            .find(|d| !self.breaker(*d).is_call_permitted())
    }

    /// Waits until every dependency answers, probing each at its breaker's
    /// back-off; `held` is told which one holds the worker meanwhile.
    /// False when `shutdown` fired first.
    pub(crate) async fn wait_until_up(
        &self,
        store: &Arc<dyn Store>,
        redis: &RedisPool,
        shutdown: &mut Shutdown,
        held: impl Fn(Option<Dependency>),
    ) -> bool {
        loop {
            let mut down = None;
            for dependency in Dependency::ALL {
                let breaker = self.breaker(dependency);
                if !breaker.is_call_permitted() {
                    down = Some(dependency);
                    break;
                }
                let answered = match dependency {
                    Dependency::Store => tokio::time::timeout(Duration::from_secs(5), store.ping())
                        .await
                        .is_ok_and(|r| r.is_ok()),
                    Dependency::Redis => signal9_shared::workers::ping(redis).await.is_ok(),
                };
                if answered {
                    breaker.on_success();
                } else {
                    breaker.on_error();
                    down = Some(dependency);
                    break;
                }
            }
            held(down);
            let Some(dependency) = down else {
                return true;
            };
            tracing::debug!(dependency = dependency.as_str(), "Waiting for a dependency to answer");
            if !shutdown.sleep(Duration::from_millis(500)).await {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_failures_in_a_row_open_its_breaker_and_a_success_between_resets_the_count() {
        let deps = Dependencies::new();
        deps.record_job(Some("store"), false);
        deps.record_job(None, true);
        deps.record_job(Some("store"), false);
        assert_eq!(deps.open(), None, "a success in between");
        deps.record_job(Some("store"), false);
        assert_eq!(deps.open(), Some(Dependency::Store));
        let redis = Dependencies::new();
        for _ in 0..3 {
            redis.record_redis(false);
        }
        assert_eq!(redis.open(), Some(Dependency::Redis));
        // A failure of something else (the API) is no dependency's.
        let other = Dependencies::new();
        for _ in 0..5 {
            other.record_job(None, false);
        }
        assert_eq!(other.open(), None);
    }
}
