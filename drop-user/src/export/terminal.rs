//! Shows a report: a terminal table or one JSON object per line.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use crate::{report::Report, taxonomy::Phase, units::human};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// Writes one report and flushes, so a reader of a pipe sees it at once.
pub(crate) fn emit(
    out: &mut impl Write,
    report: &Report,
    format: Format,
    clear: bool,
) -> io::Result<()> {
    match format {
        Format::Json => {
            // Whole, then one write: through stdout's line buffer a
            // serialized report went out in 1 KiB writes.
            let mut line = serde_json::to_vec(report)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        Format::Table => {
            if clear {
                out.write_all(b"\x1b[2J\x1b[H")?;
            }
            out.write_all(render_table(report).as_bytes())?;
        }
    }
    out.flush()
}

/// Writes one attack event: a JSON line, or a line on stderr for the table.
pub(crate) fn emit_event(
    out: &mut impl Write,
    e: &crate::report::AttackEvent,
    format: Format,
) -> io::Result<()> {
    match format {
        Format::Json => {
            let mut line = serde_json::to_vec(e)?;
            line.push(b'\n');
            out.write_all(&line)?;
            out.flush()
        }
        Format::Table => {
            if e.phase != Phase::Update {
                eprintln!(
                    "attack {} {}: {} on {} ({}% confidence, {:.0} pps, {} sources, {}){}",
                    e.id,
                    e.phase,
                    e.class,
                    e.iface,
                    e.confidence,
                    e.pps,
                    e.sources,
                    e.trigger,
                    dropped_by(e)
                );
            }
            Ok(())
        }
    }
}

/// ", 98% dropped by xdpfilt_alw_all" for each observed program that
/// dropped part of the attack.
fn dropped_by(e: &crate::report::AttackEvent) -> String {
    e.dropped_by
        .iter()
        .map(|p| format!(", {:.0}% dropped by {}", p.share * 100.0, p.program))
        .collect()
}

pub(crate) fn render_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dropscope  elapsed {:.0}s  interval {:.2}s  drops {}/s  total {}",
        r.elapsed_s,
        r.interval_s,
        human(r.drops_delta as f64 / r.interval_s),
        r.drops_total
    );
    drops_section(&mut s, r);
    attribution_section(&mut s, r);
    xdp_section(&mut s, r);
    counters_section(&mut s, r);
    sources_section(&mut s, r);
    s
}

/// The drop rows, attacks and the loss verdict.
fn drops_section(s: &mut String, r: &Report) {
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<28} {:<14} {:<16} {:>10} {:>12}",
        "REASON", "CATEGORY", "IFACE", "RATE/s", "TOTAL"
    );
    if r.drops.is_empty() {
        let _ = writeln!(s, "(no drops since start)");
    }
    for d in &r.drops {
        let _ = writeln!(
            s,
            "{:<28} {:<14} {:<16} {:>10} {:>12}",
            d.label(),
            d.category,
            d.iface,
            human(d.rate),
            d.total
        );
    }
    if !r.attacks.is_empty() {
        let _ = writeln!(s, "\nACTIVE ATTACKS");
        for a in &r.attacks {
            let vectors: Vec<String> = a
                .vectors
                .iter()
                .map(|v| match &v.protocol {
                    Some(p) => format!("{} ({p}) {}%", v.class, v.confidence),
                    None => format!("{} {}%", v.class, v.confidence),
                })
                .collect();
            let _ = writeln!(
                s,
                "  #{} {:<12} {}  {} pps  peak {} pps  {} sources (~{:.0}), spoofing: {}",
                a.id,
                a.iface,
                vectors.join(", "),
                human(a.pps),
                human(a.peak_pps),
                a.sources,
                a.distinct_sources,
                a.spoofing.verdict
            );
            let by = dropped_by(a);
            if !by.is_empty() {
                let _ = writeln!(s, "    {}", by.trim_start_matches(", "));
            }
        }
    }
    if let Some(l) = &r.loss
        && l.verdict != "none"
    {
        let _ = writeln!(s, "\nLOSS: {} ({})", l.verdict, l.evidence.join("; "));
    }
}

/// Attributed drops, kernel locations and hints.
fn attribution_section(s: &mut String, r: &Report) {
    // (title, rows of (reason, from/to, rate, total)).
    type Attributed<'a> = (&'static str, Vec<(&'a str, String, f64, u64)>);
    let attributed: [Attributed; 2] = [
        (
            "DROPPED FROM (source address, by reason)",
            r.drop_sources
                .iter()
                .map(|d| (d.reason.as_str(), d.address.clone(), d.rate, d.total))
                .collect(),
        ),
        (
            "DROPPED TO (destination port, by reason)",
            r.drop_ports
                .iter()
                .map(|d| {
                    let to = format!("{}/{}", d.proto, d.port);
                    (d.reason.as_str(), to, d.rate, d.total)
                })
                .collect(),
        ),
    ];
    for (title, rows) in attributed.iter().filter(|(_, rows)| !rows.is_empty()) {
        let _ = writeln!(s, "\n{title}");
        for (reason, what, rate, total) in rows.iter().take(5) {
            let _ = writeln!(
                s,
                "  {reason:<24} {what:<40} {:>10}/s {total:>12}",
                human(*rate)
            );
        }
    }
    if !r.locations.is_empty() {
        let _ = writeln!(s, "\nWHERE (reasonless drops by kernel location)");
        for l in &r.locations {
            let _ = writeln!(
                s,
                "  {:<14} {:<12} {:<48} {:>10}",
                l.reason, l.iface, l.location, l.total
            );
        }
    }
    if !r.diagnosis.is_empty() {
        let _ = writeln!(
            s,
            "\nDIAGNOSIS (this interval; dropscope doctor for evidence and fixes)"
        );
        for h in &r.diagnosis {
            let _ = writeln!(
                s,
                "  {:<14} {:<24} {:<12} {}",
                h.cause, h.reason, h.iface, h.hint
            );
        }
    }
}

/// What XDP saw per interface.
fn xdp_section(s: &mut String, r: &Report) {
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<16} {:<8} {:>9} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "INTERFACE", "XDP", "PPS", "BPS", "TCP", "UDP", "ICMP", "SYN", "FRAG", "BAD"
    );
    for i in &r.interfaces {
        let p = &i.delta.protocols;
        let g = |k: &str| p.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "{:<16} {:<8} {:>9} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}",
            i.iface,
            i.xdp_mode,
            human(i.pps),
            human(i.bps),
            g("tcp"),
            g("udp"),
            g("icmp") + g("icmpv6"),
            i.delta.tcp_syn,
            i.delta.fragments,
            g("malformed")
        );
    }
    if r.xdp_programs.is_empty() {
        return;
    }
    // Observe mode: the verdicts of the programs already attached.
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<16} {:<24} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "OBSERVED XDP", "PROGRAM", "ID", "PASS", "DROP", "ABORTED", "TX", "REDIRECT"
    );
    for p in &r.xdp_programs {
        let t = &p.total;
        let _ = writeln!(
            s,
            "{:<16} {:<24} {:>8} {:>12} {:>12} {:>10} {:>10} {:>10}",
            p.iface, p.program, p.id, t.pass, t.drop, t.aborted, t.tx, t.redirect
        );
    }
}

/// NIC and softnet counters that moved.
fn counters_section(s: &mut String, r: &Report) {
    let changed: Vec<_> = r.counters.iter().filter(|c| c.total > 0).collect();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<16} {:<36} {:>10} {:>12}",
        "COUNTER IFACE", "COUNTER", "DELTA", "SINCE START"
    );
    if changed.is_empty() {
        let _ = writeln!(s, "(no NIC, driver or backlog counter moved)");
    }
    for c in changed {
        let _ = writeln!(
            s,
            "{:<16} {:<36} {:>10} {:>12}",
            c.iface, c.counter, c.delta, c.total
        );
    }
}

/// Top sources and the health lines.
fn sources_section(s: &mut String, r: &Report) {
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<40} {:<12} {:>9} {:>12} {:>12}",
        "TOP SOURCES", "IFACE", "PPS", "PACKETS", "BYTES"
    );
    for t in &r.top_sources {
        let _ = writeln!(
            s,
            "{:<40} {:<12} {:>9} {:>12} {:>12}",
            t.address,
            t.iface,
            human(t.pps),
            t.total_packets,
            t.total_bytes
        );
    }
    s.push('\n');
    if r.health.sources_evicted > 0 {
        let _ = writeln!(
            s,
            "sources: {} tracked exactly, {} evicted from the table (least recently seen first)",
            r.health.sources_tracked, r.health.sources_evicted
        );
    }
    if r.health.unattributed > 0 {
        let _ = writeln!(
            s,
            "attribution: {} drops without a source/port row (new rows are budgeted per interval)",
            r.health.unattributed
        );
    }
    if r.health.map_full > 0 || r.health.read_errors > 0 {
        let _ = writeln!(
            s,
            "\nwarning: {} drop events not tabled (map full), {} kernel read errors",
            r.health.map_full, r.health.read_errors
        );
    }
}
