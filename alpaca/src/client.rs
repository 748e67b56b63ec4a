//! The HTTP client for the trading and market-data APIs.
//!
//! Every call passes through a [`Gate`] first (the global budget and the
//! circuit breaker in production) and reports its outcome back to it, so the
//! client itself never sleeps, retries or decides policy. Errors are
//! classified by status code before any body is read.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use super::error::AlpacaError;
use super::model::{Bar, MultiBarsPage, SymbolBarsPage};
use super::query::{AssetQuery, BarsQuery};
use super::symbol::Symbol;
use crate::pages::PageCursor;
use crate::priority::Priority;

/// Header carrying the key id.
pub(crate) const HEADER_KEY_ID: &str = "APCA-API-KEY-ID";
/// Header carrying the secret key.
pub(crate) const HEADER_SECRET_KEY: &str = "APCA-API-SECRET-KEY";
/// The longest excerpt of an API message kept in an error.
const MAX_MESSAGE_CHARS: usize = 200;

/// Which of Alpaca's two budgets a call spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Trading API: assets.
    Trading,
    /// Market-data API: bars.
    Data,
}

impl Api {
    /// Lowercase name for keys, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Trading => "trading",
            Api::Data => "data",
        }
    }
}

/// An Alpaca key pair. Its Debug output shows neither half, and it has no
/// Display, so it cannot leak through a log field or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    key_id: String,
    secret_key: String,
}

impl Credentials {
    /// Wraps a key pair.
    pub fn new(key_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Credentials {
            key_id: key_id.into(),
            secret_key: secret_key.into(),
        }
    }

    fn headers(&self) -> Result<HeaderMap, AlpacaError> {
        let mut headers = HeaderMap::new();
        for (name, value) in [(HEADER_KEY_ID, &self.key_id), (HEADER_SECRET_KEY, &self.secret_key)] {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| AlpacaError::InvalidRequest(format!("{name} holds characters a header cannot carry")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(headers)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { key_id: <redacted>, secret_key: <redacted> }")
    }
}

/// Where the client gets its key pair. A fixed pair never changes; a
/// Secrets Manager source (`signal9_shared::secrets::SecretsSource`) can fetch a
/// rotated one.
#[async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The key pair to send now.
    async fn current(&self) -> Result<Credentials, AlpacaError>;
    /// The API refused `refused` (401/403): a different key pair to try once,
    /// or `None` when there is none.
    async fn refresh(&self, refused: &Credentials) -> Result<Option<Credentials>, AlpacaError>;
}

#[async_trait]
impl CredentialSource for Credentials {
    async fn current(&self) -> Result<Credentials, AlpacaError> {
        Ok(self.clone())
    }
    async fn refresh(&self, _refused: &Credentials) -> Result<Option<Credentials>, AlpacaError> {
        Ok(None)
    }
}

impl From<Credentials> for Arc<dyn CredentialSource> {
    fn from(credentials: Credentials) -> Self {
        Arc::new(credentials)
    }
}

/// The rate-limit headers of one response (names are case-insensitive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `X-RateLimit-Limit`.
    pub limit: Option<u32>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u32>,
    /// `X-RateLimit-Reset`, a Unix time in seconds on the wire.
    pub reset: Option<DateTime<Utc>>,
}

impl RateLimit {
    fn from_headers(headers: &HeaderMap) -> Self {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
        let reset = number("x-ratelimit-reset").and_then(|raw| {
            // Documented as seconds; a value this large can only be milliseconds.
            if raw > 100_000_000_000 {
                DateTime::from_timestamp_millis(raw)
            } else {
                DateTime::from_timestamp(raw, 0)
            }
        });
        RateLimit {
            limit: number("x-ratelimit-limit").and_then(|n| u32::try_from(n).ok()),
            remaining: number("x-ratelimit-remaining").and_then(|n| u32::try_from(n).ok()),
            reset,
        }
    }
}

/// What the gate learns from one call, to feed the budget and the breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// The endpoint template.
    pub endpoint: &'static str,
    /// The HTTP status, if the API answered.
    pub status: Option<u16>,
    /// The rate-limit headers, if the API answered.
    pub rate: RateLimit,
    /// Wall time of the call.
    pub elapsed: Duration,
}

impl CallOutcome {
    /// True when the call counts as a failure of the API (for a breaker):
    /// no answer, or a 5xx. A 4xx is the caller's fault, not the API's.
    pub fn is_api_failure(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// Stands before every call: waits for a token of the API's budget (and for
/// the breaker to allow it), then hears how the call went.
#[async_trait]
pub trait Gate: Send + Sync + fmt::Debug {
    /// Waits until one call to `api` for work of `priority` may be made. An
    /// error means the call must not be made now (for example, the budget's
    /// store is unreachable).
    async fn admit(&self, api: Api, priority: Priority) -> Result<(), AlpacaError>;
    /// Reports the outcome of a call that was admitted.
    fn observe(&self, api: Api, outcome: &CallOutcome);
}

/// A gate that admits every call at once and keeps no budget. It exists
/// only in builds with the `test-support` feature (the simulator's and the
/// client's own tests); every binary uses the budget.
#[cfg(feature = "test-support")]
#[derive(Debug, Default, Clone, Copy)]
pub struct Unmetered;

#[cfg(feature = "test-support")]
#[async_trait]
impl Gate for Unmetered {
    async fn admit(&self, _api: Api, _priority: Priority) -> Result<(), AlpacaError> {
        Ok(())
    }
    fn observe(&self, _api: Api, _outcome: &CallOutcome) {}
}

/// Where the two APIs live and how long a call may take.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Trading API base, e.g. `https://paper-api.alpaca.markets`.
    pub trading_url: String,
    /// Market-data API base, e.g. `https://data.alpaca.markets`.
    pub data_url: String,
    /// Timeout of one whole request, body included.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            trading_url: crate::urls::PAPER_TRADING.into(),
            data_url: crate::urls::DATA.into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A decoded response and the rate-limit headers that came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse<T> {
    /// The decoded body.
    pub body: T,
    /// The rate-limit headers.
    pub rate: RateLimit,
}

/// All bars of a query, every page followed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarsFetch {
    /// Bars by symbol, in the API's order. Symbols with no bars are absent.
    pub bars: BTreeMap<String, Vec<Bar>>,
    /// How many API calls the fetch spent.
    pub calls: u32,
    /// The rate-limit headers of the last page.
    pub rate: RateLimit,
}

/// The Alpaca client. Cheap to clone; all clones share one connection pool.
#[derive(Debug, Clone)]
pub struct AlpacaClient {
    http: reqwest::Client,
    trading_url: String,
    data_url: String,
    credentials: Arc<dyn CredentialSource>,
    gate: Arc<dyn Gate>,
    /// The lane of the work this client calls for (see [`Gate::admit`]).
    priority: Priority,
}

impl AlpacaClient {
    /// Builds a client. Base URLs lose a trailing `/` or `/v2`, which some
    /// deployments include.
    pub fn new(
        config: &ClientConfig,
        credentials: impl Into<Arc<dyn CredentialSource>>,
        gate: Arc<dyn Gate>,
    ) -> Result<Self, AlpacaError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("signal9/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlpacaError::InvalidRequest(format!("cannot build the HTTP client: {e}")))?;
        Ok(AlpacaClient {
            http,
            trading_url: normalize_base(&config.trading_url),
            data_url: normalize_base(&config.data_url),
            credentials: credentials.into(),
            gate,
            priority: Priority::Bulk,
        })
    }

    /// The same client, calling for work of `priority`: the gate serves
    /// interactive calls from the whole budget, bulk calls from all but the
    /// interactive reserve, backfill calls from what bulk calls leave.
    pub fn with_priority(&self, priority: Priority) -> Self {
        AlpacaClient {
            priority,
            ..self.clone()
        }
    }

    /// `GET /v2/assets`: the whole listing of one slice, one call. Elements
    /// come back as raw JSON so that one bad asset cannot fail the listing;
    /// [`crate::validate::asset`] decides about each.
    pub async fn list_assets(&self, query: &AssetQuery) -> Result<ApiResponse<Vec<serde_json::Value>>, AlpacaError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(status) = query.status {
            params.push(("status", status.to_string()));
        }
        if let Some(class) = query.class {
            params.push(("asset_class", class.to_string()));
        }
        if let Some(exchange) = &query.exchange {
            params.push(("exchange", exchange.clone()));
        }
        if !query.attributes.is_empty() {
            params.push(("attributes", query.attributes.join(",")));
        }
        let url = format!("{}/v2/assets", self.trading_url);
        self.get(Api::Trading, "GET /v2/assets", &url, &params).await
    }

    /// `GET /v2/assets/{symbol_or_id}`: one asset as raw JSON, for validation.
    pub async fn get_asset(&self, symbol_or_id: &str) -> Result<ApiResponse<serde_json::Value>, AlpacaError> {
        if symbol_or_id.is_empty()
            || !symbol_or_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'-'))
        {
            return Err(AlpacaError::InvalidRequest(format!(
                "not a symbol or asset id: {:?}",
                symbol_or_id.chars().take(40).collect::<String>()
            )));
        }
        // A crypto pair's '/' must not become a path separator.
        let encoded = symbol_or_id.replace('/', "%2F");
        let url = format!("{}/v2/assets/{encoded}", self.trading_url);
        self.get(Api::Trading, "GET /v2/assets/{symbol}", &url, &[]).await
    }

    /// `GET /v2/account`: the account the key pair opens, as raw JSON. One
    /// call through the gate, like every other; used to check a key.
    pub async fn account(&self) -> Result<ApiResponse<serde_json::Value>, AlpacaError> {
        let url = format!("{}/v2/account", self.trading_url);
        self.get(Api::Trading, "GET /v2/account", &url, &[]).await
    }

    /// The trading API base this client calls.
    pub fn trading_url(&self) -> &str {
        &self.trading_url
    }

    /// The market-data API base this client calls.
    pub fn data_url(&self) -> &str {
        &self.data_url
    }

    /// One page of multi-symbol bars (`/v2/stocks/bars`, or the crypto
    /// endpoint for crypto pairs).
    pub async fn bars_page(
        &self,
        query: &BarsQuery,
        page_token: Option<&str>,
    ) -> Result<ApiResponse<MultiBarsPage>, AlpacaError> {
        let mut params = query.params()?;
        if let Some(token) = page_token {
            params.push(("page_token", token.to_owned()));
        }
        let (endpoint, path) = if query.is_crypto() {
            ("GET /v1beta3/crypto/us/bars", "/v1beta3/crypto/us/bars")
        } else {
            ("GET /v2/stocks/bars", "/v2/stocks/bars")
        };
        let url = format!("{}{path}", self.data_url);
        self.get(Api::Data, endpoint, &url, &params).await
    }

    /// One page of one symbol's bars (`GET /v2/stocks/{symbol}/bars`), in
    /// the multi-symbol shape.
    pub(crate) async fn symbol_bars_page(
        &self,
        symbol: &Symbol,
        query: &BarsQuery,
        page_token: Option<&str>,
    ) -> Result<ApiResponse<MultiBarsPage>, AlpacaError> {
        let url = format!(
            "{}/v2/stocks/{}/bars",
            self.data_url,
            symbol.as_str().replace('/', "%2F")
        );
        let mut params: Vec<(&str, String)> = query.params()?.into_iter().filter(|(k, _)| *k != "symbols").collect();
        if let Some(token) = page_token {
            params.push(("page_token", token.to_owned()));
        }
        let page: ApiResponse<SymbolBarsPage> = self
            .get(Api::Data, "GET /v2/stocks/{symbol}/bars", &url, &params)
            .await?;
        let bars = page.body.bars.filter(|b| !b.is_empty());
        Ok(ApiResponse {
            body: MultiBarsPage {
                bars: bars.map(|b| BTreeMap::from([(symbol.to_string(), b)])),
                next_page_token: page.body.next_page_token,
            },
            rate: page.rate,
        })
    }

    /// Every bar of a multi-symbol query: follows `next_page_token` until it
    /// is null or a page comes back empty, appending a symbol's bars when it
    /// spans two pages. (The worker streams page by page instead, through
    /// [`AlpacaClient::bars_page`]; this is for callers that want it all.)
    pub async fn fetch_bars(&self, query: &BarsQuery) -> Result<BarsFetch, AlpacaError> {
        follow_pages("GET bars", |token| async move {
            self.bars_page(query, token.as_deref()).await
        })
        .await
    }

    /// Every bar of one symbol through `GET /v2/stocks/{symbol}/bars`, with
    /// the same pagination rules as [`AlpacaClient::fetch_bars`].
    pub async fn fetch_symbol_bars(&self, symbol: &Symbol, query: &BarsQuery) -> Result<BarsFetch, AlpacaError> {
        follow_pages("GET /v2/stocks/{symbol}/bars", |token| async move {
            self.symbol_bars_page(symbol, query, token.as_deref()).await
        })
        .await
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        api: Api,
        endpoint: &'static str,
        url: &str,
        params: &[(&str, String)],
    ) -> Result<ApiResponse<T>, AlpacaError> {
        let span = tracing::info_span!(
            "alpaca call",
            api = api.as_str(),
            endpoint,
            status = tracing::field::Empty
        );
        self.get_inner(api, endpoint, url, params, &span)
            .instrument(span.clone())
            .await
    }

    async fn get_inner<T: DeserializeOwned>(
        &self,
        api: Api,
        endpoint: &'static str,
        url: &str,
        params: &[(&str, String)],
        span: &tracing::Span,
    ) -> Result<ApiResponse<T>, AlpacaError> {
        let mut credentials = self.credentials.current().await?;
        let mut refreshed = false;
        loop {
            // Every attempt, the one after a key refresh too, takes a token.
            self.gate.admit(api, self.priority).await?;
            let started = std::time::Instant::now();
            let sent = self
                .http
                .get(url)
                .headers(credentials.headers()?)
                .query(params)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    self.gate.observe(
                        api,
                        &CallOutcome {
                            endpoint,
                            status: None,
                            rate: RateLimit::default(),
                            elapsed: started.elapsed(),
                        },
                    );
                    return Err(transport_error(endpoint, &error));
                }
            };
            let status = response.status().as_u16();
            span.record("status", status);
            let rate = RateLimit::from_headers(response.headers());
            let body = response.bytes().await;
            self.gate.observe(
                api,
                &CallOutcome {
                    endpoint,
                    status: Some(status),
                    rate,
                    elapsed: started.elapsed(),
                },
            );
            if matches!(status, 401 | 403) && !refreshed {
                // A rotated key: fetch it again once and repeat the call.
                if let Some(fresh) = self.credentials.refresh(&credentials).await? {
                    tracing::info!(
                        endpoint,
                        status,
                        "Alpaca refused the key; repeating the call with the new key"
                    );
                    credentials = fresh;
                    refreshed = true;
                    continue;
                }
            }
            let body = body.map_err(|e| transport_error(endpoint, &e))?;
            if !(200..300).contains(&status) {
                return Err(status_error(endpoint, status, rate, &body));
            }
            let body = serde_json::from_slice(&body).map_err(|e| body_error(endpoint, &e))?;
            return Ok(ApiResponse { body, rate });
        }
    }
}

/// The one pagination loop of the bar endpoints: asks for pages until the
/// [`PageCursor`] says the read is over (a null token or an empty page).
async fn follow_pages<F, Fut>(endpoint: &'static str, mut page: F) -> Result<BarsFetch, AlpacaError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<ApiResponse<MultiBarsPage>, AlpacaError>>,
{
    let mut fetch = BarsFetch::default();
    let mut cursor = PageCursor::new(None);
    loop {
        let answer = page(cursor.token().map(str::to_owned)).await?;
        fetch.calls += 1;
        fetch.rate = answer.rate;
        let bars = answer.body.bars.unwrap_or_default();
        let empty = bars.values().all(Vec::is_empty);
        for (symbol, mut list) in bars {
            fetch.bars.entry(symbol).or_default().append(&mut list);
        }
        if cursor.advance(endpoint, answer.body.next_page_token, empty)?.is_none() {
            return Ok(fetch);
        }
    }
}

fn normalize_base(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    trimmed.strip_suffix("/v2").unwrap_or(trimmed).to_owned()
}

/// A body that ends early was cut on the way (transient); a complete one
/// that does not parse is the API breaking its schema (permanent).
fn body_error(endpoint: &'static str, error: &serde_json::Error) -> AlpacaError {
    if error.is_eof() {
        AlpacaError::CutBody {
            endpoint,
            detail: clean(&error.to_string()),
        }
    } else {
        bad_body(endpoint, error.to_string())
    }
}

fn bad_body(endpoint: &'static str, detail: impl Into<String>) -> AlpacaError {
    let detail: String = detail.into();
    AlpacaError::BadBody {
        endpoint,
        detail: clean(&detail),
    }
}

fn transport_error(endpoint: &'static str, error: &reqwest::Error) -> AlpacaError {
    if error.is_timeout() {
        return AlpacaError::Timeout { endpoint };
    }
    // Without the URL: it is ours, and the error's Display would repeat it.
    let error = error.without_url_ref();
    AlpacaError::Connect {
        endpoint,
        detail: clean(&error.to_string()),
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// Builds the error for a non-2xx status. The class follows from the status;
/// the body is only mined for a message, and may be HTML or empty.
fn status_error(endpoint: &'static str, status: u16, rate: RateLimit, body: &[u8]) -> AlpacaError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        code: Option<i64>,
        message: Option<String>,
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|b| b.code);
    let message = match parsed.and_then(|b| b.message) {
        Some(message) => clean(&message),
        None if body.is_empty() => "empty body".to_owned(),
        None => format!("non-JSON body of {} bytes", body.len()),
    };
    match status {
        429 => AlpacaError::RateLimited {
            endpoint,
            reset: rate.reset,
        },
        408 | 500..=599 => AlpacaError::Server {
            endpoint,
            status,
            message,
        },
        _ => AlpacaError::Rejected {
            endpoint,
            status,
            code,
            message,
        },
    }
}

/// Keeps an API-supplied string short and printable, so a hostile body
/// cannot flood a log line or forge one.
fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_shows_no_secret() {
        let creds = Credentials::new("AKSECRETKEYID", "very-secret-value");
        let shown = format!("{creds:?} {creds:#?}");
        assert!(!shown.contains("AKSECRETKEYID"));
        assert!(!shown.contains("very-secret-value"));
    }

    #[test]
    fn rate_limit_headers_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Ratelimit-Limit", HeaderValue::from_static("200"));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("X-RateLimit-Reset", HeaderValue::from_static("1800000000"));
        let rate = RateLimit::from_headers(&headers);
        assert_eq!(rate.limit, Some(200));
        assert_eq!(rate.remaining, Some(0));
        assert_eq!(rate.reset.map(|r| r.timestamp()), Some(1_800_000_000));
    }

    #[test]
    fn html_gateway_errors_are_transient_by_status() {
        let e = status_error(
            "GET /v2/assets",
            503,
            RateLimit::default(),
            b"<html><body>Service Unavailable</body></html>",
        );
        assert!(matches!(e, AlpacaError::Server { status: 503, .. }), "{e:?}");
        let e = status_error(
            "GET /v2/assets/{symbol}",
            404,
            RateLimit::default(),
            br#"{"code":40410000,"message":"asset not found for ZZZZ"}"#,
        );
        assert!(
            matches!(
                e,
                AlpacaError::Rejected {
                    status: 404,
                    code: Some(40410000),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn statuses_classify_by_code_whatever_the_body() {
        use crate::class::{Classify, ErrorClass};
        for (status, class) in [
            (408, ErrorClass::Transient),
            (429, ErrorClass::Transient),
            (500, ErrorClass::Transient),
            (502, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (504, ErrorClass::Transient),
            (400, ErrorClass::Permanent),
            (401, ErrorClass::Permanent),
            (403, ErrorClass::Permanent),
            (404, ErrorClass::Permanent),
            (422, ErrorClass::Permanent),
        ] {
            for body in [&b""[..], b"<html>Bad Gateway</html>", br#"{"code":1,"message":"m"}"#] {
                let error = status_error("GET /v2/assets", status, RateLimit::default(), body);
                assert_eq!(error.class(), class, "{status}: {error}");
            }
        }
    }

    #[test]
    fn hostile_messages_are_cut_and_cleaned() {
        let long = format!("line1\nline2{}", "x".repeat(5000));
        let cleaned = clean(&long);
        assert!(!cleaned.contains('\n'));
        assert!(cleaned.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn base_urls_are_normalized() {
        assert_eq!(
            normalize_base("https://paper-api.alpaca.markets/v2/"),
            "https://paper-api.alpaca.markets"
        );
        assert_eq!(normalize_base("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
    }
}
