//! The console's pages: the overview, the dead letters with filters, one
//! dead letter shown.

use super::extract::LoggedIn;
use super::render::{chart, depth, enc, error_page, esc, login_page, page};
use super::{broker, hidden};
use crate::auth::Role;
use crate::Shared;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use signal9_alpaca::Api;
use signal9_shared::ops::dead_letters::{self as dlq, Filter};
use signal9_shared::ops::status;
use signal9_shared::reply::{Detail, ReplyOutcome};
use std::fmt::Write as _;

pub(super) async fn login_form() -> Html<String> {
    login_page(None)
}

pub(super) async fn overview(State(state): State<Shared>, LoggedIn { id, login }: LoggedIn) -> Response {
    let mut body = String::new();
    if let Some(flash) = state.sessions.take_flash(&id) {
        let _ = write!(body, "<div class=\"flash\">{}</div>", esc(&flash));
    }
    let ns = &state.settings.broker.namespace;
    let _ = write!(
        body,
        "<p>namespace <code>{}</code> · store <code>{}</code></p>",
        esc(ns),
        esc(&state.settings.store.describe())
    );
    match broker(&state).await {
        Err(error) => {
            let _ = write!(body, "<div class=\"warn\">Queues unavailable: {}</div>", esc(&error));
        }
        Ok(session) => {
            let snap = status::snapshot(&session.connection, &session.topology, &state.gate, ns).await;
            let _ = session.connection.close(200, "console".into()).await;
            match snap {
                Err(error) => {
                    let _ = write!(
                        body,
                        "<div class=\"warn\">{}</div>",
                        esc(&hidden("Status unavailable", &format!("{error:#}")))
                    );
                }
                Ok(snap) => overview_tables(&mut body, &snap),
            }
        }
    }
    let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
    body.push_str("<h2>Budgets</h2><div class=\"charts\">");
    for api in [Api::Data, Api::Trading] {
        let budget = state.gate.budget(api);
        match budget.history(60).await {
            Ok(history) => body.push_str(&chart(api.as_str(), &history, budget.size().limit, now_minute)),
            Err(error) => {
                let _ = write!(
                    body,
                    "<div class=\"warn\">{}</div>",
                    esc(&hidden(&format!("The {} budget is unavailable", api.as_str()), &error))
                );
            }
        }
    }
    body.push_str("</div>");
    body.push_str("<h2>Sync runs</h2>");
    match state.store.recent_runs(10).await {
        Err(error) => {
            let _ = write!(
                body,
                "<div class=\"warn\">{}</div>",
                esc(&hidden("The store is unavailable", &error))
            );
        }
        Ok(runs) if runs.is_empty() => body.push_str("<p>None yet.</p>"),
        Ok(runs) => {
            body.push_str("<table id=\"runs\"><tr><th>Run</th><th>Status</th><th>Pages</th><th>Started</th><th>Finished</th><th>Listed</th><th>New</th><th>Updated</th><th>Status changes</th><th>Delisted</th><th>Rejected</th></tr>");
            for run in runs {
                let r = run.result.clone().unwrap_or_default();
                let class = match run.status.as_str() {
                    "completed" => "ok",
                    "running" => "",
                    _ => "bad",
                };
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td class=\"{class}\">{}</td><td class=\"num\">{}/{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    esc(&run.run_id),
                    run.status.as_str(),
                    run.pages_done,
                    run.pages_total,
                    run.started_at.format("%Y-%m-%d %H:%M:%SZ"),
                    run.finished_at.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()),
                    r.listed,
                    r.new,
                    r.updated,
                    r.status_changes,
                    r.delisted,
                    r.rejected
                );
            }
            body.push_str("</table>");
        }
    }
    page("Overview", Some(&login), &body).into_response()
}

pub(super) fn overview_tables(body: &mut String, snap: &status::Snapshot) {
    body.push_str("<h2>Queues</h2><table id=\"queues\"><tr><th>Queue</th><th class=\"num\">Ready</th><th class=\"num\">Consumers</th></tr>");
    for q in snap.queues.iter().chain(&snap.retry_queues) {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&q.name),
            depth(q.messages),
            depth(q.consumers)
        );
    }
    let dead = &snap.dead_letters;
    let _ = write!(
        body,
        "<tr><td><a href=\"/console/dlq\">{}</a> (dead letters)</td><td class=\"num\" id=\"dead-letters\">{}</td><td class=\"num\">{}</td></tr></table>",
        esc(&dead.name),
        depth(dead.messages),
        depth(dead.consumers)
    );
    let _ = write!(body, "<h2>Workers ({} alive)</h2>", snap.workers.len());
    if snap.workers.is_empty() {
        let _ = write!(
            body,
            "<p class=\"bad\">None: no worker has written a heartbeat in the last {} s.</p>",
            signal9_shared::workers::BEAT_TTL.as_secs()
        );
    } else {
        body.push_str("<table id=\"workers\"><tr><th>Id</th><th>Host:pid</th><th>Version</th><th class=\"num\">Concurrency</th><th>Broker</th><th class=\"num\">Jobs done</th><th>Breakers</th><th>Metrics</th><th>Started</th><th>Last beat</th></tr>");
        for w in &snap.workers {
            let breakers: Vec<String> = w.breakers.iter().map(|(api, s)| format!("{api} {s}")).collect();
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}:{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w.id),
                esc(&w.host),
                w.pid,
                esc(&w.version),
                w.concurrency,
                if w.broker_connected { "ok" } else { "bad" },
                if w.broker_connected { "connected" } else { "DISCONNECTED" },
                w.jobs_done,
                esc(&breakers.join(", ")),
                esc(w.metrics_addr.as_deref().unwrap_or("-")),
                w.started_at.format("%Y-%m-%d %H:%M:%SZ"),
                w.beat_at.format("%H:%M:%SZ")
            );
        }
        body.push_str("</table>");
    }
    body.push_str("<h2>Budget windows now</h2><table id=\"budgets\"><tr><th>API</th><th class=\"num\">In window</th><th class=\"num\">Limit</th><th class=\"num\">Window (s)</th><th>Paused</th></tr>");
    for (api, b) in &snap.budgets {
        let paused = b["paused_for_secs"].as_f64().unwrap_or(0.0);
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(api),
            b["in_window"],
            b["limit"],
            b["window_secs"],
            if paused > 0.0 { format!("<span class=\"bad\">{paused:.1} s more</span>") } else { "no".into() }
        );
    }
    body.push_str("</table>");
}

/// The dead-letter filters of a page or form.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    #[serde(default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) symbol: String,
    #[serde(default)]
    pub(super) error_class: String,
}

impl Filters {
    pub(super) fn filter(&self, max: Option<usize>) -> Filter {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Filter {
            id: some(&self.id),
            kind: some(&self.kind),
            symbol: some(&self.symbol),
            error_class: some(&self.error_class),
            max,
        }
    }

    pub(super) fn hidden(&self) -> String {
        [
            ("id", &self.id),
            ("kind", &self.kind),
            ("symbol", &self.symbol),
            ("error_class", &self.error_class),
        ]
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
        .collect()
    }

    pub(super) fn query(&self) -> String {
        format!(
            "id={}&kind={}&symbol={}&error_class={}",
            enc(&self.id),
            enc(&self.kind),
            enc(&self.symbol),
            enc(&self.error_class)
        )
    }

    pub(super) fn is_empty(&self) -> bool {
        self.filter(None).id.is_none()
            && self.filter(None).kind.is_none()
            && self.filter(None).symbol.is_none()
            && self.filter(None).error_class.is_none()
    }
}

pub(super) const DLQ_PAGE: usize = 100;

pub(super) async fn dead_letters(
    State(state): State<Shared>,
    LoggedIn { id, login }: LoggedIn,
    Query(filters): Query<Filters>,
) -> Response {
    let mut body = String::from("<h2>Dead letters</h2>");
    if let Some(flash) = state.sessions.take_flash(&id) {
        let _ = write!(body, "<div class=\"flash\" id=\"flash\">{}</div>", esc(&flash));
    }
    let select = |name: &str, value: &str, options: &[&str]| {
        let mut s = format!("<select name=\"{name}\"><option value=\"\">any</option>");
        for o in options {
            let _ = write!(s, "<option{}>{o}</option>", if *o == value { " selected" } else { "" });
        }
        s.push_str("</select>");
        s
    };
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/console/dlq\" id=\"filters\">Kind {} Symbol <input name=\"symbol\" value=\"{}\" size=\"10\"> Class {} Id <input name=\"id\" value=\"{}\" size=\"20\"> <button>Filter</button> <a href=\"/console/dlq\">clear</a></form>",
        select("kind", &filters.kind, &["fetch-bars", "sync-page", "status-check"]),
        esc(&filters.symbol),
        select("error_class", &filters.error_class, &["transient", "permanent", "poison"]),
        esc(&filters.id)
    );
    let session = match broker(&state).await {
        Ok(s) => s,
        Err(error) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&login), &error),
    };
    let listing = dlq::browse(
        &session.connection,
        &session.topology.dead_letter_queue(),
        &filters.filter(None),
        DLQ_PAGE,
        true,
        |_| {},
    )
    .await;
    let _ = session.connection.close(200, "console".into()).await;
    let listing = match listing {
        Ok(l) => l,
        Err(error) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&login),
                &hidden("The dead-letter queue cannot be read", &format!("{error:#}")),
            )
        }
    };
    let operate = login.role >= Role::Operate;
    let _ = write!(
        body,
        "<p id=\"dlq-summary\">{} shown of {} dead letters ({} read){}.</p>",
        listing.letters.len(),
        listing.total,
        listing.read,
        if listing.letters.len() == DLQ_PAGE {
            "; narrow the filters to see others"
        } else {
            ""
        }
    );
    if !operate {
        body.push_str("<p class=\"warn\">Your token has the <code>read</code> role: replay and purge need <code>operate</code>.</p>");
    }
    if !listing.letters.is_empty() && operate {
        let _ = write!(
            body,
            "<p><form class=\"inline\" method=\"post\" action=\"/console/dlq/replay\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{}<button id=\"replay-all\">Replay all that match</button></form> \
             <a href=\"/console/dlq/purge?{}\" id=\"purge-link\">Purge all that match…</a> (at most {} a second, {} per action)</p>",
            esc(&login.csrf),
            filters.hidden(),
            filters.query(),
            state.settings.replay_rate,
            state.settings.action_max
        );
    }
    replays_table(&mut body, &state.fetcher.replays());
    body.push_str("<h2>In the queue</h2><table id=\"letters\"><tr><th>Id</th><th>Kind</th><th>Symbol</th><th>Class</th><th class=\"num\">Attempts</th><th>Last failure</th><th>Last error</th><th></th></tr>");
    for letter in &listing.letters {
        let replay = if operate {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/console/dlq/replay\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button class=\"replay\" data-id=\"{}\">Replay</button></form>",
                esc(&login.csrf),
                esc(&letter.id),
                esc(&letter.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr class=\"letter\" data-id=\"{}\"><td><a href=\"/console/dlq/show?id={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{replay}</td></tr>",
            esc(&letter.id),
            enc(&letter.id),
            esc(&letter.id),
            esc(&letter.kind),
            esc(&letter.symbol),
            esc(&letter.error_class),
            letter.attempts,
            esc(&letter.last_failure),
            esc(&letter.last_error.chars().take(160).collect::<String>())
        );
    }
    body.push_str("</table>");
    page("Dead letters", Some(&login), &body).into_response()
}

/// The jobs replayed from this console and what became of them.
pub(super) fn replays_table(body: &mut String, replays: &[crate::fetch::Replay]) {
    if replays.is_empty() {
        return;
    }
    body.push_str("<h2>Replayed from this console</h2><table id=\"replays\"><tr><th>Job</th><th>Replayed</th><th>Outcome</th></tr>");
    for replay in replays {
        let (class, outcome) = match replay.outcome.as_deref() {
            None => ("", "waiting for a worker".to_owned()),
            Some(reply) => match &reply.outcome {
                ReplyOutcome::Succeeded { detail } => {
                    let what = match detail {
                        Detail::FetchBars(d) if d.bars == 1 => ": 1 bar".to_owned(),
                        Detail::FetchBars(d) => format!(": {} bars", d.bars),
                        Detail::SyncPage(d) => format!(": {} listed", d.listed),
                        Detail::StatusCheck(_) => String::new(),
                    };
                    ("ok", format!("succeeded{what}"))
                }
                ReplyOutcome::DeadLettered { error_class, error } => {
                    ("bad", format!("dead-lettered ({error_class}): {error}"))
                }
            },
        };
        let _ = write!(
            body,
            "<tr class=\"replay\" data-id=\"{}\"><td>{}</td><td>{}</td><td class=\"{class} outcome\">{}</td></tr>",
            esc(&replay.id),
            esc(&replay.id),
            replay.at.format("%H:%M:%SZ"),
            esc(&outcome)
        );
    }
    body.push_str("</table>");
}

#[derive(Debug, Deserialize)]
pub(super) struct ShowQuery {
    id: String,
}

pub(super) async fn show(
    State(state): State<Shared>,
    LoggedIn { login, .. }: LoggedIn,
    Query(query): Query<ShowQuery>,
) -> Response {
    let session = match broker(&state).await {
        Ok(s) => s,
        Err(error) => return error_page(StatusCode::SERVICE_UNAVAILABLE, Some(&login), &error),
    };
    let found = dlq::find(&session.connection, &session.topology.dead_letter_queue(), &query.id).await;
    let _ = session.connection.close(200, "console".into()).await;
    let shown = match found {
        Ok((Some(shown), _)) => shown,
        Ok((None, read)) => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(&login),
                &format!("No dead letter with id {:?} among the {read} in the queue.", query.id),
            )
        }
        Err(error) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&login),
                &hidden("The dead-letter queue cannot be read", &format!("{error:#}")),
            )
        }
    };
    let mut body = format!(
        "<h2>Dead letter {}</h2><p>routing key <code>{}</code> · {} · {} attempts</p><h2>Headers</h2><table>",
        esc(&shown.letter.id),
        esc(&shown.letter.routing_key),
        esc(&shown.letter.error_class),
        shown.letter.attempts
    );
    for (name, value) in &shown.headers {
        let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", esc(name), esc(value));
    }
    if login.role >= Role::Operate {
        let _ = write!(
            body,
            "</table><h2>Body ({} bytes{})</h2><pre id=\"body\">{}</pre>",
            shown.body_bytes,
            if shown.body_is_json { "" } else { ", not JSON" },
            esc(&shown.body)
        );
    } else {
        let _ = write!(
            body,
            "</table><h2>Body ({} bytes)</h2><p class=\"warn\" id=\"body-hidden\">Message bodies need the <code>operate</code> role.</p>",
            shown.body_bytes
        );
    }
    if login.role >= Role::Operate {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/console/dlq/replay\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button>Replay</button></form>",
            esc(&login.csrf),
            esc(&shown.letter.id)
        );
    }
    page("Dead letter", Some(&login), &body).into_response()
}
