//! `--prometheus ADDR`: the latest report in Prometheus' text format,
//! rendered once per interval; [`http`] serves it.

mod http;

use std::{collections::BTreeMap, fmt::Write as _};

pub(crate) use http::{Exporter, parse_addr};

use crate::{report::Report, taxonomy::AttackClass};

/// Drop series kept; the rest are summed into iface="other".
const MAX_DROP_SERIES: usize = 512;

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

/// Renders one report: one function per group of metric families.
pub(crate) fn render(r: &Report, extra: &Extra) -> String {
    let mut s = String::with_capacity(8192);
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

    drops(&mut s, r);
    xdp_verdicts(&mut s, r);
    counters(&mut s, r);
    xdp(&mut s, r);
    attacks(&mut s, r);
    sources(&mut s, r);
    health(&mut s, r, extra);
    s
}

/// A metric family's HELP and TYPE lines.
fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Drops per (reason, iface): bounded, the smallest folded into "other".
fn drops(s: &mut String, r: &Report) {
    family(
        s,
        "dropscope_drops_total",
        "counter",
        "Packets the kernel dropped (kfree_skb), by reason, category and interface.",
    );
    let mut rows: Vec<_> = r.drops.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.total));
    let mut other: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (i, d) in rows.iter().enumerate() {
        if i < MAX_DROP_SERIES {
            // An observed XDP program's drops also name the program.
            let program = d
                .program
                .as_deref()
                .map(|p| format!(",program=\"{}\"", esc(p)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "dropscope_drops_total{{reason=\"{}\",category=\"{}\",iface=\"{}\"{program}}} {}",
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
}

/// Observe mode: each observed XDP program's verdicts (at most
/// MAX_OBSERVED programs, five actions each).
fn xdp_verdicts(s: &mut String, r: &Report) {
    family(
        s,
        "dropscope_xdp_verdicts_total",
        "counter",
        "Verdicts of the XDP programs dropscope observes in place, by interface, program and action.",
    );
    for p in &r.xdp_programs {
        for (action, v) in p.total.each() {
            let _ = writeln!(
                s,
                "dropscope_xdp_verdicts_total{{iface=\"{}\",program=\"{}\",action=\"{action}\"}} {v}",
                esc(&p.iface),
                esc(&p.program),
            );
        }
    }
}

/// NIC, driver and backlog counters, with the kernel's own values.
fn counters(s: &mut String, r: &Report) {
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
        family(s, &name, "counter", help);
        for l in lines {
            let _ = writeln!(s, "{name}{l}");
        }
    }
}

/// What XDP saw.
fn xdp(s: &mut String, r: &Report) {
    family(
        s,
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
        s,
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
        s,
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
}

/// Attacks: every class on every watched interface, 0 or 1, so alerts
/// can use the series before the first attack.
fn attacks(s: &mut String, r: &Report) {
    family(
        s,
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
        s,
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
}

/// Per-source series: the top-N only (bounded by --top).
fn sources(s: &mut String, r: &Report) {
    family(
        s,
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
            s,
            "dropscope_distinct_sources",
            "gauge",
            "Distinct source addresses last interval (HyperLogLog estimate).",
        );
        let _ = writeln!(s, "dropscope_distinct_sources {}", e.distinct_sources);
    }
}

/// dropscope's own health: drop events, full maps, budgets, hooks.
fn health(s: &mut String, r: &Report, extra: &Extra) {
    family(
        s,
        "dropscope_drop_events_total",
        "counter",
        "Drop events counted by the kfree_skb program.",
    );
    let _ = writeln!(s, "dropscope_drop_events_total {}", r.health.drop_events);
    family(
        s,
        "dropscope_map_full_total",
        "counter",
        "Drop rows lost because a map was full.",
    );
    let _ = writeln!(s, "dropscope_map_full_total {}", r.health.map_full);
    family(
        s,
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
        s,
        "dropscope_sources_tracked",
        "gauge",
        "Sources in the exact per-source table.",
    );
    let _ = writeln!(s, "dropscope_sources_tracked {}", r.health.sources_tracked);
    family(
        s,
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
        s,
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
            s,
            "dropscope_blocklist_entries",
            "gauge",
            "Prefixes in the --enforce blocklist.",
        );
        let _ = writeln!(s, "dropscope_blocklist_entries {n}");
    }
    family(
        s,
        "dropscope_last_sample_timestamp_seconds",
        "gauge",
        "Unix time of the latest sample.",
    );
    let _ = writeln!(s, "dropscope_last_sample_timestamp_seconds {:.3}", r.ts);
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
