//! `dropscope doctor`: watch for a short window, then read the evidence the
//! way a kernel network engineer would and say what is wrong and what to run.
//! Read-only: it prints commands, it never changes the system.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    time::Duration,
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep},
};

use crate::{
    analysis::patterns::{Pattern, PatternCollector},
    kernel::Snapshot,
    kernel::{self, KfreeChoice, LoadOptions, XdpChoice},
    report::{Analysis, Hint, Report, Tracker},
    sys::host::{self, Rule, UdpSocket},
    sys::iface,
    sys::kallsyms::Symbols,
    sys::nic::{self, Counters, ethtool},
    sys::reasons::{Category, ReasonTable},
    taxonomy::{Cause, QueueDrop, Severity},
    units::monotonic_ns,
};

pub(crate) const SCHEMA: &str = "dropscope.doctor/1";
crate::report::constant_field!(doctor_schema, SCHEMA);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DoctorFormat {
    Text,
    Json,
}

pub(crate) struct DoctorOptions {
    pub ifaces: Vec<String>,
    pub duration: Duration,
    pub format: DoctorFormat,
    pub xdp: XdpChoice,
    pub kfree: KfreeChoice,
    pub own_netns_only: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Finding {
    /// Machine-readable cause, e.g. "socket-buffer", "netfilter", "nic-ring".
    pub cause: Cause,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<String>,
    /// Commands or changes that address the cause.
    pub fix: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AuditRow {
    pub sysctl: String,
    pub current: String,
    pub reference: String,
    pub ok: bool,
    /// The line to apply, when it falls short.
    pub apply: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PatternRow {
    pub reason: String,
    #[serde(flatten)]
    pub pattern: Pattern,
    /// For qdisc reasons: "tail-drop" or "head-drop" where the reason tells.
    pub queue_drop: Option<QueueDrop>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PlaceRow {
    pub reason: String,
    /// `function+0xoffset`, or the raw address if it can't be named.
    pub location: String,
    pub address: String,
    pub drops: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Diagnosis {
    /// `dropscope.doctor/1`.
    #[serde(deserialize_with = "doctor_schema")]
    pub schema: std::borrow::Cow<'static, str>,
    pub window_s: f64,
    pub interfaces: Vec<String>,
    pub findings: Vec<Finding>,
    pub patterns: Vec<PatternRow>,
    pub locations: Vec<PlaceRow>,
    pub sysctl_audit: Vec<AuditRow>,
    /// The interval report for the whole window (drops, counters, sources).
    pub report: Report,
}

/// State read before and after the window.
pub(crate) struct Evidence {
    pub nic: BTreeMap<String, Counters>,
    pub udp: Vec<UdpSocket>,
    pub rules: Vec<Rule>,
}

impl Evidence {
    pub(crate) fn collect(ifaces: &[(String, u32)]) -> Self {
        Self {
            nic: nic::read_all(ifaces).unwrap_or_default(),
            udp: host::udp_sockets(),
            rules: host::firewall_rules(),
        }
    }
}

/// The sysctls the rules and the audit quote (per-interface rp_filter
/// comes on top, for the interfaces that dropped).
const SYSCTLS: [&str; 14] = [
    "net.core.netdev_max_backlog",
    "net.core.rmem_max",
    "net.core.rmem_default",
    "net.core.wmem_max",
    "net.core.somaxconn",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.udp_mem",
    "net.ipv4.tcp_mem",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.all.log_martians",
    "net.ipv4.ip_forward",
    "net.ipv4.ipfrag_high_thresh",
    "net.ipv4.ipfrag_time",
];

/// One watched interface's driver settings, as ethtool and sysfs tell.
#[derive(Default)]
pub(crate) struct IfaceFacts {
    /// (maximum, current) RX ring size.
    pub ring: Option<(u32, u32)>,
    /// (maximum, current) combined channels.
    pub channels: Option<(u32, u32)>,
    /// (speed Mb/s, full duplex), where the driver says.
    pub link: Option<(Option<u32>, Option<bool>)>,
    pub rps: Option<bool>,
}

/// Everything the rules read from the host besides the window's counters,
/// read once when the window closes: the rules are then pure functions of
/// (report, evidence, facts), and a unit test can hand them any host.
#[derive(Default)]
pub(crate) struct HostFacts {
    /// sysctl name -> value; absent: not visible from this namespace.
    pub sysctls: BTreeMap<String, String>,
    pub ifaces: BTreeMap<String, IfaceFacts>,
    /// Socket inode -> (pid, command) of the sockets that dropped.
    pub socket_owners: HashMap<u64, (u32, String)>,
    /// UDP socket inode -> receive buffer, bytes.
    pub rcvbufs: HashMap<u64, u64>,
    pub cpus: usize,
    /// /proc/kallsyms, to name reasonless drop locations.
    pub symbols: Option<Symbols>,
}

impl HostFacts {
    pub(crate) fn read(
        names: &[&str],
        report: &Report,
        before: &Evidence,
        after: &Evidence,
        symbols: Option<Symbols>,
    ) -> Self {
        let mut sysctls = BTreeMap::new();
        let mut put = |key: String, v: Option<String>| {
            if let Some(v) = v {
                sysctls.insert(key, v);
            }
        };
        for n in SYSCTLS {
            put(n.to_string(), host::sysctl(n));
        }
        // Interface names may hold dots: read by path, not by dotted name.
        for row in &report.drops {
            let i = &row.iface;
            if !i.contains('@') && i != "-" {
                put(
                    format!("net.ipv4.conf.{i}.rp_filter"),
                    host::sysctl_path(&["net", "ipv4", "conf", i, "rp_filter"]),
                );
            }
        }
        let ifaces = names
            .iter()
            .map(|n| {
                let f = IfaceFacts {
                    ring: ethtool::ring(n).ok().map(|(max, cur, _, _)| (max, cur)),
                    channels: ethtool::channels(n).ok().map(|(max, cur, _, _)| (max, cur)),
                    link: ethtool::link(n).ok(),
                    rps: host::rps_enabled(n),
                };
                (n.to_string(), f)
            })
            .collect();
        let inodes: Vec<u64> = dropping_sockets(before, after)
            .iter()
            .map(|(s, _)| s.inode)
            .collect();
        Self {
            sysctls,
            ifaces,
            socket_owners: host::socket_owners(&inodes),
            rcvbufs: if inodes.is_empty() {
                HashMap::new()
            } else {
                host::udp_rcvbufs()
            },
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            symbols,
        }
    }

    fn sysctl(&self, name: &str) -> String {
        self.sysctls.get(name).cloned().unwrap_or_default()
    }

    fn sysctl_u64(&self, name: &str) -> u64 {
        self.sysctls
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn iface(&self, name: &str) -> Option<&IfaceFacts> {
        self.ifaces.get(name)
    }
}

/// UDP sockets whose drop counter grew over the window, and by how much.
fn dropping_sockets<'a>(before: &Evidence, after: &'a Evidence) -> Vec<(&'a UdpSocket, u64)> {
    after
        .udp
        .iter()
        .filter_map(|s| {
            let prev = before
                .udp
                .iter()
                .find(|b| b.inode == s.inode)
                .map(|b| b.drops)
                .unwrap_or(0);
            (s.drops > prev).then_some((s, s.drops - prev))
        })
        .collect()
}

pub(crate) async fn run(opts: DoctorOptions) -> Result<()> {
    let ifaces = iface::resolve(&opts.ifaces)?;
    let mut probes = kernel::load(&LoadOptions {
        ifaces: ifaces.clone(),
        xdp: opts.xdp,
        kfree: opts.kfree,
        // Count every namespace: drops elsewhere are pointed out, not lost.
        own_netns_only: false,
        xdp_config: kernel::default_xdp_config(),
    })?;
    for n in &probes.notes {
        eprintln!("note: {n}");
    }
    probes.maps.set_events(true)?;
    let before = Evidence::collect(&ifaces);
    let mut tracker = Tracker::new(
        probes.reasons.clone(),
        ifaces.clone(),
        &probes.xdp_modes,
        probes.netns,
        20,
        before.nic.clone(),
    )
    .with_observed(&probes.observer.progs);
    let slots = if probes.xdp_modes.is_empty() {
        0
    } else {
        ifaces.len()
    };
    eprintln!(
        "dropscope: doctor watching {} for {:?}",
        ifaces
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        opts.duration
    );

    let t0 = monotonic_ns();
    let start = Instant::now();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut collector = PatternCollector::default();
    let own = probes.netns;
    let keep = |netns: u32| !opts.own_netns_only || netns == 0 || netns == own;
    while start.elapsed() < opts.duration {
        tokio::select! {
            _ = sleep(Duration::from_millis(50)) => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        probes.maps.drain_events(|e| {
            if keep(e.netns) {
                collector.add(e.reason, e.ts_ns)
            }
        });
        probes.flush_log();
    }
    let t1 = monotonic_ns();
    let snap = probes.maps.read(slots, true)?;
    probes.maps.drain_events(|e| {
        if keep(e.netns) {
            collector.add(e.reason, e.ts_ns)
        }
    });
    let after = Evidence::collect(&ifaces);
    let reasons = probes.reasons.clone();
    probes.flush_log();
    drop(probes);

    let mut measured = tracker.measure(snap.clone(), after.nic.clone(), None);
    // The live hints see every namespace's drops, as in watch.
    let diagnosis = hints(&measured.drops);
    let secs = start.elapsed().as_secs_f64();
    let patterns = collector.analyse(t0, t1);
    // The evidence (sockets, sysctls, firewall) is this namespace's: drops in
    // other namespaces are named with the command to diagnose them there.
    let mut elsewhere = Vec::new();
    if opts.own_netns_only {
        let (own, other): (Vec<_>, Vec<_>) = measured
            .drops
            .drain(..)
            .partition(|r| !r.iface.contains('@'));
        measured.drops = own;
        measured.drops_total = measured.drops.iter().map(|r| r.total).sum();
        measured.drops_delta = measured.drops.iter().map(|r| r.delta).sum();
        elsewhere = other;
    }
    let report = Report::build(
        measured,
        Analysis {
            diagnosis,
            ..Analysis::default()
        },
    );
    let names: Vec<&str> = ifaces.iter().map(|(n, _)| n.as_str()).collect();
    // The tracker's symbol table: /proc/kallsyms is read and sorted once.
    let symbols = tracker.take_symbols();
    let facts = HostFacts::read(&names, &report, &before, &after, symbols);
    let mut dx = diagnose(
        &reasons, &snap, &report, &before, &after, &facts, patterns, secs, &ifaces,
    );
    if let Some(f) = other_namespaces(&elsewhere) {
        dx.findings.push(f);
    }
    let mut out = std::io::stdout().lock();
    match opts.format {
        DoctorFormat::Json => {
            serde_json::to_writer(&mut out, &dx)?;
            out.write_all(b"\n")?;
        }
        DoctorFormat::Text => out.write_all(render(&dx).as_bytes())?,
    }
    out.flush().context("writing the diagnosis")?;
    Ok(())
}

/// Per-category and per-reason drop totals over the window, own namespace
/// and other namespaces alike.
struct DropTotals {
    by_reason: BTreeMap<String, u64>,
    by_category: HashMap<Category, u64>,
    /// reason -> interfaces it was seen on.
    ifaces: BTreeMap<String, Vec<String>>,
}

fn totals(report: &Report, reasons: &ReasonTable) -> DropTotals {
    let mut t = DropTotals {
        by_reason: BTreeMap::new(),
        by_category: HashMap::new(),
        ifaces: BTreeMap::new(),
    };
    for row in &report.drops {
        *t.by_reason.entry(row.reason.clone()).or_default() += row.total;
        *t.by_category
            .entry(reasons.category(row.reason_code))
            .or_default() += row.total;
        let v = t.ifaces.entry(row.reason.clone()).or_default();
        if !v.contains(&row.iface) {
            v.push(row.iface.clone());
        }
    }
    t
}

fn severity(drops: u64, secs: f64) -> Severity {
    let rate = drops as f64 / secs.max(1e-3);
    if rate >= 1000.0 {
        Severity::Critical
    } else if drops > 0 {
        Severity::Warning
    } else {
        Severity::Info
    }
}

fn counter_total(report: &Report, iface: &str, pred: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
    report
        .counters
        .iter()
        .filter(|c| c.iface == iface && c.total > 0 && pred(&c.counter))
        .map(|c| (c.counter.clone(), c.total))
        .collect()
}

fn reason_evidence(t: &DropTotals, names: &[&str], secs: f64) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| {
            let v = *t.by_reason.get(*n)?;
            let on = t.ifaces.get(*n).map(|v| v.join(", ")).unwrap_or_default();
            Some(format!("{n}: {v} drops ({:.1}/s) on {on}", v as f64 / secs))
        })
        .collect()
}

fn sum_reasons(t: &DropTotals, pred: impl Fn(&str) -> bool) -> (u64, Vec<&str>) {
    let mut total = 0;
    let mut names = Vec::new();
    for (n, v) in &t.by_reason {
        if pred(n) {
            total += v;
            names.push(n.as_str());
        }
    }
    (total, names)
}

const REFERENCE: [(&str, &str); 5] = [
    ("net.core.netdev_max_backlog", "250000"),
    ("net.core.rmem_max", "134217728"),
    ("net.core.wmem_max", "134217728"),
    ("net.ipv4.tcp_rmem", "4096 87380 134217728"),
    ("net.ipv4.tcp_wmem", "4096 65536 134217728"),
];

/// Reference values for high-PPS hosts; a value meets its reference when
/// every field is at least the reference's.
pub(crate) fn sysctl_audit(facts: &HostFacts) -> Vec<AuditRow> {
    REFERENCE
        .iter()
        .map(|(name, reference)| {
            let current = facts
                .sysctls
                .get(*name)
                .cloned()
                .unwrap_or_else(|| "not visible from this network namespace".into());
            let ok = audit_ok(&current, reference);
            AuditRow {
                sysctl: name.to_string(),
                current,
                reference: reference.to_string(),
                ok,
                apply: (!ok).then(|| {
                    if reference.contains(' ') {
                        format!("sysctl -w {name}=\"{reference}\"")
                    } else {
                        format!("sysctl -w {name}={reference}")
                    }
                }),
            }
        })
        .collect()
}

pub(crate) fn audit_ok(current: &str, reference: &str) -> bool {
    let cur: Vec<u64> = current
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let refv: Vec<u64> = reference
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    cur.len() == refv.len() && cur.iter().zip(&refv).all(|(c, r)| c >= r)
}

fn rule_deltas(before: &[Rule], after: &[Rule]) -> Vec<(Rule, u64)> {
    let mut seen: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut out = Vec::new();
    for r in after {
        let key = (r.family, r.table.as_str(), r.rule.as_str());
        let nth = seen.entry(key).or_default();
        let prev = before
            .iter()
            .filter(|b| b.family == r.family && b.table == r.table && b.rule == r.rule)
            .nth(*nth)
            .map(|b| b.packets)
            .unwrap_or(0);
        *nth += 1;
        if r.packets > prev {
            out.push((r.clone(), r.packets - prev));
        }
    }
    out
}

fn hook_of(chain: &str) -> &str {
    match chain {
        "PREROUTING" => "prerouting",
        "INPUT" => "input",
        "FORWARD" => "forward",
        "OUTPUT" => "output",
        "POSTROUTING" => "postrouting",
        _ => "a user chain",
    }
}

/// Everything one doctor window saw, for the rules to read.
struct Window<'a> {
    reasons: &'a ReasonTable,
    report: &'a Report,
    before: &'a Evidence,
    after: &'a Evidence,
    facts: &'a HostFacts,
    t: DropTotals,
    names: Vec<&'a str>,
    secs: f64,
}

/// The rules, in the order their findings are listed (before ranking by
/// severity): each reads the window and names the causes it finds.
const RULES: [fn(&Window) -> Vec<Finding>; 15] = [
    xdp_programs,
    nic_ring,
    backlog,
    socket_buffers,
    netfilter,
    rp_filter,
    martians,
    no_route,
    checksums,
    bad_headers,
    fragments,
    physical,
    qdisc,
    no_socket,
    upstream,
];

#[allow(clippy::too_many_arguments)]
pub(crate) fn diagnose(
    reasons: &ReasonTable,
    snap: &Snapshot,
    report: &Report,
    before: &Evidence,
    after: &Evidence,
    facts: &HostFacts,
    patterns: Vec<Pattern>,
    secs: f64,
    ifaces: &[(String, u32)],
) -> Diagnosis {
    let w = Window {
        reasons,
        report,
        before,
        after,
        facts,
        t: totals(report, reasons),
        names: ifaces.iter().map(|(n, _)| n.as_str()).collect(),
        secs,
    };
    let mut findings: Vec<Finding> = RULES.iter().flat_map(|rule| rule(&w)).collect();
    let locations = kernel_locations(reasons, snap, facts.symbols.as_ref());
    findings.extend(unspecified(&w, &locations));
    let patterns = patterns
        .into_iter()
        .map(|p| {
            let name = reasons.name(p.reason);
            PatternRow {
                queue_drop: queue_drop(&name),
                reason: name,
                pattern: p,
            }
        })
        .collect();

    findings.sort_by_key(|f| f.severity);
    Diagnosis {
        schema: SCHEMA.into(),
        window_s: secs,
        interfaces: w.names.iter().map(|s| s.to_string()).collect(),
        findings,
        patterns,
        locations,
        sysctl_audit: sysctl_audit(w.facts),
        report: report.clone(),
    }
}

/// The NIC ring or FIFO overflowed.
fn nic_ring(w: &Window) -> Vec<Finding> {
    let (report, t, names, secs) = (w.report, &w.t, &w.names, w.secs);
    let mut findings = Vec::new();
    for name in names.iter() {
        let ring = counter_total(report, name, |c| {
            matches!(c, "rx_fifo" | "rx_missed_errors" | "rx_over_errors")
                || (c.starts_with("ethtool:")
                    && c.contains("rx")
                    && nic::is_loss_stat(c)
                    && !c.contains("xdp"))
        });
        let full_ring = t.by_reason.get("FULL_RING").copied().unwrap_or(0);
        if ring.is_empty() && full_ring == 0 {
            continue;
        }
        let mut evidence: Vec<String> = ring
            .iter()
            .map(|(c, v)| format!("{name} {c} +{v}"))
            .collect();
        evidence.extend(reason_evidence(t, &["FULL_RING"], secs));
        let mut fix = Vec::new();
        let facts = w.facts.iface(name);
        match facts.and_then(|f| f.ring) {
            Some((rx_max, rx)) => {
                evidence.push(format!("{name} rx ring {rx} of maximum {rx_max}"));
                if rx < rx_max {
                    fix.push(format!("ethtool -G {name} rx {rx_max}"));
                }
            }
            None => evidence.push(format!(
                "{name}: the driver does not report ring sizes (ethtool -g {name})"
            )),
        }
        if let Some((max_c, cur_c)) = facts.and_then(|f| f.channels) {
            evidence.push(format!(
                "{name} combined channels {cur_c} of maximum {max_c}"
            ));
            if cur_c < max_c {
                fix.push(format!("ethtool -L {name} combined {max_c}"));
            }
        }
        if fix.is_empty() {
            fix.push(format!("rings and channels are at their maximum: spread interrupts (RSS/RPS) or lower the packet rate on {name}"));
        }
        let n: u64 = ring.iter().map(|(_, v)| v).sum::<u64>() + full_ring;
        findings.push(Finding {
            cause: Cause::NicRing,
            severity: severity(n, secs),
            summary: format!(
                "{name}: the NIC ring overflowed, the host did not drain it fast enough"
            ),
            evidence,
            fix,
        });
    }
    findings
}

/// The per-CPU input backlog overflowed.
fn backlog(w: &Window) -> Vec<Finding> {
    let (report, t, names, secs) = (w.report, &w.t, &w.names, w.secs);
    let mut findings = Vec::new();
    let backlog_nic = report
        .counters
        .iter()
        .find(|c| c.iface == "softnet" && c.counter == "backlog_dropped")
        .map(|c| c.total)
        .unwrap_or(0);
    let squeeze = report
        .counters
        .iter()
        .find(|c| c.iface == "softnet" && c.counter == "time_squeeze")
        .map(|c| c.total)
        .unwrap_or(0);
    let cpu_backlog = t.by_reason.get("CPU_BACKLOG").copied().unwrap_or(0);
    if backlog_nic > 0 || cpu_backlog > 0 {
        let cur = w.facts.sysctl_u64("net.core.netdev_max_backlog");
        let mut evidence = reason_evidence(t, &["CPU_BACKLOG"], secs);
        evidence.push(format!(
            "softnet backlog_dropped +{backlog_nic}, time_squeeze +{squeeze}"
        ));
        evidence.push(format!("net.core.netdev_max_backlog = {cur}"));
        let mut fix = vec![format!(
            "sysctl -w net.core.netdev_max_backlog={}",
            (cur * 4).max(250_000)
        )];
        for name in names.iter() {
            if let Some(on) = w.facts.iface(name).and_then(|f| f.rps) {
                evidence.push(format!("{name} RPS {}", if on { "on" } else { "off" }));
                if !on {
                    let cpus = w.facts.cpus;
                    let mask = if cpus >= 32 {
                        u32::MAX
                    } else {
                        (1u32 << cpus) - 1
                    };
                    fix.push(format!(
                        "echo {mask:x} > /sys/class/net/{name}/queues/rx-0/rps_cpus"
                    ));
                }
            }
        }
        if squeeze > 0 {
            fix.push(
                "sysctl -w net.core.netdev_budget=600 net.core.netdev_budget_usecs=4000".into(),
            );
        }
        findings.push(Finding {
            cause: Cause::Backlog,
            severity: severity(backlog_nic.max(cpu_backlog), secs),
            summary: "the per-CPU input backlog overflowed: packets arrive faster than one CPU processes them".into(),
            evidence,
            fix,
        });
    }
    findings
}

/// Socket receive buffers (and protocol memory, listen queues) overflowed.
fn socket_buffers(w: &Window) -> Vec<Finding> {
    let (reasons, before, after, t, secs) = (w.reasons, w.before, w.after, &w.t, w.secs);
    let mut findings = Vec::new();
    let (sockbuf, sock_reasons) = sum_reasons(t, |n| {
        reasons_category(reasons, n) == Category::SocketBuffer
    });
    if sockbuf > 0 {
        let mut evidence = reason_evidence(t, &sock_reasons, secs);
        let rmem_max = w.facts.sysctl_u64("net.core.rmem_max");
        let rmem_default = w.facts.sysctl_u64("net.core.rmem_default");
        let dropping = dropping_sockets(before, after);
        let (owners, rcvbufs) = (&w.facts.socket_owners, &w.facts.rcvbufs);
        let mut fix = Vec::new();
        let mut summary =
            "socket receive buffers overflowed: the application reads too slowly".to_string();
        for (s, d) in &dropping {
            let owner = owners
                .get(&s.inode)
                .map(|(pid, comm)| format!("pid {pid} ({comm})"))
                .unwrap_or_else(|| "owner unknown".into());
            let rb = rcvbufs
                .get(&s.inode)
                .map(|b| format!("rcvbuf {b} B"))
                .unwrap_or_else(|| "rcvbuf unknown".into());
            evidence.push(format!(
                "UDP socket {}:{} ({owner}): {d} datagrams dropped, {rb}, {} B queued",
                s.local, s.port, s.rx_queue
            ));
            fix.push(format!(
                "in the application on UDP port {} ({owner}): setsockopt(SO_RCVBUF) to 8388608 or more, and read faster (more threads with SO_REUSEPORT)",
                s.port
            ));
        }
        if let Some((s, d)) = dropping.iter().max_by_key(|(_, d)| *d) {
            summary = format!(
                "UDP port {} drops datagrams ({d} in {secs:.1} s): its receive buffer is full, the application reads too slowly",
                s.port
            );
        }
        evidence.push(format!(
            "net.core.rmem_max = {rmem_max}, net.core.rmem_default = {rmem_default}"
        ));
        if rmem_max < 134_217_728 {
            fix.push("sysctl -w net.core.rmem_max=134217728".into());
        }
        if t.by_reason.contains_key("PROTO_MEM") {
            evidence.push(format!(
                "net.ipv4.udp_mem = {}, net.ipv4.tcp_mem = {}",
                w.facts.sysctl("net.ipv4.udp_mem"),
                w.facts.sysctl("net.ipv4.tcp_mem")
            ));
            fix.push(
                "raise net.ipv4.udp_mem / net.ipv4.tcp_mem (protocol memory is exhausted)".into(),
            );
        }
        if t.by_reason.contains_key("TCP_LISTEN_OVERFLOW") {
            evidence.push(format!(
                "net.core.somaxconn = {}",
                w.facts.sysctl("net.core.somaxconn")
            ));
            fix.push(
                "sysctl -w net.core.somaxconn=65535 and a larger listen() backlog; accept faster"
                    .into(),
            );
        }
        findings.push(Finding {
            cause: Cause::SocketBuffer,
            severity: severity(sockbuf, secs),
            summary,
            evidence,
            fix,
        });
    }
    findings
}

/// A firewall rule dropped.
/// Observe mode: each observed XDP program that dropped (or aborted) in
/// the window, with its verdicts and whom it dropped.
fn xdp_programs(w: &Window) -> Vec<Finding> {
    let mut findings = Vec::new();
    for p in &w.report.xdp_programs {
        let v = &p.total;
        let dropped = v.drop + v.aborted;
        if dropped == 0 {
            continue;
        }
        let seen: u64 = v.each().iter().map(|(_, n)| n).sum();
        let mut evidence = vec![format!(
            "{} (id {}, {}) on {}: {}",
            p.program,
            p.id,
            p.mode,
            p.iface,
            v.each()
                .iter()
                .map(|(a, n)| format!("{a} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        for s in w
            .report
            .drop_sources
            .iter()
            .filter(|s| s.reason == "XDP_DROP" || s.reason == "XDP_ABORTED")
            .take(5)
        {
            evidence.push(format!("{} from {}: {}", s.reason, s.address, s.total));
        }
        let mut fix = vec![
            format!("xdp-loader status {} (what the hook holds)", p.iface),
            "these drops are the program's own policy: review its rules before tuning the host"
                .into(),
        ];
        if p.program.starts_with("xdpfilt") {
            fix.push("xdp-filter status (its rules and their hit counters)".into());
        }
        if v.aborted > 0 {
            fix.push(
                "XDP_ABORTED is a program error: perf record -e xdp:xdp_exception, or fix the program"
                    .into(),
            );
        }
        findings.push(Finding {
            cause: Cause::XdpProgram,
            severity: severity(dropped, w.secs),
            summary: format!(
                "the XDP program {} on {} drops {dropped} of {seen} packets ({:.0}%)",
                p.program,
                p.iface,
                100.0 * dropped as f64 / seen.max(1) as f64
            ),
            evidence,
            fix,
        });
    }
    findings
}

fn netfilter(w: &Window) -> Vec<Finding> {
    let (before, after, t, secs) = (w.before, w.after, &w.t, w.secs);
    let mut findings = Vec::new();
    if let Some(n) = t.by_reason.get("NETFILTER_DROP").copied() {
        let mut evidence = reason_evidence(t, &["NETFILTER_DROP"], secs);
        let grown = rule_deltas(&before.rules, &after.rules);
        let dropping: Vec<_> = grown
            .iter()
            .filter(|(r, _)| r.rule.contains("-j DROP") || r.rule.contains("-j REJECT"))
            .collect();
        for (r, d) in &dropping {
            evidence.push(format!(
                "{} table {} chain {} (hook {}): `{}` matched {d} packets",
                r.family,
                r.table,
                r.chain,
                hook_of(&r.chain),
                r.rule
            ));
        }
        if dropping.is_empty() {
            evidence.push("no iptables DROP/REJECT rule counter moved: look at nftables rules and chain policies".into());
        }
        let summary = match dropping.first() {
            Some((r, _)) => format!(
                "a firewall rule drops packets: `{}` ({} table {})",
                r.rule, r.family, r.table
            ),
            None => "the firewall (netfilter) drops packets".into(),
        };
        findings.push(Finding {
            cause: Cause::Netfilter,
            severity: severity(n, secs),
            summary,
            evidence,
            fix: vec![
                "iptables -L -v -n -x --line-numbers; ip6tables -L -v -n -x --line-numbers".into(),
                "nft list ruleset (counters show which rule matched)".into(),
                "if the drops are not wanted, delete or narrow the rule (iptables -D CHAIN N)"
                    .into(),
            ],
        });
    }
    findings
}

/// Reverse-path filtering dropped.
fn rp_filter(w: &Window) -> Vec<Finding> {
    let (t, secs) = (&w.t, w.secs);
    let mut findings = Vec::new();
    let rp = t.by_reason.get("IP_RPFILTER").copied().unwrap_or(0);
    if rp > 0 {
        let mut evidence = reason_evidence(t, &["IP_RPFILTER"], secs);
        let mut fix = vec!["sysctl -w net.ipv4.conf.all.rp_filter=2".to_string()];
        evidence.push(format!(
            "net.ipv4.conf.all.rp_filter = {}",
            w.facts.sysctl("net.ipv4.conf.all.rp_filter")
        ));
        for i in t.ifaces.get("IP_RPFILTER").cloned().unwrap_or_default() {
            if i.contains('@') || i == "-" {
                continue;
            }
            let v = w.facts.sysctl(&format!("net.ipv4.conf.{i}.rp_filter"));
            evidence.push(format!("net.ipv4.conf.{i}.rp_filter = {v}"));
            fix.push(format!("sysctl -w net.ipv4.conf.{i}.rp_filter=2"));
        }
        fix.push(
            "or route the sources back through the interface they arrive on (asymmetric routing)"
                .into(),
        );
        findings.push(Finding {
            cause: Cause::IpRpfilter,
            severity: severity(rp, secs),
            summary: "reverse-path filtering drops packets whose source is not routed back through the interface they came in on".into(),
            evidence,
            fix,
        });
    }
    findings
}

/// Martian sources or destinations.
fn martians(w: &Window) -> Vec<Finding> {
    let (t, secs) = (&w.t, w.secs);
    let mut findings = Vec::new();
    let martian_names = [
        "IP_INVALID_SOURCE",
        "IP_LOCAL_SOURCE",
        "IP_LOCALNET",
        "IP_INVALID_DEST",
    ];
    let (martian, m_names) = sum_reasons(t, |n| martian_names.contains(&n));
    if martian > 0 {
        let mut evidence = reason_evidence(t, &m_names, secs);
        evidence.push(format!(
            "net.ipv4.conf.all.log_martians = {}",
            w.facts.sysctl("net.ipv4.conf.all.log_martians")
        ));
        findings.push(Finding {
            cause: Cause::IpMartian,
            severity: severity(martian, secs),
            summary: "martian packets: impossible source or destination addresses (spoofed or misrouted)".into(),
            evidence,
            fix: vec![
                "sysctl -w net.ipv4.conf.all.log_martians=1, then read the sources with dmesg | grep -i martian".into(),
                "filter spoofed sources at the edge (BCP 38)".into(),
            ],
        });
    }
    findings
}

/// No route to the destination.
fn no_route(w: &Window) -> Vec<Finding> {
    let (t, secs) = (&w.t, w.secs);
    let mut findings = Vec::new();
    let (noroute, nr_names) = sum_reasons(t, |n| {
        matches!(n, "IP_INNOROUTES" | "IP_OUTNOROUTES" | "IP_INADDRERRORS")
    });
    if noroute > 0 {
        let mut evidence = reason_evidence(t, &nr_names, secs);
        let defaults = iface::default_route_ifaces();
        evidence.push(if defaults.is_empty() {
            "no default route".into()
        } else {
            format!("default route via {}", defaults.join(", "))
        });
        evidence.push(format!(
            "net.ipv4.ip_forward = {}",
            w.facts.sysctl("net.ipv4.ip_forward")
        ));
        findings.push(Finding {
            cause: Cause::IpNoRoute,
            severity: severity(noroute, secs),
            summary: "no route to the destination: packets are dropped by the routing lookup"
                .into(),
            evidence,
            fix: vec![
                "ip route get <destination> shows the lookup; ip route show lists the table".into(),
                "add the missing route: ip route add <prefix> via <gateway> (or a default route)"
                    .into(),
            ],
        });
    }
    findings
}

/// Bad checksums.
fn checksums(w: &Window) -> Vec<Finding> {
    let (report, t, names, secs) = (w.report, &w.t, &w.names, w.secs);
    let mut findings = Vec::new();
    let (csum, c_names) = sum_reasons(t, |n| n.contains("CSUM"));
    if csum > 0 {
        let mut evidence = reason_evidence(t, &c_names, secs);
        for name in names.iter() {
            for (c, v) in counter_total(report, name, |c| c == "rx_crc_errors") {
                evidence.push(format!("{name} {c} +{v}"));
            }
        }
        findings.push(Finding {
            cause: Cause::IpChecksum,
            severity: severity(csum, secs),
            summary: "packets arrive with bad checksums: corruption on the wire, a faulty NIC, or offload trouble".into(),
            evidence,
            fix: names
                .iter()
                .map(|n| format!("ethtool -k {n} | grep checksum; test with ethtool -K {n} rx off; check cable/optics"))
                .collect(),
        });
    }
    findings
}

/// Malformed or unsupported headers.
fn bad_headers(w: &Window) -> Vec<Finding> {
    let (t, secs) = (&w.t, w.secs);
    let mut findings = Vec::new();
    let (hdr, h_names) = sum_reasons(t, |n| {
        matches!(
            n,
            "IP_INHDR"
                | "PKT_TOO_SMALL"
                | "HDR_TRUNC"
                | "IPV6_BAD_EXTHDR"
                | "IP_NOPROTO"
                | "UNHANDLED_PROTO"
                | "INVALID_PROTO"
        )
    });
    if hdr > 0 {
        findings.push(Finding {
            cause: Cause::IpHeader,
            severity: severity(hdr, secs),
            summary: "malformed or unsupported packets: bad headers, unknown protocols".into(),
            evidence: reason_evidence(t, &h_names, secs),
            fix: vec!["find the senders (dropscope watch top sources) and filter malformed traffic at the edge".into()],
        });
    }
    findings
}

/// Fragment reassembly failed.
fn fragments(w: &Window) -> Vec<Finding> {
    let (t, secs) = (&w.t, w.secs);
    let mut findings = Vec::new();
    let (frag, f_names) = sum_reasons(t, |n| n.starts_with("FRAG") || n == "DUP_FRAG");
    if frag > 0 {
        let mut evidence = reason_evidence(t, &f_names, secs);
        evidence.push(format!(
            "net.ipv4.ipfrag_high_thresh = {}, net.ipv4.ipfrag_time = {}",
            w.facts.sysctl("net.ipv4.ipfrag_high_thresh"),
            w.facts.sysctl("net.ipv4.ipfrag_time")
        ));
        findings.push(Finding {
            cause: Cause::IpFragments,
            severity: severity(frag, secs),
            summary: "fragment reassembly fails: lost, late or overlapping fragments (or a fragment flood)".into(),
            evidence,
            fix: vec!["sysctl -w net.ipv4.ipfrag_high_thresh=8388608 if legitimate traffic fragments; avoid fragmentation (path MTU)".into()],
        });
    }
    findings
}

/// Frames damaged on the wire.
fn physical(w: &Window) -> Vec<Finding> {
    let (report, names, secs) = (w.report, &w.names, w.secs);
    let mut findings = Vec::new();
    for name in names.iter() {
        let phys = counter_total(report, name, |c| {
            matches!(c, "rx_crc_errors" | "rx_frame" | "rx_length_errors")
        });
        if phys.is_empty() {
            continue;
        }
        let mut evidence: Vec<String> = phys
            .iter()
            .map(|(c, v)| format!("{name} {c} +{v}"))
            .collect();
        let mut fix = vec![format!(
            "check the cable, optics and switch port of {name}; ethtool {name}"
        )];
        if let Some((speed, duplex)) = w.facts.iface(name).and_then(|f| f.link) {
            evidence.push(format!(
                "{name} link {} {}",
                speed
                    .map(|s| format!("{s} Mb/s"))
                    .unwrap_or_else(|| "speed unknown".into()),
                match duplex {
                    Some(true) => "full duplex",
                    Some(false) => "HALF duplex",
                    None => "duplex unknown",
                }
            ));
            if duplex == Some(false) {
                fix.push(format!(
                    "ethtool -s {name} autoneg on (a duplex mismatch causes CRC and frame errors)"
                ));
            }
        }
        findings.push(Finding {
            cause: Cause::Physical,
            severity: severity(phys.iter().map(|(_, v)| v).sum(), secs),
            summary: format!(
                "{name}: frames arrive damaged (CRC/frame errors): a physical-layer problem"
            ),
            evidence,
            fix,
        });
    }
    findings
}

/// A queueing discipline dropped on transmit.
fn qdisc(w: &Window) -> Vec<Finding> {
    let (reasons, report, t, names, secs) = (w.reasons, w.report, &w.t, &w.names, w.secs);
    let mut findings = Vec::new();
    let (qd, q_names) = sum_reasons(t, |n| reasons_category(reasons, n) == Category::QdiscTx);
    if qd > 0 {
        let mut evidence = reason_evidence(t, &q_names, secs);
        let kinds: Vec<String> = q_names
            .iter()
            .filter_map(|n| queue_drop(n).map(|k| format!("{n}: {k}")))
            .collect();
        if !kinds.is_empty() {
            evidence.push(kinds.join(", "));
        }
        let mut fix = Vec::new();
        for name in names.iter() {
            for (c, v) in counter_total(report, name, |c| c == "tx_dropped") {
                evidence.push(format!("{name} {c} +{v}"));
            }
            fix.push(format!(
                "tc -s qdisc show dev {name} (which qdisc drops, its limit and backlog)"
            ));
        }
        fix.push("raise the queue limit (tc qdisc change dev <iface> root <qdisc> ... limit <packets|bytes>) or the shaping rate, or use fq_codel/cake for fairness".into());
        findings.push(Finding {
            cause: Cause::Qdisc,
            severity: severity(qd, secs),
            summary: "a queueing discipline drops packets on transmit: the egress queue is full or shaped".into(),
            evidence,
            fix,
        });
    }
    findings
}

/// Nobody listens on the port.
fn no_socket(w: &Window) -> Vec<Finding> {
    let (t, secs) = (&w.t, w.secs);
    let mut findings = Vec::new();
    if let Some(n) = t.by_reason.get("NO_SOCKET").copied() {
        findings.push(Finding {
            cause: Cause::NoSocket,
            severity: if n as f64 / secs >= 1000.0 {
                Severity::Critical
            } else {
                Severity::Info
            },
            summary: "packets for ports nobody listens on (scans, stale clients, or a flood at closed ports)".into(),
            evidence: reason_evidence(t, &["NO_SOCKET"], secs),
            fix: vec!["start the expected service, or drop the traffic before the stack (firewall, dropscope top sources)".into()],
        });
    }
    findings
}

/// A full link drops upstream, where the host can't see it.
fn upstream(w: &Window) -> Vec<Finding> {
    let (report, t, secs) = (w.report, &w.t, w.secs);
    let mut findings = Vec::new();
    let host_drops: u64 = t.by_reason.values().sum();
    for i in &report.interfaces {
        if let Some((Some(speed), _)) = w.facts.iface(&i.iface).and_then(|f| f.link) {
            let bps_in = i.delta.bytes as f64 * 8.0 / secs;
            let share = bps_in / (speed as f64 * 1e6);
            if share >= 0.9 && (host_drops as f64) < i.delta.packets as f64 * 0.001 {
                findings.push(Finding {
                    cause: Cause::UpstreamFlood,
                    severity: Severity::Critical,
                    summary: format!(
                        "{}: inbound traffic is at {:.0}% of the {speed} Mb/s link with almost no host drops: packets are lost upstream, before this host",
                        i.iface,
                        share * 100.0
                    ),
                    evidence: vec![format!("{} receives {:.0} Mb/s, {:.0} pps", i.iface, bps_in / 1e6, i.pps)],
                    fix: vec!["ask the upstream provider for filtering, scrubbing or a BGP blackhole of the attacked address".into()],
                });
            }
        }
    }
    findings
}

/// Where reasonless drops happen, busiest first.
fn kernel_locations(
    reasons: &ReasonTable,
    snap: &Snapshot,
    symbols: Option<&Symbols>,
) -> Vec<PlaceRow> {
    // Summed over interfaces: the doctor names places, not ports.
    let mut by_place: std::collections::HashMap<(u32, u64), u64> = Default::default();
    for (k, v) in &snap.locations {
        *by_place.entry((k.reason, k.location)).or_default() += v;
    }
    let mut locations: Vec<PlaceRow> = by_place
        .into_iter()
        .map(|((reason, location), drops)| PlaceRow {
            reason: reasons.name(reason),
            location: symbols
                .as_ref()
                .and_then(|s| s.resolve(location))
                .unwrap_or_else(|| format!("{location:#x}")),
            address: format!("{location:#x}"),
            drops,
        })
        .collect();
    locations.sort_by(|a, b| b.drops.cmp(&a.drops).then(a.location.cmp(&b.location)));
    locations.truncate(20);
    locations
}

/// Drops the kernel gave no reason for: where they happen.
fn unspecified(w: &Window, locations: &[PlaceRow]) -> Vec<Finding> {
    let (t, secs) = (&w.t, w.secs);
    let mut findings = Vec::new();
    if let Some(n) = t.by_reason.get("NOT_SPECIFIED").copied() {
        findings.push(Finding {
            cause: Cause::Unspecified,
            severity: if n as f64 / secs >= 1000.0 {
                Severity::Warning
            } else {
                Severity::Info
            },
            summary: "drops without a specific reason: see where in the kernel they happen".into(),
            evidence: locations
                .iter()
                .take(5)
                .map(|l| format!("{} at {}: {}", l.reason, l.location, l.drops))
                .collect(),
            fix: vec!["perf or bpftrace on the named function shows the path; dropscope doctor again after changes".into()],
        });
    }
    findings
}

/// Cheap, per-interval diagnosis from the drop rows alone (doctor reads the
/// deeper evidence): what each drop this interval most likely means.
pub(crate) fn hints(rows: &[crate::report::DropRow]) -> Vec<Hint> {
    rows.iter()
        .filter(|r| r.delta > 0)
        .map(|r| {
            let (cause, hint) = hint_for(r.category, &r.reason);
            Hint {
                cause,
                reason: r.reason.clone(),
                iface: r.iface.clone(),
                rate: r.rate,
                hint: hint.into(),
            }
        })
        .collect()
}

fn hint_for(category: Category, reason: &str) -> (Cause, &'static str) {
    match (category, reason) {
        (_, "CPU_BACKLOG") => (
            Cause::Backlog,
            "per-CPU backlog full: raise net.core.netdev_max_backlog, enable RPS",
        ),
        (_, "FULL_RING") => (
            Cause::NicRing,
            "ring full: ethtool -G <iface> rx <max>, more queues with ethtool -L",
        ),
        (_, "IP_RPFILTER") => (
            Cause::IpRpfilter,
            "reverse-path filter: net.ipv4.conf.*.rp_filter=2 or fix asymmetric routes",
        ),
        (_, "IP_INNOROUTES" | "IP_OUTNOROUTES" | "IP_INADDRERRORS") => (
            Cause::IpNoRoute,
            "no route: ip route get <dst>, add the route",
        ),
        (_, "IP_INVALID_SOURCE" | "IP_LOCAL_SOURCE" | "IP_LOCALNET" | "IP_INVALID_DEST") => (
            Cause::IpMartian,
            "martian addresses: log_martians=1, filter spoofed sources",
        ),
        (Category::Netfilter, _) => (
            Cause::Netfilter,
            "a firewall rule drops: iptables -L -v -n -x / nft list ruleset",
        ),
        (Category::SocketBuffer, _) => (
            Cause::SocketBuffer,
            "app reads too slowly: larger SO_RCVBUF, net.core.rmem_max",
        ),
        (Category::NoSocket, _) => (
            Cause::NoSocket,
            "nothing listens on the port: scans or a closed-port flood",
        ),
        (Category::QdiscTx, _) => (
            Cause::Qdisc,
            "egress queue full or shaped: tc -s qdisc show dev <iface>",
        ),
        (Category::Ip, r) if r.contains("CSUM") => (
            Cause::IpChecksum,
            "bad checksums: cable, NIC or offload (ethtool -k)",
        ),
        (Category::Ip, r) if r.starts_with("FRAG") => (
            Cause::IpFragments,
            "fragment reassembly fails: ipfrag_high_thresh, path MTU",
        ),
        (Category::Ip, _) => (
            Cause::IpHeader,
            "the IP layer rejects malformed or unroutable packets",
        ),
        (Category::Tcp, _) => (
            Cause::Tcp,
            "TCP state checks: usually stale or out-of-window segments",
        ),
        (Category::Xdp, _) => (Cause::Xdp, "an XDP program drops"),
        _ => (
            Cause::Unspecified,
            "see dropscope doctor: where in the kernel",
        ),
    }
}

/// A finding that points at drops in other network namespaces.
fn other_namespaces(rows: &[crate::report::DropRow]) -> Option<Finding> {
    if rows.is_empty() {
        return None;
    }
    let mut by_ns: BTreeMap<String, u64> = BTreeMap::new();
    let mut evidence = Vec::new();
    for r in rows {
        let ns = r
            .iface
            .split_once('@')
            .map(|(_, n)| n.to_string())
            .unwrap_or_default();
        *by_ns.entry(ns).or_default() += r.total;
        evidence.push(format!("{}: {} drops on {}", r.reason, r.total, r.iface));
    }
    evidence.truncate(20);
    let fix = by_ns
        .keys()
        .map(|ns| match ns.strip_prefix("netns:") {
            Some(inode) => format!(
                "namespace inode {inode}: nsenter --net=/proc/<pid>/ns/net dropscope doctor (a process of that namespace)"
            ),
            None if ns == "host" => "nsenter --net=/proc/1/ns/net dropscope doctor".to_string(),
            None => format!("ip netns exec {ns} dropscope doctor"),
        })
        .collect();
    Some(Finding {
        cause: Cause::OtherNamespace,
        severity: Severity::Info,
        summary: format!(
            "{} drops happened in other network namespaces ({}): diagnose them there, where their sockets, sysctls and firewall live",
            rows.iter().map(|r| r.total).sum::<u64>(),
            by_ns.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        evidence,
        fix,
    })
}

fn reasons_category(reasons: &ReasonTable, name: &str) -> Category {
    match reasons.value_of(name) {
        Some(v) => reasons.category(v),
        None => crate::sys::reasons::category(name),
    }
}

/// Tail-drop (arrival rejected at a full queue) or head-drop (AQM drops
/// from the head at dequeue), where the reason tells.
pub(crate) fn queue_drop(reason: &str) -> Option<QueueDrop> {
    match reason {
        "QDISC_DROP" | "QDISC_OVERLIMIT" | "FQ_FLOW_LIMIT" | "FQ_BAND_LIMIT" => {
            Some(QueueDrop::TailDrop)
        }
        "QDISC_CONGESTED" | "CAKE_FLOOD" | "FQ_HORIZON_LIMIT" | "DUALPI2_STEP_DROP" => {
            Some(QueueDrop::HeadDrop)
        }
        _ => None,
    }
}

pub(crate) fn render(d: &Diagnosis) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dropscope doctor: watched {} for {:.1} s; {} drops",
        d.interfaces.join(", "),
        d.window_s,
        d.report.drops_total
    );
    if d.findings.is_empty() {
        let _ = writeln!(s, "\nNo drops and no loss counters moved: nothing to fix.");
    }
    for f in &d.findings {
        let _ = writeln!(s, "\n[{}] {}: {}", f.severity, f.cause, f.summary);
        for e in &f.evidence {
            let _ = writeln!(s, "  evidence: {e}");
        }
        for x in &f.fix {
            let _ = writeln!(s, "  fix:      {x}");
        }
        for p in d.patterns.iter().filter(|p| {
            f.evidence
                .iter()
                .any(|e| e.starts_with(&format!("{}:", p.reason)))
        }) {
            let _ = writeln!(
                s,
                "  pattern:  {} {} (Fano {:.1}, {} bursts, p50 burst {} drops, {:.0}% in bursts){}",
                p.reason,
                p.pattern.verdict,
                p.pattern.fano,
                p.pattern.bursts,
                p.pattern.burst_len_p50,
                p.pattern.share_in_bursts * 100.0,
                p.queue_drop.map(|q| format!(", {q}")).unwrap_or_default()
            );
        }
    }
    if !d.locations.is_empty() {
        let _ = writeln!(s, "\nWhere reasonless drops happen:");
        for l in &d.locations {
            let _ = writeln!(s, "  {:<14} {:<48} {:>10}", l.reason, l.location, l.drops);
        }
    }
    let _ = writeln!(
        s,
        "\nSysctl audit for high-PPS hosts (read-only; apply the lines you want, or put them in /etc/sysctl.d/):"
    );
    for a in &d.sysctl_audit {
        let _ = writeln!(
            s,
            "  {:<30} {:<24} {}",
            a.sysctl,
            a.current,
            a.apply.clone().unwrap_or_else(|| "ok".into())
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_compares_every_field() {
        assert!(audit_ok("250000", "250000"));
        assert!(!audit_ok("1000", "250000"));
        assert!(audit_ok("4096 131072 134217728", "4096 87380 134217728"));
        assert!(!audit_ok("4096 131072 6291456", "4096 87380 134217728"));
        assert!(!audit_ok("?", "1"));
    }

    #[test]
    fn rule_counters_are_diffed_in_order() {
        let r = |rule: &str, p| Rule {
            family: "iptables",
            table: "filter".into(),
            chain: "INPUT".into(),
            rule: rule.into(),
            packets: p,
        };
        let before = vec![r("-A INPUT -j DROP", 5), r("-A INPUT -j DROP", 7)];
        let after = vec![
            r("-A INPUT -j DROP", 5),
            r("-A INPUT -j DROP", 10),
            r("-A INPUT -p tcp -j REJECT", 2),
        ];
        let d = rule_deltas(&before, &after);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].1, 3);
        assert_eq!(d[1].1, 2);
    }

    /// A window in which vb dropped on a full per-CPU backlog.
    fn backlog_report() -> Report {
        serde_json::from_value(serde_json::json!({
            "schema": "dropscope.watch/1", "ts": 0.0, "interval_s": 1.0, "elapsed_s": 1.0,
            "drops_delta": 5000, "drops_total": 5000,
            "drops": [{"reason": "CPU_BACKLOG", "reason_code": 7, "category": "ring-backlog",
                       "iface": "vb", "ifindex": 2, "delta": 5000, "rate": 5000.0, "total": 5000}],
            "interfaces": [], "counters": [
                {"iface": "softnet", "counter": "backlog_dropped", "delta": 5000, "total": 5000, "value": 5000}],
            "top_sources": [], "top_ports": [], "top_sources_fresh": true, "locations": [],
            "drop_sources": [], "drop_ports": [], "xdp_programs": [], "attacks": [], "diagnosis": [],
            "health": {"drop_events": 5000, "map_full": 0, "read_errors": 0, "other_netns": 0,
                       "events_lost": 0, "sources_tracked": 0, "sources_inserted": 0,
                       "sources_evicted": 0, "unattributed": 0, "drop_rows": 1}
        }))
        .unwrap()
    }

    fn facts(backlog: &str, rps: bool) -> HostFacts {
        let mut f = HostFacts {
            cpus: 4,
            ..HostFacts::default()
        };
        f.sysctls
            .insert("net.core.netdev_max_backlog".into(), backlog.into());
        f.ifaces.insert(
            "vb".into(),
            IfaceFacts {
                rps: Some(rps),
                ..IfaceFacts::default()
            },
        );
        f
    }

    /// The rules read only the window and the host facts handed to them:
    /// the same drops on two different hosts give each host's fix.
    #[test]
    fn rules_are_pure_functions_of_the_window_and_the_host() {
        let report = backlog_report();
        let reasons = ReasonTable::from_pairs([("SKB_DROP_REASON_CPU_BACKLOG".to_string(), 7)]);
        let empty = Evidence {
            nic: BTreeMap::new(),
            udp: Vec::new(),
            rules: Vec::new(),
        };
        let run = |facts: &HostFacts| {
            let w = Window {
                reasons: &reasons,
                report: &report,
                before: &empty,
                after: &empty,
                facts,
                t: totals(&report, &reasons),
                names: vec!["vb"],
                secs: 1.0,
            };
            backlog(&w)
        };
        let small = run(&facts("1000", false));
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].cause, Cause::Backlog);
        assert_eq!(small[0].severity, Severity::Critical);
        assert!(
            small[0]
                .evidence
                .contains(&"net.core.netdev_max_backlog = 1000".to_string())
        );
        assert!(
            small[0]
                .fix
                .contains(&"sysctl -w net.core.netdev_max_backlog=250000".to_string())
        );
        assert!(
            small[0]
                .fix
                .contains(&"echo f > /sys/class/net/vb/queues/rx-0/rps_cpus".to_string())
        );
        let big = run(&facts("100000", true));
        assert!(
            big[0]
                .fix
                .contains(&"sysctl -w net.core.netdev_max_backlog=400000".to_string())
        );
        assert!(big[0].evidence.contains(&"vb RPS on".to_string()));
        assert!(!big[0].fix.iter().any(|f| f.contains("rps_cpus")));
        // And the audit reads the same facts.
        let audit = sysctl_audit(&facts("1000", true));
        let row = audit
            .iter()
            .find(|r| r.sysctl == "net.core.netdev_max_backlog")
            .unwrap();
        assert_eq!((row.current.as_str(), row.ok), ("1000", false));
        assert!(
            audit
                .iter()
                .filter(|r| r.sysctl != "net.core.netdev_max_backlog")
                .all(|r| r.current == "not visible from this network namespace")
        );
    }

    #[test]
    fn queue_drop_kinds() {
        assert_eq!(queue_drop("QDISC_OVERLIMIT"), Some(QueueDrop::TailDrop));
        assert_eq!(queue_drop("QDISC_CONGESTED"), Some(QueueDrop::HeadDrop));
        assert_eq!(queue_drop("NO_SOCKET"), None);
    }
}
