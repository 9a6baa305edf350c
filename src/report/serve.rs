//! The status endpoint's HTTP server (hyper, HTTP/1.1): `GET /status` and
//! `GET /metrics`, with limits a stranger cannot get around:
//! - at most [`MAX_CONNECTIONS`] connections at once (more are closed at
//!   once), a request head of at most 8 KiB (hyper's smallest buffer;
//!   longer heads are refused with 431), [`HEAD_TIMEOUT`] to send it and
//!   [`CONNECTION_TIMEOUT`] for the whole connection;
//! - `accept` failing for want of descriptors pauses instead of spinning
//!   ([`crate::listen`]);
//! - with a password (required off loopback), every request must carry it
//!   as HTTP Basic authentication (any user name).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::{debug, error, info};

use crate::listen::Acceptor;

/// Connections served at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one connection may stay open, however busy.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's read buffer, its smallest: the longest request head taken.
const MAX_HEAD_BYTES: usize = 8192;

/// What a request is answered with: status, content type, body.
pub type Page = (StatusCode, &'static str, String);

/// The running endpoint; stops when dropped.
pub struct Endpoint {
    task: tokio::task::JoinHandle<()>,
    pub address: SocketAddr,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `pages` (a path to its page) on `listen`, asking for `password`
/// when one is given. Logs and returns `None` when the address cannot be
/// bound. Must be called inside the runtime.
pub fn serve(
    listen: SocketAddr,
    password: Option<&str>,
    pages: impl Fn(&str) -> Page + Send + Sync + 'static,
) -> Option<Endpoint> {
    let bound = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .and_then(tokio::net::TcpListener::from_std);
    let listener = match bound {
        Ok(listener) => listener,
        Err(e) => {
            error!(message = "Status endpoint not started; fitedge status and /metrics are off.", address = %listen, error = %e, stage = "status");
            return None;
        }
    };
    let mut acceptor = Acceptor::new(listener, "status endpoint");
    let address = acceptor.local_addr().unwrap_or(listen);
    info!(message = "Status endpoint listening.", address = %address, password = password.is_some());
    let expected = password.map(|p| format!("Basic {}", basic("fitedge", p)));
    let site = Arc::new(Site {
        pages: Box::new(pages),
        expected,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = acceptor.accept().await;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(message = "Status connection refused: too many open.", peer = %peer);
                continue;
            };
            let site = site.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let site = site.clone();
                    async move { Ok::<_, Infallible>(site.answer(&request)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                    debug!(message = "Status connection closed: open too long.", peer = %peer, error = %e);
                }
                drop(slot);
            });
        }
    });
    Some(Endpoint { task, address })
}

struct Site {
    pages: Box<dyn Fn(&str) -> Page + Send + Sync>,
    /// The `Authorization` header a request must carry, when a password
    /// is set.
    expected: Option<String>,
}

impl Site {
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if let Some(expected) = &self.expected {
            let given = request
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(given.ct_eq(expected.as_bytes())) {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(hyper::header::WWW_AUTHENTICATE, "Basic realm=\"fitedge\"")
                    .body(Full::new(Bytes::from_static(
                        b"the status endpoint asks for its password ([status] password_file)\n",
                    )))
                    .unwrap_or_default();
            }
        }
        let (status, content_type, body) = match request.method() {
            &hyper::Method::GET | &hyper::Method::HEAD => (self.pages)(request.uri().path()),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "only GET\n".into(),
            ),
        };
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    }
}

/// `user:password` in base64, as HTTP Basic authentication sends it.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
