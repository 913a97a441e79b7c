//! The metrics endpoint: a small HTTP server for GET /metrics.
//!
//! The sampler renders once per interval and publishes the bytes through a
//! `watch` channel; the HTTP side only clones them. Requests are read with
//! a deadline and a size cap, connections are capped, so a slow or hostile
//! client can never hold up the sampler.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

const MAX_REQUEST: usize = 8192;
const READ_DEADLINE: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 32;

/// "9100" or ":9100" binds 127.0.0.1; "0.0.0.0:9100" or "[::]:9100" as given.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = s.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("{s:?} is not an address: use PORT (binds 127.0.0.1), HOST:PORT or [V6]:PORT")
    })
}

/// Latest rendered metrics.
pub(crate) struct Exporter {
    tx: watch::Sender<Bytes>,
    pub addr: SocketAddr,
}

impl Exporter {
    /// Binds and starts serving (needs a tokio runtime).
    pub(crate) async fn start(addr: SocketAddr) -> Result<Exporter> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("--prometheus: cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(Bytes::from_static(b"# dropscope: no sample yet\n"));
        tokio::spawn(serve(listener, rx));
        Ok(Exporter { tx, addr })
    }

    pub(crate) fn publish(&self, text: String) {
        self.tx.send_replace(Bytes::from(text));
    }
}

async fn serve(listener: TcpListener, rx: watch::Receiver<Bytes>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Over the cap: close at once rather than queue.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let rx = rx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_DEADLINE * 2, handle(sock, rx)).await;
            drop(permit);
        });
    }
}

async fn handle(mut sock: TcpStream, rx: watch::Receiver<Bytes>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            break i;
        }
        if buf.len() >= MAX_REQUEST {
            return respond(
                &mut sock,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            )
            .await;
        }
        let n = match tokio::time::timeout(READ_DEADLINE, sock.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(()),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !parts.next().unwrap_or("").starts_with("HTTP/") {
        return respond(
            &mut sock,
            "400 Bad Request",
            "text/plain",
            b"bad request\n",
            false,
        )
        .await;
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut sock,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
            false,
        )
        .await;
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let body = rx.borrow().clone();
            respond(
                &mut sock,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
            .await
        }
        "/" => {
            respond(
                &mut sock,
                "200 OK",
                "text/plain",
                b"dropscope: metrics at /metrics\n",
                head_only,
            )
            .await
        }
        _ => {
            respond(
                &mut sock,
                "404 Not Found",
                "text/plain",
                b"not found: try /metrics\n",
                head_only,
            )
            .await
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn respond(
    sock: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    if !head_only {
        sock.write_all(body).await?;
    }
    sock.shutdown().await?;
    if !status.starts_with('2') {
        // Read what the client is still sending (briefly, boundedly): closing
        // with unread data would reset the connection and lose the answer.
        let mut sink = [0u8; 4096];
        let mut left = 1usize << 20;
        while left > 0 {
            match tokio::time::timeout(Duration::from_millis(500), sock.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }
    Ok(())
}
