//! The share of the budget a call draws from, which is the urgency of the
//! job it serves. The gate ([`crate::Gate::admit`]) serves each priority
//! from its own part of the window; the system gives each its own queues.

use serde::{Deserialize, Serialize};

/// How urgently a job wants serving. signal9 gives each priority its own
/// queue per kind: interactive jobs never wait behind a bulk backlog, and
/// bulk jobs (the daily pipeline) never wait behind a backfill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Scheduled work: the daily pipeline (the default).
    #[default]
    Bulk,
    /// A request another service is waiting for.
    Interactive,
    /// History on demand: served after bulk work, with what the budget
    /// has left (`signal9-producer backfill` publishes at this priority).
    Backfill,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::Interactive, Priority::Bulk, Priority::Backfill];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Bulk => "bulk",
            Priority::Interactive => "interactive",
            Priority::Backfill => "backfill",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == text)
    }
}
