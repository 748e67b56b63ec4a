//! Which requests a fetch makes: the series the store already covers are
//! skipped, checkpointed ones resume, the rest are packed.

use super::{BarsRequest, Checkpoint};
use crate::plan::Packing;
use chrono::{DateTime, Utc};
use signal9_alpaca::Symbol;
use std::collections::{BTreeMap, BTreeSet};

/// One request to make: its symbols, where it starts, and the page token
/// to go on from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    pub(crate) symbols: Vec<Symbol>,
    pub(crate) start: DateTime<Utc>,
    pub(crate) token: Option<String>,
}

/// The requests that finish what `state` has left: a stopped request goes
/// on with its page token when every symbol after its cursor is still to
/// fetch here; any other series that stopped part-way goes on alone from
/// its last bar; untouched series are packed together.
pub(crate) fn plan_requests(
    request: &BarsRequest,
    state: &BTreeMap<Symbol, Checkpoint>,
    packing: Packing,
) -> Vec<Planned> {
    let finished = |c: &Checkpoint| c.done || c.rejected.is_some();
    let mut untouched: BTreeSet<&Symbol> = state.iter().filter(|(_, c)| !c.started()).map(|(s, _)| s).collect();
    let mut planned = Vec::new();
    for (symbol, checkpoint) in state.iter().filter(|(_, c)| c.started() && !finished(c)) {
        let resumable = checkpoint.resume.as_ref().filter(|resume| {
            // The token goes on after this series' last bar: the request's
            // earlier symbols are behind it, its later ones must all still
            // be to fetch here (no series fetched twice, none not asked for).
            resume
                .symbols
                .iter()
                .filter(|s| *s > symbol)
                .all(|s| untouched.contains(s))
        });
        match resumable {
            Some(resume) => {
                for s in &resume.symbols {
                    untouched.remove(s);
                }
                planned.push(Planned {
                    symbols: resume.symbols.clone(),
                    start: request.range.start,
                    token: Some(resume.token.clone()),
                });
            }
            None => planned.push(Planned {
                symbols: vec![symbol.clone()],
                start: checkpoint
                    .last
                    .map_or(request.range.start, |t| {
                        t.checked_add_signed(chrono::Duration::seconds(1)).unwrap_or(t)
                    })
                    .max(request.range.start),
                token: None,
            }),
        }
    }
    let untouched: Vec<Symbol> = untouched.into_iter().cloned().collect();
    for symbols in packing.pack(&untouched, request.estimate_per_symbol()) {
        planned.push(Planned {
            symbols,
            start: request.range.start,
            token: None,
        });
    }
    planned
}
