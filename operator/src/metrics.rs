//! Prometheus metrics of the operator, in the text exposition format, served with `/healthz` on
//! a small HTTP endpoint. Hand-rolled: five series do not justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds (seconds) of the repair-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    repairs: AtomicU64,
    workers_lost: AtomicU64,
    server_restarts: AtomicU64,
    latency: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, kind: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }

    /// A repair of `lost` workers, `latency` from the pass that saw the loss to the repaired
    /// layout being written.
    pub fn repaired(&self, lost: usize, latency: Duration) {
        self.repairs.fetch_add(1, Ordering::Relaxed);
        self.workers_lost.fetch_add(lost as u64, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let mut h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        for (bound, count) in LATENCY_BUCKETS.iter().zip(h.counts.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn server_restarted(&self) {
        self.server_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            &mut out,
            "anyk_reconciles_total",
            "Reconcile passes.",
            self.reconciles.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP anyk_reconcile_errors_total Failed reconcile passes by kind.\n# TYPE anyk_reconcile_errors_total counter"
        );
        for (kind, n) in self.errors.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = writeln!(out, "anyk_reconcile_errors_total{{kind=\"{kind}\"}} {n}");
        }
        counter(
            &mut out,
            "anyk_repairs_total",
            "Layout repairs after lost workers.",
            self.repairs.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "anyk_workers_lost_total",
            "Worker pods found lost.",
            self.workers_lost.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "anyk_server_restarts_total",
            "Parameter-server pods replaced.",
            self.server_restarts.load(Ordering::Relaxed),
        );
        let h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let name = "anyk_repair_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From the pass that saw a loss to the repaired layout written.\n# TYPE {name} histogram"
        );
        for (bound, count) in LATENCY_BUCKETS.iter().zip(h.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            h.count, h.sum, h.count
        );
        out
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the task is dropped (binding is
/// the caller's, so a bad address fails the operator's start, not a background task).
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics endpoint listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let Ok(n) = stream.read(&mut request).await else {
                return;
            };
            let line = String::from_utf8_lossy(&request[..n]);
            let (status, body) = match line.split_whitespace().nth(1) {
                Some("/metrics") => ("200 OK", metrics.render()),
                Some("/healthz") => ("200 OK", "ok\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_errors_and_the_latency_histogram() {
        let m = Metrics::default();
        m.reconciled();
        m.reconciled();
        m.failed("apply");
        m.repaired(2, Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains("anyk_reconciles_total 2\n"), "{text}");
        assert!(text.contains("anyk_reconcile_errors_total{kind=\"apply\"} 1\n"));
        assert!(text.contains("anyk_workers_lost_total 2\n"));
        assert!(text.contains("anyk_repair_duration_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(text.contains("anyk_repair_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("anyk_repair_duration_seconds_count 1\n"));
    }
}
