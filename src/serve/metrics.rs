//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`. Binds loopback unless configured
//! otherwise; a slow client is dropped after 5 s without delaying anyone (see [`HttpServer`]).

use crate::error::Error;
use crate::serve::http::{HttpServer, Limits, Response};
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer(HttpServer);

impl MetricsServer {
    /// Binds `addr` and serves `registry`. `/readyz` answers 200 once `ready` is set.
    pub fn start(addr: SocketAddr, registry: Registry, ready: Arc<AtomicBool>) -> Result<MetricsServer, Error> {
        let handler = Arc::new(move |method: &str, target: &str| handle(method, target, &registry, &ready));
        HttpServer::start(addr, "lobsentry-metrics", Limits::default(), handler).map(MetricsServer).map_err(|e| {
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

fn handle(method: &str, target: &str, registry: &Registry, ready: &AtomicBool) -> Response {
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => Response::new(200, prometheus::TEXT_FORMAT, crate::metrics::render(registry)),
        ("GET", "/healthz") => Response::new(200, "text/plain", "ok\n"),
        ("GET", "/readyz") if ready.load(Ordering::Relaxed) => Response::new(200, "text/plain", "ready\n"),
        ("GET", "/readyz") => Response::new(503, "text/plain", "starting\n"),
        ("GET", _) => Response::new(404, "text/plain", "not found: try /metrics, /healthz, /readyz\n"),
        _ => Response::new(405, "text/plain", "only GET\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

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

    /// Slow clients (a request head that never ends) do not delay /healthz, and are dropped after
    /// the header timeout.
    #[test]
    fn slow_clients_do_not_delay_health_checks() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Registry::new(), Arc::default()).unwrap();
        let addr = server.addr();
        let mut slow: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
                s
            })
            .collect();
        let started = Instant::now();
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        assert!(started.elapsed() < Duration::from_secs(2), "/healthz took {:?}", started.elapsed());
        // The slow ones are cut off after the 5 s header timeout (a 408 or a closed connection).
        let s = &mut slow[0];
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(15), "cut after {waited:?}");
    }
}
