//! The HTTP server and its hardening, from the ecosystem's parts: hyper's
//! own connection settings (a client must send its headers within
//! `SIGNAL9_API_HEADER_TIMEOUT_SECS`, so slow or idle connections hold
//! nothing), tower's concurrency limit with load shedding (503 +
//! `Retry-After` at once instead of a queue), tower-http's request timeout,
//! caught panics and security headers, and a graceful stop that lets
//! requests in flight finish.

use axum::extract::connect_info::ConnectInfo;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceExt as _;

use signal9_shared::shutdown::Shutdown;

/// The largest request body read (the console's forms are a few hundred bytes).
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// The console's pages need their own inline styles and nothing else: no
/// script, no frame, no form posted elsewhere.
pub(crate) const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How long requests in flight get to finish after a stop.
const DRAIN: Duration = Duration::from_secs(30);

/// The answer when the concurrency limit sheds a request (or a layer
/// fails): 503 with `Retry-After`, in the API's error shape.
pub(crate) async fn shed(error: tower::BoxError) -> Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
        return crate::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the API is serving as many requests as it may (SIGNAL9_API_MAX_CONCURRENT); retry shortly",
        )
        .retry_after(1)
        .into_response();
    }
    crate::ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "the request failed", &error).into_response()
}

/// `router` with the security headers every answer carries (set where a
/// handler did not set its own).
pub(crate) fn with_security_headers(router: Router) -> Router {
    use tower_http::set_header::SetResponseHeaderLayer as Set;
    router
        .layer(Set::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(Set::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(Set::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(Set::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// Serves `app` on `listener` until `shutdown`: each connection with the
/// header read timeout and the peer's address (`ConnectInfo`, for the
/// console's login throttle); after the stop, requests in flight get
/// [`DRAIN`] to finish.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    mut shutdown: Shutdown,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = signal9_shared::backoff::Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(error) => {
                    // Out of descriptors, most likely: wait, do not spin.
                    tracing::warn!(%error, "Accepting a connection failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
            () = shutdown.recv() => break,
        };
        let service = app
            .clone()
            .map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
                request
            });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper's header timer starts with the request's first byte, and
            // the protocol detection before it waits for bytes with no
            // timer: a client that sends nothing gets the same time to
            // start as to finish its headers.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let connection = builder
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .into_owned();
            // A client that went away or timed out is no error of ours.
            let _ = watcher.watch(connection).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("Requests still in flight after the drain; stopping anyway");
    }
}
