//! `--metrics-listen ADDR`: `/metrics` in Prometheus's text format (the
//! counters of `wharf_store::metrics`), `/health` 200 only when the
//! database answers and every listener of the process accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wharf_store::Store;
use wharf_store::metrics::metrics;

use crate::waiting::{Ticket, Waiting};

/// Longest request line and headers read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper has to send its request line and headers.
const READ_TIME: Duration = Duration::from_secs(2);
/// Time the answer has to go out.
const WRITE_TIME: Duration = Duration::from_secs(5);
/// Time a health check gives the database and each listener.
const CHECK_TIME: Duration = Duration::from_secs(2);
/// Connections whose request is not read yet, at once, and from one
/// address: past them the oldest of the address holding the most goes
/// ([`crate::waiting`]), so slow or silent clients cannot starve the port
/// and a real scraper, which sends its request at once, is never the one
/// that goes.
const READING: usize = 32;
const READING_PER_ADDRESS: usize = 8;
/// `/metrics` and `/health` answers at once, each its own budget, so a
/// busy `/metrics` never keeps a health check waiting.
const METRICS_AT_ONCE: usize = 4;
const HEALTH_AT_ONCE: usize = 16;
/// Serves `/metrics` and `/health` on `listener` until `shutdown`.
/// `listeners` are the process's own, by name, which `/health` connects to.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    listeners: Vec<(&'static str, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let listeners = Arc::new(listeners);
    let reading = Waiting::new(READING, READING_PER_ADDRESS);
    let budgets = Arc::new(Budgets {
        metrics: Semaphore::new(METRICS_AT_ONCE),
        health: Semaphore::new(HEALTH_AT_ONCE),
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ticket = reading.admit(peer.ip());
        let (store, listeners, budgets) = (store.clone(), listeners.clone(), budgets.clone());
        tokio::spawn(async move {
            answer(stream, ticket, &store, &listeners, &budgets).await;
        });
    }
}
/// The answers' budgets.
struct Budgets {
    metrics: Semaphore,
    health: Semaphore,
}
/// Reads a request (the request line and headers, within [`READ_TIME`]),
/// unless it is ended to make room first.
async fn read_request(stream: &mut tokio::net::TcpStream, ticket: &Ticket) -> Option<Vec<u8>> {
    let mut request = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n")
            && !request.windows(2).any(|w| w == b"\n\n")
        {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                // Closed after the request line: answer what came.
                break;
            }
            if request.len() + n > MAX_REQUEST {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    let read = tokio::select! {
        read = tokio::time::timeout(READ_TIME, read) => read,
        () = ticket.evicted() => return None,
    };
    matches!(read, Ok(Ok(()))).then_some(request)
}
async fn answer(
    mut stream: tokio::net::TcpStream,
    ticket: Ticket,
    store: &Store,
    listeners: &[(&'static str, SocketAddr)],
    budgets: &Budgets,
) {
    let Some(request) = read_request(&mut stream, &ticket).await else {
        return;
    };
    drop(ticket);
    let line = request.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let busy = || {
        (
            "503 Service Unavailable",
            "text/plain",
            "busy answering others; retry in a moment\n".to_owned(),
        )
    };
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => match budgets.metrics.try_acquire() {
            Ok(_permit) => {
                refresh_quota(store).await;
                (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics().encode(),
                )
            }
            Err(_) => busy(),
        },
        ("GET", "/health") => match budgets.health.try_acquire() {
            Ok(_permit) => {
                let (ok, body) = health(store, listeners).await;
                (
                    if ok {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    },
                    "application/json",
                    body,
                )
            }
            Err(_) => busy(),
        },
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics and /health are here\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".into(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(WRITE_TIME, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
/// The quota gauges, read from the database.
async fn refresh_quota(store: &Store) {
    match tokio::time::timeout(CHECK_TIME, store.quota_totals()).await {
        Ok(Ok((used, reserved))) => {
            metrics()
                .quota_used
                .set(i64::try_from(used).unwrap_or(i64::MAX));
            metrics()
                .quota_reserved
                .set(i64::try_from(reserved).unwrap_or(i64::MAX));
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the quota totals"),
        Err(_) => tracing::warn!("metrics: the database did not answer for the quota totals"),
    }
}
/// Whether the database answers and every listener accepts; a JSON body
/// saying which.
async fn health(store: &Store, listeners: &[(&'static str, SocketAddr)]) -> (bool, String) {
    let database = match tokio::time::timeout(CHECK_TIME, store.health()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("failing: {e}"),
        Err(_) => "failing: no answer within 2 s".to_owned(),
    };
    let mut ok = database == "ok";
    let mut parts = vec![format!("\"database\":{}", json_string(&database))];
    for (name, addr) in listeners {
        let target = match addr.ip() {
            ip if ip.is_unspecified() => SocketAddr::new(
                if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                addr.port(),
            ),
            _ => *addr,
        };
        let state =
            match tokio::time::timeout(CHECK_TIME, tokio::net::TcpStream::connect(target)).await {
                Ok(Ok(_)) => "ok".to_owned(),
                Ok(Err(e)) => format!("failing: {e}"),
                Err(_) => "failing: no answer within 2 s".to_owned(),
            };
        ok &= state == "ok";
        parts.push(format!("{}:{}", json_string(name), json_string(&state)));
    }
    (ok, format!("{{{}}}\n", parts.join(",")))
}
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        conn.write_all(request.as_bytes()).await.expect("send");
        let mut said = String::new();
        conn.read_to_string(&mut said).await.expect("read");
        said
    }

    /// Slow clients that send half a request and stop, more than the port's
    /// whole budget and all from the health checker's own address: health
    /// checks and scrapes are still answered, and at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_is_answered_while_slow_clients_hold_the_port() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&format!("sqlite://{}/wharf.db", dir.path().display()))
            .await
            .expect("database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, store, Vec::new(), shutdown.clone()));
        let mut slow = Vec::new();
        for _ in 0..50 {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            conn.write_all(b"GET /hea").await.expect("send");
            slow.push(conn);
        }
        for _ in 0..3 {
            let said = tokio::time::timeout(Duration::from_secs(1), get(addr, "/health"))
                .await
                .expect("/health answered within a second");
            assert!(said.starts_with("HTTP/1.1 200 OK"), "{said}");
            assert!(said.contains("\"database\":\"ok\""), "{said}");
        }
        let said = get(addr, "/metrics").await;
        assert!(said.starts_with("HTTP/1.1 200 OK"), "{said}");
        // The slow ones are closed: ended for room, or past their 2 s.
        let mut buf = [0u8; 64];
        for mut conn in slow {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("closed within the read deadline");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        shutdown.cancel();
    }
}
