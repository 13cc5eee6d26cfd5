//! The HTTP side of `inspector serve`: `GET /metrics` and `GET /healthz`.
//! A scrape is a request to the loop that owns the probes (over a channel),
//! so the kernel is read once per scrape, by one owner.
//!
//! The endpoint is reachable by every local user (and by the network when
//! it listens beyond loopback), so it bounds what a client can hold: at
//! most [`Limits::max_connections`] connections (a new one closes the
//! connection idle the longest; with none idle, the one answering for the
//! longest), a request's
//! headers must arrive within [`Limits::header_timeout`], an idle
//! keep-alive connection is closed after [`Limits::idle_timeout`], and a
//! connection's buffers are small and fixed. TLS and basic authentication
//! come from `--web-config` ([`super::web`]).

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{Notify, mpsc, oneshot},
};

use super::web::WebConfig;

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (`Accept: application/openmetrics-text`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4: everything else.
    Text,
}

impl Format {
    /// From the `Accept` header: OpenMetrics only when asked for by name
    /// (Prometheus asks for it first, with the text format as a fallback).
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// One scrape: the format wanted and where the body goes.
pub type Scrape = (Format, oneshot::Sender<String>);

/// What a client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Scrapers are few: a Prometheus pair, an agent, a person.
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            // Longer than Prometheus' default scrape interval (60 s) plus
            // some: a scraper's connection is kept between scrapes.
            idle_timeout: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Connections closed or refused by the bounds above, for the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Closed to make room for a new one (the longest idle).
    pub evicted: AtomicU64,
    /// Refused: every connection was busy.
    pub refused: AtomicU64,
    /// Closed for sending no request in time (headers, TLS handshake, idle).
    pub timed_out: AtomicU64,
    /// Requests refused for lacking valid credentials.
    pub unauthorized: AtomicU64,
}

/// One open connection as the accept loop sees it.
struct Conn {
    id: u64,
    /// No request is being answered on it.
    idle: Arc<AtomicBool>,
    /// When it last finished a request (or was opened).
    since: Arc<Mutex<Instant>>,
    close: Arc<Notify>,
}

/// Shared by every connection's requests.
struct Shared {
    scrapes: mpsc::Sender<Scrape>,
    web: Option<Arc<WebConfig>>,
    stats: Arc<Stats>,
}

/// Serves until `shutdown` resolves, then lets requests in flight finish
/// for a moment.
pub async fn serve(
    listener: TcpListener,
    scrapes: mpsc::Sender<Scrape>,
    web: Option<Arc<WebConfig>>,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = web
        .as_ref()
        .and_then(|w| w.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    let shared = Arc::new(Shared {
        scrapes,
        web,
        stats: stats.clone(),
    });
    let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                // Out of descriptors or memory for a moment: the bound on
                // connections frees some soon; do not spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(conn) = admit(&conns, &stats, limits.max_connections, &mut next_id) else {
            drop(stream);
            continue;
        };
        let conns = conns.clone();
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let id = conn.id;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => run_conn(s, &conn, shared, limits).await,
                        Ok(Err(_)) => {}
                        Err(_) => {
                            shared.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                None => run_conn(stream, &conn, shared, limits).await,
            }
            if let Ok(mut c) = conns.lock() {
                c.retain(|c| c.id != id);
            }
        });
        // The new connection reads the request it may already hold before
        // the next one is admitted: in a flood of connections queued behind
        // it, a scrape would otherwise be evicted as idle before it was
        // ever read (the loop accepts a whole backlog in one go).
        tokio::task::yield_now().await;
    }
    // Requests in flight get a moment to finish; idle connections close.
    if let Ok(c) = conns.lock() {
        for conn in c.iter() {
            conn.close.notify_one();
        }
    }
    Ok(())
}

/// Makes room for one more connection: below the bound it is admitted;
/// at it, the connection idle the longest is told to close, or with none
/// idle the one answering for the longest; `None` only with no room at
/// all (a bound of 0).
fn admit(
    conns: &Mutex<Vec<Conn>>,
    stats: &Stats,
    max: usize,
    next_id: &mut u64,
) -> Option<ConnHandle> {
    let mut c = conns.lock().ok()?;
    if c.len() >= max {
        let since = |c: &Conn| c.since.lock().map_or_else(|_| Instant::now(), |t| *t);
        // The longest idle; with none idle, the one answering for the
        // longest (a client pipelining requests and reading no answer
        // holds its slot until it goes): a flood of either never locks a
        // scrape out.
        let oldest = c
            .iter()
            .enumerate()
            .filter(|(_, c)| c.idle.load(Ordering::Relaxed))
            .min_by_key(|(_, c)| since(c))
            .or_else(|| c.iter().enumerate().min_by_key(|(_, c)| since(c)))
            .map(|(i, _)| i);
        match oldest {
            Some(i) => {
                let old = c.swap_remove(i);
                old.close.notify_one();
                stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
    *next_id += 1;
    let handle = ConnHandle {
        id: *next_id,
        idle: Arc::new(AtomicBool::new(true)),
        since: Arc::new(Mutex::new(Instant::now())),
        close: Arc::new(Notify::new()),
    };
    c.push(Conn {
        id: handle.id,
        idle: handle.idle.clone(),
        since: handle.since.clone(),
        close: handle.close.clone(),
    });
    Some(handle)
}

/// A connection's side of its [`Conn`].
struct ConnHandle {
    id: u64,
    idle: Arc<AtomicBool>,
    since: Arc<Mutex<Instant>>,
    close: Arc<Notify>,
}

/// Serves one connection's requests until the client leaves, a bound
/// closes it, or the accept loop asks it to go.
async fn run_conn<S>(stream: S, conn: &ConnHandle, shared: Arc<Shared>, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (idle, since) = (conn.idle.clone(), conn.since.clone());
    let service = service_fn(move |req| {
        let (shared, idle, since) = (shared.clone(), idle.clone(), since.clone());
        async move {
            idle.store(false, Ordering::Relaxed);
            let resp = answer(req, &shared).await;
            if let Ok(mut t) = since.lock() {
                *t = Instant::now();
            }
            idle.store(true, Ordering::Relaxed);
            Ok::<_, Infallible>(resp)
        }
    });
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        // One request's headers; pipelined requests wait in the socket.
        .max_buf_size(16 << 10)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(http);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let closing = loop {
        tokio::select! {
            _ = &mut http => return,
            () = conn.close.notified() => break true,
            _ = check.tick() => {
                let idle_for = conn.since.lock().map_or(Duration::ZERO, |t| t.elapsed());
                if conn.idle.load(Ordering::Relaxed) && idle_for >= limits.idle_timeout {
                    break false;
                }
            }
        }
    };
    if !closing {
        conn.close.notify_one();
    }
    // Asked to go: an idle connection closes at once; one that is answering
    // gets a moment, then is dropped (a client that does not read its
    // answers holds nothing for long).
    http.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut http).await;
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let mut resp = route(req, shared).await;
    if let Some(web) = &shared.web {
        for (k, v) in &web.headers {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
    }
    resp
}

async fn route(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if let Some(auth) = shared.web.as_ref().and_then(|w| w.auth.as_ref()) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(header::HeaderValue::as_bytes);
        if !auth.check(given).await {
            shared.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"inspector\""),
            );
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::from_accept(accept);
            let (tx, rx) = oneshot::channel();
            if shared.scrapes.send((format, tx)).await.is_err() {
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n",
                );
            }
            match rx.await {
                Ok(body) => respond(StatusCode::OK, format.content_type(), body),
                Err(_) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "shutting down\n",
                ),
            }
        }
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: GET /metrics or /healthz\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
