//! Every Redis key signal9 uses, in one place, as [`crate::broker::Topology`]
//! names every AMQP queue and exchange.
//!
//! Keys a script touches together share one hash tag (the part in `{}`), so
//! a Redis Cluster keeps them in one slot and accepts the script: each
//! budget's keys are tagged `{ns:budget:api}`. Keys used alone carry no
//! tag, so a cluster spreads them.

/// The key names of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    namespace: String,
}

impl RedisKeys {
    /// The names under `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        RedisKeys {
            namespace: namespace.into(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn budget(&self, api: &str, part: &str) -> String {
        format!("{{{}:budget:{api}}}:{part}", self.namespace)
    }

    /// The budget's sliding window (a sorted set: member → grant time, ms).
    pub fn budget_window(&self, api: &str) -> String {
        self.budget(api, "window")
    }

    /// Until when the budget is paused (ms, Unix), after a 429.
    pub fn budget_pause(&self, api: &str) -> String {
        self.budget(api, "pause")
    }

    /// Tokens granted per minute over the last two hours (a hash: Unix
    /// minute → count), for the console's chart.
    pub fn budget_history(&self, api: &str) -> String {
        self.budget(api, "history")
    }

    /// Set while a bulk call is waiting for a token (the backfill lane
    /// yields to it).
    pub fn budget_bulk_waiting(&self, api: &str) -> String {
        self.budget(api, "bulk-waiting")
    }

    /// Refused interactive callers' claims on the next free token (a sorted
    /// set: waiter → Unix ms when the claim lapses); bulk and backfill
    /// callers stand back while it holds one.
    pub fn budget_interactive_waiting(&self, api: &str) -> String {
        self.budget(api, "interactive-waiting")
    }

    /// When the budget's next paced token is due (ms, Unix): bulk and
    /// backfill callers keep to one token per window ÷ N past half the window.
    pub fn budget_pace(&self, api: &str) -> String {
        self.budget(api, "pace")
    }

    /// The read API's quota of one token (a hash: level, at), by the
    /// token's SHA-256; tagged with [`RedisKeys::api_quota_total`] so one
    /// script takes from both.
    pub fn api_quota_token(&self, hash: &str) -> String {
        format!("{{{}:api-quota}}:token:{hash}", self.namespace)
    }

    /// The read API's quota of every token together (a hash: level, at).
    pub fn api_quota_total(&self) -> String {
        format!("{{{}:api-quota}}:total", self.namespace)
    }

    /// The API's circuit breaker, shared by the pool (a hash; see
    /// [`crate::breaker`]); tagged with the API's budget, so that one
    /// script asks both.
    pub fn breaker(&self, api: &str) -> String {
        self.budget(api, "breaker")
    }

    /// Every live worker's heartbeat (a hash: worker id → JSON).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.namespace)
    }

    /// The scheduler's leadership lease.
    pub fn scheduler_leader(&self) -> String {
        format!("{}:scheduler:leader", self.namespace)
    }

    /// Set once the scheduler has fired run `run_id`.
    pub fn scheduler_fired(&self, run_id: &str) -> String {
        format!("{}:scheduler:fired:{run_id}", self.namespace)
    }

    /// Set once the scheduler has published run `run_id`'s bar backfill.
    pub fn scheduler_backfilled(&self, run_id: &str) -> String {
        format!("{}:scheduler:backfilled:{run_id}", self.namespace)
    }

    /// How many settled series-days the scheduler's last gap check found
    /// uncovered (an integer; the workers export it as a gauge).
    pub fn gaps_missing(&self) -> String {
        format!("{}:gaps:missing", self.namespace)
    }

    /// The outbox relay's lease.
    pub fn outbox_relay(&self) -> String {
        format!("{}:outbox:relay", self.namespace)
    }
}

/// The hash tag of a key: the part between the first `{` and the next `}`,
/// when not empty; else the whole key (what a cluster hashes).
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budgets_keys_share_one_hash_tag_and_the_two_budgets_do_not() {
        let keys = RedisKeys::new("ns");
        let tag = hash_tag(&keys.budget_window("data")).to_owned();
        assert_eq!(tag, "ns:budget:data");
        assert_eq!(hash_tag(&keys.budget_pause("data")), tag);
        assert_eq!(hash_tag(&keys.budget_bulk_waiting("data")), tag);
        assert_ne!(hash_tag(&keys.budget_window("trading")), tag);
    }
}
