//! The node's HTTP endpoints on `metrics_listen`: `/metrics` (Prometheus
//! text), `/health` (the process and its node task are alive) and
//! `/ready` (a leader is known and this node has caught up), with the
//! status codes load balancers and Kubernetes probes understand: 200 when
//! yes, 503 when no.
//!
//! HTTP parsing is hyper's. Anyone who reaches the port may connect, so
//! the server bounds what a client can make it hold: a few connections at
//! once, one request each, headers within a few seconds, small request
//! heads, and bodies are never read.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use trexlock_lease::{NodeHandle, NodeStatus, observe};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted (hyper's minimum buffer).
const MAX_HEAD_BYTES: usize = 8192;

/// What the endpoints report on.
#[derive(Clone)]
pub struct Endpoints {
    node: NodeHandle,
    registry: Arc<prometheus::Registry>,
}

impl Endpoints {
    /// Endpoints for `node`, its figures registered in a registry of
    /// their own.
    pub fn new(node: NodeHandle) -> Result<Endpoints, String> {
        let registry = prometheus::Registry::new();
        observe::register(&registry, &node).map_err(|e| e.to_string())?;
        Ok(Endpoints {
            node,
            registry: Arc::new(registry),
        })
    }

    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        }
        let status = self.node.status();
        match request.uri().path() {
            "/metrics" => match observe::encode(&self.registry) {
                Ok(body) => {
                    let mut response = text(StatusCode::OK, body);
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(prometheus::TEXT_FORMAT),
                    );
                    response
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            },
            "/health" => match &status.stopped {
                None => text(StatusCode::OK, "ok\n".into()),
                Some(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("stopped: {reason}\n"),
                ),
            },
            "/ready" => match not_ready(&status) {
                None => text(StatusCode::OK, "ready\n".into()),
                Some(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "try /metrics, /health or /ready\n".into(),
            ),
        }
    }
}

/// Why `status` is not ready, in words; `None` when it is.
fn not_ready(status: &NodeStatus) -> Option<String> {
    if status.is_ready() {
        return None;
    }
    Some(if let Some(reason) = &status.stopped {
        format!("stopped: {reason}")
    } else if status.removed {
        "removed from the membership".into()
    } else if status.relearning {
        "relearning (started with an empty journal), catching up".into()
    } else if status.learner {
        "a learner of the membership: it does not vote until promoted".into()
    } else if status.leader.is_none() {
        "no leader known".into()
    } else {
        format!(
            "{} slots behind the leader",
            status.leader_committed.saturating_sub(status.applied)
        )
    })
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, endpoints: Endpoints) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: try again shortly rather
                // than spin.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = endpoints.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                // One request per connection: an idle kept-alive connection
                // would hold one of the few slots.
                .keep_alive(false)
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}
