//! A small HTTP/1.1 server for `/metrics` (Prometheus text format), `/healthz` and `/readyz`.
//! Binds loopback unless configured otherwise; one thread; one request per connection.

use crate::error::Error;
use crate::serve::http::{read_request, respond, HttpServer};
use prometheus::Registry;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer(HttpServer);

impl MetricsServer {
    /// Binds `addr` and serves `registry`. `/readyz` answers 200 once `ready` is set.
    pub fn start(addr: SocketAddr, registry: Registry, ready: Arc<AtomicBool>) -> Result<MetricsServer, Error> {
        let handler = Arc::new(move |mut stream: TcpStream| {
            let _ = handle(&mut stream, &registry, &ready);
        });
        HttpServer::start(addr, "lobsentry-metrics", false, handler).map(MetricsServer).map_err(|e| {
            Error::Io(format!(
                "metrics: cannot listen on {addr}: {e} (set metrics.address or --metrics-addr, or metrics.enabled = false)"
            ))
        })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }
}

fn handle(stream: &mut TcpStream, registry: &Registry, ready: &AtomicBool) -> std::io::Result<()> {
    let (method, path) = read_request(stream)?;
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method.as_str(), path) {
        ("GET", "/metrics") => ("200 OK", prometheus::TEXT_FORMAT, crate::metrics::render(registry)),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if ready.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ready\n".to_string()),
        ("GET", "/readyz") => ("503 Service Unavailable", "text/plain", "starting\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics, /healthz, /readyz\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    respond(stream, status, content_type, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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
