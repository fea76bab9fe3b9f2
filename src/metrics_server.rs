//! A small HTTP/1.1 server for `/metrics` (Prometheus text format), `/healthz` and `/readyz`.
//! Binds loopback unless configured otherwise; one thread; one request per connection.

use crate::error::Error;
use prometheus::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `registry`. `/readyz` answers 200 once `ready` is set.
    pub fn start(addr: SocketAddr, registry: Registry, ready: Arc<AtomicBool>) -> Result<MetricsServer, Error> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            Error::Io(format!(
                "metrics: cannot listen on {addr}: {e} (set metrics.address or --metrics-addr, or metrics.enabled = false)"
            ))
        })?;
        let addr = listener.local_addr().map_err(|e| Error::Io(format!("metrics: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lobsentry-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop_flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = handle(stream, &registry, &ready);
                    }
                }
            })
            .map_err(|e| Error::Io(format!("metrics: cannot start the server thread: {e}")))?;
        Ok(MetricsServer { addr, stop, thread: Some(thread) })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut stream: TcpStream, registry: &Registry, ready: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || buf[..len].windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", prometheus::TEXT_FORMAT, crate::metrics::render(registry)),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if ready.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ready\n".to_string()),
        ("GET", "/readyz") => ("503 Service Unavailable", "text/plain", "starting\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics, /healthz, /readyz\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_health_and_readiness() {
        let registry = Registry::new();
        let m = crate::metrics::PipelineMetrics::register_into(&registry, "synthetic").unwrap();
        m.windows.inc();
        let ready = Arc::new(AtomicBool::new(false));
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), registry, ready.clone()).unwrap();
        let addr = server.addr();
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").contains("lobsentry_window_emitted_total 1"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        let taken = MetricsServer::start(addr, Registry::new(), ready);
        assert!(taken.unwrap_err().to_string().contains("cannot listen"));
    }
}
