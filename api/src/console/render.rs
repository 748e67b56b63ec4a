//! The console's HTML: escaping, the page frame and style, error pages,
//! the budget chart.

use super::sessions::Login;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use std::fmt::Write as _;

/// HTML-escapes text.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
pub(super) fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header .who{margin-left:auto;font-size:13px}
main{padding:16px 20px;max-width:1200px}h2{font-size:17px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;font-size:13px;width:100%}
td,th{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef1f5}
.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b00020;font-weight:600}.ok{color:#17663a}
.flash{background:#e7f6ec;border:1px solid #9bd3ae;padding:8px 12px;margin:8px 0}
.warn{background:#fff4e5;border:1px solid #f0c27b;padding:8px 12px;margin:8px 0}
form.inline{display:inline}button{cursor:pointer}pre{background:#fff;border:1px solid #dde1e7;padding:8px;overflow:auto}
.charts{display:flex;gap:24px;flex-wrap:wrap}.chart{background:#fff;border:1px solid #dde1e7;padding:8px}";

pub(super) fn page(title: &str, login: Option<&Login>, body: &str) -> Html<String> {
    let who = login.map_or(String::new(), |l| {
        format!(
            "<span class=\"who\">role: {} <form class=\"inline\" method=\"post\" action=\"/console/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form></span>",
            l.role.as_str(),
            esc(&l.csrf)
        )
    });
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · signal9</title><style>{STYLE}</style></head>\
         <body><header><strong>signal9</strong><a href=\"/console\">Overview</a><a href=\"/console/dlq\">Dead letters</a>{who}</header><main>{body}</main></body></html>",
        esc(title)
    ))
}

pub(super) fn error_page(status: StatusCode, login: Option<&Login>, message: &str) -> Response {
    (
        status,
        page(
            "Error",
            login,
            &format!("<h2>{}</h2><p class=\"bad\">{}</p>", status, esc(message)),
        ),
    )
        .into_response()
}

pub(super) fn login_page(message: Option<&str>) -> Html<String> {
    let note = message.map_or(String::new(), |m| format!("<p class=\"bad\">{}</p>", esc(m)));
    page(
        "Log in",
        None,
        &format!(
            "<h2>Log in</h2>{note}<form method=\"post\" action=\"/console/login\">\
             <label>Token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" size=\"48\"></label> \
             <button type=\"submit\" id=\"login\">Log in</button></form>\
             <p>A token of the <code>read</code> role shows the pages; <code>operate</code> may also replay and purge.</p>"
        ),
    )
}

/// What a page says of a failure inside: what failed and the request id;
/// the cause goes to the log under that id, not to the browser.
pub(super) fn hidden(what: &str, cause: &dyn std::fmt::Display) -> String {
    let id = crate::request_id();
    tracing::error!(request_id = %id, error = %cause, "Console: {what}");
    format!("{what} (request id {id})")
}

pub(super) fn depth(n: Option<u32>) -> String {
    n.map_or_else(|| "<span class=\"bad\">missing</span>".into(), |n| n.to_string())
}

/// An SVG bar chart of calls per minute over the last hour, with the limit.
pub(super) fn chart(title: &str, history: &[(i64, u64)], limit: u32, now_minute: i64) -> String {
    let (w, h, bar) = (600.0_f64, 140.0_f64, 10.0_f64);
    let top = history
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
        .max(u64::from(limit))
        .max(1) as f64;
    let mut svg = format!(
        "<div class=\"chart\"><div><strong>{}</strong> calls per minute, last hour (limit {limit})</div>\
         <svg width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"{} calls per minute\">",
        esc(title),
        h + 18.0,
        esc(title)
    );
    for (minute, n) in history {
        let age = now_minute - minute;
        if !(0..60).contains(&age) {
            continue;
        }
        let x = w - (age as f64 + 1.0) * bar;
        let height = (*n as f64 / top) * h;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"#4a7bd0\"><title>{n} calls</title></rect>",
            h - height,
            bar - 1.0
        );
    }
    let y = h - (f64::from(limit) / top) * h;
    let _ = write!(
        svg,
        "<line x1=\"0\" x2=\"{w}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#b00020\" stroke-dasharray=\"4 3\"/>\
         <text x=\"0\" y=\"{}\" font-size=\"11\">-60 min</text><text x=\"{}\" y=\"{}\" font-size=\"11\">now</text></svg></div>",
        h + 14.0,
        w - 24.0,
        h + 14.0
    );
    svg
}
