//! The metrics endpoint: `GET /metrics` on `[daemon] metrics`, HTTP/1
//! (hyper), one short connection at a time per client, until shutdown.
//! Each scrape first sets the gauges of state from the store (the
//! outbox's queue) and the mailboxes' live records, then encodes this
//! daemon's registry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Shared;
use crate::health::Link;
use crate::shutdown::stopped;

/// How long one connection may take, request and answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers scrapes on `listener` until `shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    sh: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let sh = sh.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| answer(sh.clone(), req));
                        let conn = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service);
                        match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection failed"),
                            Err(_) => tracing::debug!("metrics connection timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: do not spin.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    conns.shutdown().await;
}

async fn answer(
    sh: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        ));
    }
    // The store blocks: off the async threads.
    let scraped = tokio::task::spawn_blocking(move || {
        refresh(&sh);
        sh.metrics.encode()
    })
    .await;
    Ok(match scraped {
        Ok(Ok(text)) => reply(StatusCode::OK, OPENMETRICS, text),
        Ok(Err(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("encoding the metrics: {e}\n"),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("the scrape failed: {e}\n"),
        ),
    })
}

/// Sets the gauges of state: the outbox's queue as stored, and whether
/// each mailbox is connected.
fn refresh(sh: &Shared) {
    match sh.store.outbox_summary() {
        Ok(q) => sh.metrics.outbox(q.pending, q.retrying, q.undeliverable),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the outbox"),
    }
    for (m, live) in sh.settings.mailboxes.iter().zip(&sh.live) {
        let state = live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state;
        let up = matches!(state, Link::Connected | Link::Idle | Link::Polling);
        sh.metrics.mailbox_up(&m.name, up);
    }
}
