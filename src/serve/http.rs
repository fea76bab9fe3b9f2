//! The HTTP/1.1 server under `/metrics` and the query API, on hyper with a small tokio runtime of
//! its own: at most `max_connections` connections at a time (the others wait in the listen backlog,
//! using no thread), a request head must arrive within `header_timeout` (a slow client is dropped,
//! and never delays another), handlers that wait run on a bounded pool of blocking threads. One
//! request per connection. Stopped, and its thread joined, when dropped.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// An answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Response {
    /// A response.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Response {
        Response { status, content_type, body: body.into() }
    }
}

/// What answers a request: (method, target with its query string) -> response.
pub type Handler = Arc<dyn Fn(&str, &str) -> Response + Send + Sync>;

/// The server's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest wait for a request's head.
    pub header_timeout: Duration,
    /// The handler waits (runs on the blocking pool, at most `max_connections` threads).
    pub blocking: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 64, header_timeout: Duration::from_secs(5), blocking: false }
    }
}

/// A running server.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer").field("addr", &self.addr).finish()
    }
}

impl HttpServer {
    /// Binds `addr` and serves `handler` within `limits` on a thread named `name`.
    pub fn start(addr: SocketAddr, name: &str, limits: Limits, handler: Handler) -> std::io::Result<HttpServer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(limits.max_connections.max(1))
            .thread_name(format!("{name}-pool"))
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            let std_listener = std::net::TcpListener::bind(addr)?;
            std_listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            runtime.block_on(async move {
                let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
                loop {
                    let permit = tokio::select! {
                        _ = &mut stopped => break,
                        p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    };
                    let stream = tokio::select! {
                        _ = &mut stopped => break,
                        s = listener.accept() => match s { Ok((s, _)) => s, Err(_) => continue },
                    };
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            async move {
                                let method = request.method().as_str().to_string();
                                let target = request.uri().to_string();
                                let response = if limits.blocking {
                                    tokio::task::spawn_blocking(move || handler(&method, &target))
                                        .await
                                        .unwrap_or_else(|_| Response::new(500, "text/plain", "internal error\n"))
                                } else {
                                    handler(&method, &target)
                                };
                                hyper::Response::builder()
                                    .status(response.status)
                                    .header("Content-Type", response.content_type)
                                    .body(Full::new(Bytes::from(response.body)))
                            }
                        });
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(limits.header_timeout)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        drop(permit);
                    });
                }
            });
            // Requests still waiting on a blocking handler end with the runtime.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(HttpServer { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
