//! `--prometheus ADDR`: the latest report in Prometheus' text format.
//!
//! The sampler renders once per interval and publishes the bytes through a
//! `watch` channel; the HTTP side only clones them. Requests are read with
//! a deadline and a size cap, connections are capped, so a slow or hostile
//! client can never hold up the sampler.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

use crate::report::{Report, taxonomy::AttackClass};

/// Drop series kept; the rest are summed into iface="other".
const MAX_DROP_SERIES: usize = 512;
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

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A metric-name fragment: [a-z0-9_] only.
fn metric_part(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Extra figures the report does not carry.
#[derive(Default)]
pub(crate) struct Extra {
    pub hook_runs_dropped: u64,
    pub blocklist_entries: Option<usize>,
}

/// Renders one report.
pub(crate) fn render(r: &Report, extra: &Extra) -> String {
    let mut s = String::with_capacity(8192);
    let family = |s: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };

    family(
        &mut s,
        "dropscope_build_info",
        "gauge",
        "dropscope's version.",
    );
    let _ = writeln!(
        s,
        "dropscope_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    // Drops per (reason, iface): bounded, the smallest folded into "other".
    family(
        &mut s,
        "dropscope_drops_total",
        "counter",
        "Packets the kernel dropped (kfree_skb), by reason, category and interface.",
    );
    let mut rows: Vec<_> = r.drops.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.total));
    let mut other: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (i, d) in rows.iter().enumerate() {
        if i < MAX_DROP_SERIES {
            let _ = writeln!(
                s,
                "dropscope_drops_total{{reason=\"{}\",category=\"{}\",iface=\"{}\"}} {}",
                esc(&d.reason),
                d.category,
                esc(&d.iface),
                d.total
            );
        } else {
            *other
                .entry((d.reason.as_str(), d.category.as_str()))
                .or_default() += d.total;
        }
    }
    for ((reason, cat), v) in other {
        let _ = writeln!(
            s,
            "dropscope_drops_total{{reason=\"{}\",category=\"{cat}\",iface=\"other\"}} {v}",
            esc(reason)
        );
    }

    // NIC, driver and backlog counters, with the kernel's own values.
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &r.counters {
        if let Some(stat) = c.counter.strip_prefix("ethtool:") {
            if crate::sys::nic::is_loss_stat(stat) {
                by_name
                    .entry("dropscope_nic_ethtool_total".into())
                    .or_default()
                    .push(format!(
                        "{{iface=\"{}\",stat=\"{}\"}} {}",
                        esc(&c.iface),
                        esc(stat),
                        c.value
                    ));
            }
        } else if c.iface == "softnet" {
            by_name
                .entry(format!(
                    "dropscope_softnet_{}_total",
                    metric_part(&c.counter)
                ))
                .or_default()
                .push(format!(" {}", c.value));
        } else {
            by_name
                .entry(format!("dropscope_iface_{}_total", metric_part(&c.counter)))
                .or_default()
                .push(format!("{{iface=\"{}\"}} {}", esc(&c.iface), c.value));
        }
    }
    for (name, lines) in by_name {
        let help = if name.starts_with("dropscope_softnet") {
            "Per-CPU backlog counter from /proc/net/softnet_stat, summed over CPUs."
        } else if name.starts_with("dropscope_nic_ethtool") {
            "Driver loss statistic (ethtool -S)."
        } else {
            "Interface counter (/proc/net/dev, sysfs), the kernel's value."
        };
        family(&mut s, &name, "counter", help);
        for l in lines {
            let _ = writeln!(s, "{name}{l}");
        }
    }

    // What XDP saw.
    family(
        &mut s,
        "dropscope_xdp_packets_total",
        "counter",
        "Packets seen by dropscope's XDP program.",
    );
    for i in &r.interfaces {
        let _ = writeln!(
            s,
            "dropscope_xdp_packets_total{{iface=\"{}\"}} {}",
            esc(&i.iface),
            i.total.packets
        );
    }
    family(
        &mut s,
        "dropscope_xdp_bytes_total",
        "counter",
        "Bytes seen by dropscope's XDP program.",
    );
    for i in &r.interfaces {
        let _ = writeln!(
            s,
            "dropscope_xdp_bytes_total{{iface=\"{}\"}} {}",
            esc(&i.iface),
            i.total.bytes
        );
    }
    family(
        &mut s,
        "dropscope_iface_pps",
        "gauge",
        "Packets per second seen by XDP, last interval.",
    );
    for i in &r.interfaces {
        let _ = writeln!(
            s,
            "dropscope_iface_pps{{iface=\"{}\"}} {}",
            esc(&i.iface),
            i.pps
        );
    }

    // Attacks: every class on every watched interface, 0 or 1, so alerts
    // can use the series before the first attack.
    family(
        &mut s,
        "dropscope_attack_active",
        "gauge",
        "1 while an attack of this class is in progress on the interface.",
    );
    for i in &r.interfaces {
        for &class in AttackClass::ALL {
            let on = r
                .attacks
                .iter()
                .any(|a| a.iface == i.iface && a.class == class);
            let _ = writeln!(
                s,
                "dropscope_attack_active{{class=\"{class}\",iface=\"{}\"}} {}",
                esc(&i.iface),
                on as u8
            );
        }
    }
    family(
        &mut s,
        "dropscope_attack_pps",
        "gauge",
        "Packets per second of an attack in progress.",
    );
    for a in &r.attacks {
        let _ = writeln!(
            s,
            "dropscope_attack_pps{{class=\"{}\",iface=\"{}\"}} {}",
            a.class,
            esc(&a.iface),
            a.pps
        );
    }

    // Per-source series: the top-N only (bounded by --top).
    family(
        &mut s,
        "dropscope_source_pps",
        "gauge",
        "Packets per second of the top sources (top-N only).",
    );
    for src in &r.top_sources {
        let _ = writeln!(
            s,
            "dropscope_source_pps{{source=\"{}\",iface=\"{}\"}} {}",
            esc(&src.address),
            esc(&src.iface),
            src.pps
        );
    }
    if let Some(e) = &r.sources_estimate {
        family(
            &mut s,
            "dropscope_distinct_sources",
            "gauge",
            "Distinct source addresses last interval (HyperLogLog estimate).",
        );
        let _ = writeln!(s, "dropscope_distinct_sources {}", e.distinct_sources);
    }

    family(
        &mut s,
        "dropscope_drop_events_total",
        "counter",
        "Drop events counted by the kfree_skb program.",
    );
    let _ = writeln!(s, "dropscope_drop_events_total {}", r.health.drop_events);
    family(
        &mut s,
        "dropscope_map_full_total",
        "counter",
        "Drop rows lost because a map was full.",
    );
    let _ = writeln!(s, "dropscope_map_full_total {}", r.health.map_full);
    family(
        &mut s,
        "dropscope_drops_unattributed_total",
        "counter",
        "Drops whose source or port found no attribution row (budget spent).",
    );
    let _ = writeln!(
        s,
        "dropscope_drops_unattributed_total {}",
        r.health.unattributed
    );
    family(
        &mut s,
        "dropscope_sources_tracked",
        "gauge",
        "Sources in the exact per-source table.",
    );
    let _ = writeln!(s, "dropscope_sources_tracked {}", r.health.sources_tracked);
    family(
        &mut s,
        "dropscope_sources_evicted_total",
        "counter",
        "Sources the LRU evicted from the exact per-source table.",
    );
    let _ = writeln!(
        s,
        "dropscope_sources_evicted_total {}",
        r.health.sources_evicted
    );
    family(
        &mut s,
        "dropscope_hook_runs_dropped_total",
        "counter",
        "Hook runs skipped because the hook queue was full.",
    );
    let _ = writeln!(
        s,
        "dropscope_hook_runs_dropped_total {}",
        extra.hook_runs_dropped
    );
    if let Some(n) = extra.blocklist_entries {
        family(
            &mut s,
            "dropscope_blocklist_entries",
            "gauge",
            "Prefixes in the --enforce blocklist.",
        );
        let _ = writeln!(s, "dropscope_blocklist_entries {n}");
    }
    family(
        &mut s,
        "dropscope_last_sample_timestamp_seconds",
        "gauge",
        "Unix time of the latest sample.",
    );
    let _ = writeln!(s, "dropscope_last_sample_timestamp_seconds {:.3}", r.ts);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9184").unwrap().to_string(), "127.0.0.1:9184");
        assert_eq!(parse_addr(":9184").unwrap().to_string(), "127.0.0.1:9184");
        assert_eq!(
            parse_addr("0.0.0.0:9184").unwrap().to_string(),
            "0.0.0.0:9184"
        );
        assert_eq!(parse_addr("[::1]:9184").unwrap().to_string(), "[::1]:9184");
        assert!(parse_addr("everywhere").is_err());
    }

    #[test]
    fn label_escaping() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(metric_part("rx-fifo.errors"), "rx_fifo_errors");
    }
}
