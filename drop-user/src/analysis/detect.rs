//! Flood detection and classification: thresholds and adaptive baselines per
//! metric, attack classes from the packet shapes XDP counts, few vs many and
//! spoofed vs real sources, DDoS-induced loss vs congestion, and the attack
//! events (start, update, end) with hysteresis.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use drop_common::{SKETCH_DEPTH, SKETCH_WIDTH, XdpConfig};
use serde::{Deserialize, Serialize};

use crate::{
    kernel::EpochSummary,
    ports::reflector_protocol,
    report::{
        AttackEvent, IfaceReport, LossVerdict, Measured, PortRate, ProgramDropShare, ReasonCount,
        ShapeCounts, SketchBound, SourceShare, Spoofing, Vector, VectorStart,
    },
    sys::reasons::Category,
    taxonomy::{
        AttackClass, KernelTrigger, L4, LossKind, Metric, Phase, SourceSpread, SpoofVerdict,
        Threshold, Trigger,
    },
};

pub(crate) use crate::report::EVENT_SCHEMA;

/// Absolute thresholds; 0 turns one off. Rates are per second.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Thresholds {
    pub source_pps: f64,
    pub source_bps: f64,
    pub port_pps: f64,
    pub iface_pps: f64,
    pub iface_bps: f64,
    pub syn_pps: f64,
}

impl Thresholds {
    /// Every threshold with its config key (the flag is the key with '-'),
    /// in one order: what the config and the flags validate and set.
    pub(crate) fn each_mut(&mut self) -> [(&'static str, &mut f64); 6] {
        [
            ("source_pps", &mut self.source_pps),
            ("source_bps", &mut self.source_bps),
            ("port_pps", &mut self.port_pps),
            ("iface_pps", &mut self.iface_pps),
            ("iface_bps", &mut self.iface_bps),
            ("syn_pps", &mut self.syn_pps),
        ]
    }
}

/// Adaptive-baseline knobs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Adaptive {
    /// A spike is above mean + k_sigma * stddev ...
    pub k_sigma: f64,
    /// ... and above multiple * mean ...
    pub multiple: f64,
    /// ... and above the metric's floor (per second), scaled by this.
    pub floor_scale: f64,
    /// An attack ends after this many seconds without a trigger.
    pub end_after_s: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self {
            k_sigma: 4.0,
            multiple: 5.0,
            floor_scale: 1.0,
            end_after_s: 3.0,
        }
    }
}

/// Detection settings: the config file's `[thresholds]` and `[detection]`
/// (read from the config file by `config`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub(crate) struct DetectConfig {
    pub thresholds: Thresholds,
    pub detection: Adaptive,
}

impl DetectConfig {
    /// In-kernel trigger counts for one interval of `secs` (per CPU: a flood
    /// spread over N CPUs triggers at N times the rate).
    pub(crate) fn kernel_triggers(&self, secs: f64, base: XdpConfig) -> XdpConfig {
        let n = |rate: f64| {
            if rate > 0.0 {
                (rate * secs).ceil().max(1.0) as u32
            } else {
                0
            }
        };
        XdpConfig {
            trigger_source: n(self.thresholds.source_pps),
            trigger_port: n(self.thresholds.port_pps),
            trigger_packets: n(self.thresholds.iface_pps),
            trigger_syn: n(self.thresholds.syn_pps),
            ..base
        }
    }
}

/// A spike holds at least this many seconds' worth of its floor in
/// packets (at the floor rate, the packets of a 50 ms sample).
const MIN_SPIKE_SECS: f64 = 0.05;

/// Attack-shaped metrics and their floors (per second).
const METRICS: [(Metric, f64); 6] = [
    (Metric::Syn, 1000.0),
    (Metric::AckRst, 5000.0),
    (Metric::Udp, 5000.0),
    (Metric::ReflectorUdp, 1000.0),
    (Metric::Icmp, 1000.0),
    (Metric::Fragments, 1000.0),
];

/// Moving mean and variance (exponentially weighted).
#[derive(Clone, Debug, Default)]
struct Baseline {
    mean: f64,
    var: f64,
    samples: u32,
}

impl Baseline {
    const ALPHA: f64 = 0.2;

    fn update(&mut self, v: f64) {
        if self.samples == 0 {
            self.mean = v;
            self.var = 0.0;
        } else {
            let d = v - self.mean;
            self.mean += Self::ALPHA * d;
            self.var = (1.0 - Self::ALPHA) * (self.var + Self::ALPHA * d * d);
        }
        self.samples += 1;
    }

    /// Whether rate `v`, measured over `secs`, is a spike. The floor holds
    /// for the packets too, not only the rate: a sample a few ms long
    /// (the first, or one a trigger brought early) holding two ICMPv6
    /// packets from a link coming up is "1000 pps", and with no baseline
    /// yet it started an ICMP flood.
    fn spike(&self, v: f64, secs: f64, a: &Adaptive, floor: f64) -> bool {
        let floor = floor * a.floor_scale;
        if v < floor || v * secs < floor * MIN_SPIKE_SECS {
            return false;
        }
        if self.samples < 3 {
            return true;
        }
        v > self.mean + a.k_sigma * self.var.sqrt() && v > a.multiple * self.mean
    }
}

fn share(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// Attack vectors in one interval's shape, most confident first.
pub(crate) fn classify(d: &ShapeCounts, ports: &[(u16, u64)], distinct_dports: f64) -> Vec<Vector> {
    let p = d.packets;
    let g = |k: &str| d.protocols.get(k).copied().unwrap_or(0);
    let size = |k: &str| d.sizes.get(k).copied().unwrap_or(0);
    let conf = |x: f64| (x.clamp(0.0, 1.0) * 100.0).round() as u8;
    let mut v = Vec::new();

    let syn = share(d.tcp_syn, p);
    let ack_after_syn = share(d.tcp_ack_only, d.tcp_syn.max(1));
    v.push(Vector {
        class: AttackClass::SynFlood,
        confidence: conf((syn / 0.5).min(1.0) * if ack_after_syn < 0.2 { 1.0 } else { 0.5 }),
        protocol: None,
    });
    let ackrst = share(d.tcp_ack_only + d.tcp_rst, p);
    let handshakes = share(
        d.tcp_syn + d.tcp_syn_ack,
        (d.tcp_ack_only + d.tcp_rst).max(1),
    );
    v.push(Vector {
        class: AttackClass::AckRstFlood,
        confidence: conf((ackrst / 0.5).min(1.0) * if handshakes < 0.05 { 1.0 } else { 0.4 }),
        protocol: None,
    });
    let udp_pkts = g("udp");
    let refl_pkts: u64 = ports
        .iter()
        .filter(|(port, _)| reflector_protocol(*port).is_some())
        .map(|(_, n)| n)
        .sum();
    let top_refl = ports
        .iter()
        .filter(|(port, _)| reflector_protocol(*port).is_some())
        .max_by_key(|(_, n)| *n)
        .and_then(|(port, _)| reflector_protocol(*port));
    let large_pkts = size("le_01518") + size("le_09018") + size("gt_09018");
    let frag = share(d.fragments, p);
    // Reflection is judged within the UDP it arrives in (large answers and
    // their fragments from reflector ports), so that beside another vector
    // (SYN + reflection at once) it still shows; it needs a tenth of the
    // packets to count as a vector at all.
    let refl_conf = if share(udp_pkts, p) >= 0.1 {
        let of_udp = |n: u64| share(n, udp_pkts).min(1.0);
        (of_udp(refl_pkts) / 0.5).min(1.0)
            * (0.5 + 0.5 * (of_udp(large_pkts + d.fragments) / 0.5).min(1.0))
    } else {
        0.0
    };
    v.push(Vector {
        class: AttackClass::UdpReflection,
        confidence: conf(refl_conf),
        protocol: if refl_conf >= 0.4 {
            top_refl.map(Cow::Borrowed)
        } else {
            None
        },
    });
    let small = share(size("le_00064") + size("le_00128"), p);
    let udp = share(udp_pkts, p);
    v.push(Vector {
        class: AttackClass::UdpFlood,
        confidence: conf(
            (udp / 0.6).min(1.0)
                * if small >= 0.5 || distinct_dports >= 32.0 {
                    1.0
                } else {
                    0.3
                }
                * (1.0 - refl_conf),
        ),
        protocol: None,
    });
    v.push(Vector {
        class: AttackClass::IcmpFlood,
        confidence: conf((share(g("icmp") + g("icmpv6"), p) / 0.5).min(1.0)),
        protocol: None,
    });
    v.push(Vector {
        class: AttackClass::FragmentFlood,
        confidence: conf((frag / 0.5).min(1.0) * (1.0 - 0.6 * refl_conf)),
        protocol: None,
    });
    v.retain(|x| x.confidence >= 40);
    v.sort_by(|a, b| {
        b.confidence
            .cmp(&a.confidence)
            .then(a.class.as_str().cmp(b.class.as_str()))
    });
    if v.is_empty() {
        v.push(Vector {
            class: AttackClass::Volumetric,
            confidence: 50,
            protocol: None,
        });
    }
    v
}

/// TTLs reachable from a common initial TTL (32, 64, 128, 255) within 32
/// hops; anything else is unlikely to come from a real stack.
fn plausible_ttl(ttl: usize) -> bool {
    ttl <= 64 || (96..=128).contains(&ttl) || ttl >= 223
}

pub(crate) fn spoofing(ttl: &[u64], packets: u64, distinct_sources: f64) -> Spoofing {
    let total: u64 = ttl.iter().sum();
    let mut sorted: Vec<u64> = ttl.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let distinct = ttl.iter().filter(|c| share(**c, total) >= 0.005).count();
    let top3 = share(sorted.iter().take(3).sum(), total);
    let pps = if distinct_sources > 0.0 {
        packets as f64 / distinct_sources
    } else {
        0.0
    };
    let implausible = share(
        ttl.iter()
            .enumerate()
            .filter(|(t, _)| !plausible_ttl(*t))
            .map(|(_, c)| *c)
            .sum(),
        total,
    );
    // A uniform spread over ~200 TTLs puts each under the 0.5% that
    // `distinct` counts, so the spread alone is no proof; implausible TTLs
    // are, once enough were sampled.
    let verdict = if distinct >= 20
        || (total >= 100 && implausible >= 0.2)
        || (distinct_sources >= 1000.0 && pps < 3.0)
    {
        SpoofVerdict::Spoofed
    } else if top3 >= 0.9 && pps >= 5.0 {
        SpoofVerdict::Real
    } else {
        SpoofVerdict::Unclear
    };
    Spoofing {
        verdict,
        distinct_ttls: distinct,
        top3_ttl_share: top3,
        implausible_ttl_share: implausible,
        packets_per_source: pps,
    }
}

/// What the kernel says of an interface's traffic in one interval: the
/// evidence behind an attack's start and confidence. A spike in rate or
/// shape alone is not an attack: a download or a resolver's answers are
/// delivered to a socket that asked for them. Traffic the kernel refused as
/// unwanted (nobody listening, a firewall or XDP verdict, IP or TCP checks),
/// spoofed sources, or handshakes left half-open are.
struct Evidence {
    items: Vec<String>,
    unwanted: bool,
    /// The spoofing verdict behind the "spoofed sources" item; the event
    /// reports it as it is.
    spoofing: Spoofing,
}

/// (reason, drops) of the refused (or of the other) reasons, most first.
fn top_reasons<'a>(
    by_reason: &BTreeMap<&'a str, (u64, bool)>,
    refused: bool,
) -> Vec<(&'a str, u64)> {
    let mut top: Vec<(&str, u64)> = by_reason
        .iter()
        .filter(|(_, (_, u))| *u == refused)
        .map(|(r, (n, _))| (*r, *n))
        .collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    top
}

/// Drops that mean "nobody wanted this packet": no socket, a firewall or
/// XDP verdict, IP checks, TCP checks. Buffer, backlog and ring overflows
/// mean wanted traffic came too fast (overload), and TCP's in-flow
/// housekeeping (retransmitted or out-of-order data, old ACKs, a zero
/// window, data after close) happens to every busy connection: neither is
/// proof of an attack.
fn refused(d: &crate::report::DropRow) -> bool {
    const IN_FLOW_TCP: [&str; 12] = [
        "OLD_DATA",
        "OFOMERGE",
        "OFO_QUEUE_PRUNE",
        "OFO_DROP",
        "ZEROWINDOW",
        "OVERWINDOW",
        "OLD_ACK",
        "TOO_OLD_ACK",
        "ACK_UNSENT_DATA",
        "CLOSE",
        "OLD_SEQUENCE",
        "FASTOPEN",
    ];
    match d.category {
        Category::NoSocket
        | Category::Netfilter
        | Category::Xdp
        | Category::Blocklist
        | Category::Ip => true,
        Category::Tcp => !d
            .reason
            .strip_prefix("TCP_")
            .is_some_and(|r| IN_FLOW_TCP.contains(&r)),
        _ => false,
    }
}

/// Confidence without kernel evidence stays below what a mitigation hook
/// should act on.
const UNPROVEN_CONFIDENCE: u8 = 60;

fn evidence(
    i: &IfaceReport,
    report: &Measured,
    sample: &EpochSummary,
    vectors: &[Vector],
) -> Evidence {
    let packets = i.delta.packets;
    let mut items = Vec::new();
    let mut is_unwanted = false;
    let mut by_reason: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
    // A kernel that names no reason: any drop may be a refusal (reduced
    // mode; the item says so).
    let refusal = |d: &crate::report::DropRow| !report.reasons_named || refused(d);
    for d in report
        .drops
        .iter()
        .filter(|d| d.iface == i.iface && d.delta > 0)
    {
        let e = by_reason
            .entry(d.reason.as_str())
            .or_insert((0, refusal(d)));
        e.0 += d.delta;
    }
    let refusals: u64 = by_reason.values().filter(|(_, u)| *u).map(|(n, _)| n).sum();
    let overload: u64 = by_reason
        .values()
        .filter(|(_, u)| !*u)
        .map(|(n, _)| n)
        .sum();
    let pct = |n: u64| 100.0 * n as f64 / packets.max(1) as f64;
    if refusals > 0 && refusals * 100 >= packets {
        is_unwanted = true;
        let top = top_reasons(&by_reason, true);
        if !report.reasons_named {
            items.push("this kernel names no drop reasons: any drop counts as refused".into());
        }
        for (r, n) in top.into_iter().take(3) {
            // Drops lag the XDP count by up to an interval: at most 100%.
            items.push(format!(
                "{r}: {n} packets dropped ({:.0}% of the {packets} received)",
                pct(n).min(100.0)
            ));
        }
    } else if refusals + overload == 0 {
        items.push(format!(
            // Drops lag the XDP count by up to an interval: none counted
            // yet is not proof of delivery.
            "no drops on {} in this interval ({packets} packets)",
            i.iface
        ));
    } else {
        let names: Vec<&str> = top_reasons(&by_reason, false)
            .iter()
            .take(3)
            .map(|(r, _)| *r)
            .collect();
        items.push(format!(
            "{} of {packets} packets dropped, {overload} of them as overflow or unnamed ({}), not refusals",
            refusals + overload,
            names.join(", ")
        ));
    }
    // Per vector: the share of its protocol's packets dropped (from the
    // drop attribution by destination port, which has no interface: an
    // estimate, and only as complete as the top rows it keeps).
    let mut protos: Vec<(&'static str, AttackClass)> = Vec::new();
    for v in vectors {
        let proto = match v.class {
            AttackClass::SynFlood | AttackClass::AckRstFlood => "tcp",
            AttackClass::UdpFlood | AttackClass::UdpReflection => "udp",
            _ => continue,
        };
        if !protos.iter().any(|(p, _)| *p == proto) {
            protos.push((proto, v.class));
        }
    }
    for (proto, class) in protos {
        let seen = i.delta.protocols.get(proto).copied().unwrap_or(0);
        if seen == 0 {
            continue;
        }
        let dropped: u64 = report
            .drop_ports
            .iter()
            .filter(|d| d.proto == proto)
            .map(|d| d.delta)
            .sum();
        items.push(if dropped == 0 {
            format!("{class}: no {proto} drops in this interval ({seen} {proto} packets)")
        } else {
            format!(
                "{class}: ~{dropped} of its {seen} {proto} packets dropped ({:.0}%)",
                (100.0 * dropped as f64 / seen as f64).min(100.0)
            )
        });
    }
    let sp = spoofing(&i.delta.ttl, packets, sample.distinct_sources);
    if sp.verdict == SpoofVerdict::Spoofed {
        is_unwanted = true;
        items.push(format!(
            "spoofed sources: {} distinct TTLs, {:.0}% implausible, {:.1} packets per source",
            sp.distinct_ttls,
            100.0 * sp.implausible_ttl_share,
            sp.packets_per_source
        ));
    }
    let d = &i.delta;
    if vectors
        .first()
        .is_some_and(|v| v.class == AttackClass::SynFlood)
        && d.tcp_syn >= 100
        && d.tcp_ack_only * 5 < d.tcp_syn
    {
        is_unwanted = true;
        items.push(format!(
            "half-open handshakes: {} SYNs, {} ACKs",
            d.tcp_syn, d.tcp_ack_only
        ));
    }
    Evidence {
        items,
        unwanted: is_unwanted,
        spoofing: sp,
    }
}

struct Active {
    id: u64,
    /// The class and confidence it started with: an attack keeps its class
    /// through every update and its end (the wind-down after the traffic
    /// stops is not a new classification).
    class: AttackClass,
    confidence: u8,
    started: Instant,
    started_at: f64,
    last_trigger: Instant,
    trigger: Trigger,
    peak_pps: f64,
    peak_bps: f64,
    drops: BTreeMap<String, u64>,
    vector_starts: Vec<VectorStart>,
    /// Observed XDP programs' drops on this interface, and its packets,
    /// since the start.
    xdp_drops: BTreeMap<String, u64>,
    packets: u64,
}

/// Adds the vectors that show for the first time (confidence 50+).
fn add_vectors(starts: &mut Vec<VectorStart>, vectors: &[Vector]) {
    for v in vectors {
        if v.confidence >= 50
            && v.class != AttackClass::Volumetric
            && !starts.iter().any(|s| s.class == v.class)
        {
            starts.push(VectorStart {
                class: v.class,
                protocol: v.protocol.clone(),
                started_at: crate::units::unix_now(),
            });
        }
    }
}

/// Adds an interval's XDP drops on `iface` (per observed program).
fn add_xdp_drops(into: &mut BTreeMap<String, u64>, report: &Measured, iface: &str) {
    for d in &report.drops {
        if let Some(p) = &d.program
            && d.iface == iface
            && d.delta > 0
        {
            *into.entry(p.clone()).or_default() += d.delta;
        }
    }
}

pub(crate) struct Detector {
    pub config: DetectConfig,
    baselines: HashMap<(String, Metric), Baseline>,
    drop_baseline: Baseline,
    active: HashMap<String, Active>,
    next_id: u64,
    /// Kernel triggers waiting for the next sample: iface -> kind.
    pending: HashMap<u32, Trigger>,
    /// Per-source threshold verdicts from the last fresh source read.
    source_over: HashMap<String, Vec<Trigger>>,
}

fn metric(i: &IfaceReport, secs: f64, m: Metric) -> f64 {
    let d = &i.delta;
    let g = |k: &str| d.protocols.get(k).copied().unwrap_or(0) as f64;
    let refl: u64 = i
        .udp_src_ports
        .iter()
        .filter(|p| {
            p.port
                .parse::<u16>()
                .ok()
                .and_then(reflector_protocol)
                .is_some()
        })
        .map(|p| p.packets)
        .sum();
    let v = match m {
        Metric::Syn => d.tcp_syn as f64,
        Metric::AckRst => (d.tcp_ack_only + d.tcp_rst) as f64,
        Metric::Udp => g("udp"),
        Metric::ReflectorUdp => refl as f64,
        Metric::Icmp => g("icmp") + g("icmpv6"),
        Metric::Fragments => d.fragments as f64,
    };
    v / secs
}

impl Detector {
    pub(crate) fn new(config: DetectConfig) -> Self {
        Self {
            config,
            baselines: HashMap::new(),
            drop_baseline: Baseline::default(),
            active: HashMap::new(),
            next_id: 1,
            pending: HashMap::new(),
            source_over: HashMap::new(),
        }
    }

    /// Notes an in-kernel trigger; it starts an attack at the next sample.
    pub(crate) fn kernel_trigger(&mut self, ifindex: u32, kind: u32) {
        if let Some(k) = KernelTrigger::of(kind) {
            self.pending.insert(ifindex, Trigger::Kernel(k));
        }
    }

    /// Re-derives an event's source fields from a report whose top sources
    /// were read after the event was built.
    pub(crate) fn restate(&self, e: &mut AttackEvent, report: &Measured) {
        let Some(i) = report.interfaces.iter().find(|i| i.iface == e.iface) else {
            return;
        };
        let (top, spread) = top_sources(&report.top_sources, &e.iface, i.pps, e.distinct_sources);
        e.top_source_share = top.first().map(|s| s.share).unwrap_or(0.0);
        e.top_sources = top;
        e.sources = spread;
    }

    pub(crate) fn active_on(&self, iface: &str) -> bool {
        self.active.contains_key(iface)
    }

    /// Feeds one interval; returns the attack events it causes and the loss verdict.
    pub(crate) fn update(
        &mut self,
        report: &Measured,
        sample: &EpochSummary,
        heavy_ports: &[(drop_common::PortKey, u64)],
    ) -> (Vec<AttackEvent>, LossVerdict) {
        let secs = report.interval_s.max(1e-3);
        let mut events = Vec::new();
        for i in &report.interfaces {
            let mut triggers: Vec<Trigger> = Vec::new();
            if let Some(k) = self.pending.remove(&i.ifindex) {
                triggers.push(k);
            }
            let port_rates = self.thresholds(i, report, heavy_ports, secs, &mut triggers);
            let vectors = self.spikes(i, sample, secs, &mut triggers);
            events.extend(self.advance(i, report, sample, triggers, &vectors, port_rates));
        }
        let loss = self.loss(report, secs);
        (events, loss)
    }

    /// The absolute thresholds `i` crosses this interval (per-source ones
    /// as of the last fresh read of the source table), and the busiest
    /// destination ports' rates.
    fn thresholds(
        &mut self,
        i: &IfaceReport,
        report: &Measured,
        heavy_ports: &[(drop_common::PortKey, u64)],
        secs: f64,
        triggers: &mut Vec<Trigger>,
    ) -> Vec<PortRate> {
        let th = &self.config.thresholds;
        let top = report
            .top_sources
            .iter()
            .filter(|s| s.iface == i.iface)
            .max_by(|a, b| a.pps.total_cmp(&b.pps));
        if th.iface_pps > 0.0 && i.pps >= th.iface_pps {
            triggers.push(Trigger::Threshold(Threshold::IfacePps));
        }
        if th.iface_bps > 0.0 && i.bps >= th.iface_bps {
            triggers.push(Trigger::Threshold(Threshold::IfaceBps));
        }
        if th.syn_pps > 0.0 && i.delta.tcp_syn as f64 / secs >= th.syn_pps {
            triggers.push(Trigger::Threshold(Threshold::SynPps));
        }
        // Per-source rates are only as fresh as the last read of the
        // source table: between reads its verdict stands.
        if report.top_sources_fresh {
            let mut over = Vec::new();
            if let Some(t) = top {
                if th.source_pps > 0.0 && t.pps >= th.source_pps {
                    over.push(Trigger::Threshold(Threshold::SourcePps));
                }
                if th.source_bps > 0.0 && t.bps >= th.source_bps {
                    over.push(Trigger::Threshold(Threshold::SourceBps));
                }
            }
            self.source_over.insert(i.iface.clone(), over);
        }
        triggers.extend(self.source_over.get(&i.iface).cloned().unwrap_or_default());
        let port_rates: Vec<PortRate> = self.port_rates(heavy_ports, i.ifindex, secs);
        if th.port_pps > 0.0 && port_rates.first().is_some_and(|p| p.pps >= th.port_pps) {
            triggers.push(Trigger::Threshold(Threshold::PortPps));
        }
        port_rates
    }

    /// This interval's attack vectors on `i`, and the adaptive spikes on
    /// attack-shaped metrics (the baselines learn only from peacetime).
    fn spikes(
        &mut self,
        i: &IfaceReport,
        sample: &EpochSummary,
        secs: f64,
        triggers: &mut Vec<Trigger>,
    ) -> Vec<Vector> {
        let ad = &self.config.detection;
        let attacking = self.active.contains_key(&i.iface);
        let vectors = {
            let ports: Vec<(u16, u64)> = i
                .udp_src_ports
                .iter()
                .filter_map(|p| p.port.parse::<u16>().ok().map(|n| (n, p.packets)))
                .collect();
            classify(&i.delta, &ports, sample.distinct_dports)
        };
        let shaped = vectors
            .iter()
            .any(|v| v.class != AttackClass::Volumetric && v.confidence >= 50);
        for (m, floor) in METRICS {
            let v = metric(i, secs, m);
            let b = self.baselines.entry((i.iface.clone(), m)).or_default();
            if shaped && b.spike(v, secs, ad, floor) {
                triggers.push(Trigger::Spike(m));
            }
            // Baselines learn only from peacetime.
            if !attacking && triggers.is_empty() {
                b.update(v);
            }
        }

        vectors
    }

    /// Moves the attack on `i` on: an update (or its end, once no trigger
    /// fired for `end_after_s`), or a start when a trigger fired.
    fn advance(
        &mut self,
        i: &IfaceReport,
        report: &Measured,
        sample: &EpochSummary,
        triggers: Vec<Trigger>,
        vectors: &[Vector],
        port_rates: Vec<PortRate>,
    ) -> Option<AttackEvent> {
        let end_after_s = self.config.detection.end_after_s;
        let now = Instant::now();
        if let Some(a) = self.active.get_mut(&i.iface) {
            if !triggers.is_empty() {
                a.last_trigger = now;
            }
            a.peak_pps = a.peak_pps.max(i.pps);
            a.peak_bps = a.peak_bps.max(i.bps);
            for d in &report.drops {
                if d.delta > 0 {
                    *a.drops.entry(d.reason.clone()).or_default() += d.delta;
                }
            }
            add_xdp_drops(&mut a.xdp_drops, report, &i.iface);
            // Only while it still fires: the wind-down's few stray packets
            // (an IPv6 neighbour solicitation) are no new vector.
            if !triggers.is_empty() {
                add_vectors(&mut a.vector_starts, vectors);
            }
            a.packets += i.delta.packets;
            let ended = now.duration_since(a.last_trigger).as_secs_f64() >= end_after_s;
            let phase = if ended { Phase::End } else { Phase::Update };
            let ev = evidence(i, report, sample, vectors);
            let ev = self.event(phase, i, report, sample, vectors, port_rates, ev);
            if ended {
                self.active.remove(&i.iface);
            }
            return Some(ev);
        } else if !triggers.is_empty() {
            let ev = evidence(i, report, sample, vectors);
            // An adaptive spike needs the kernel's word that the traffic
            // was unwanted; a configured threshold or in-kernel trigger is
            // the operator's call and starts at a capped confidence. ICMP
            // and fragment floods are the exception: no host asks for
            // either at flood rates (a slow ping stays under the floors),
            // and an answered echo flood leaves no drop behind; they start
            // without it, at the capped confidence too.
            let unasked = matches!(
                vectors.first().map(|v| v.class),
                Some(AttackClass::IcmpFlood | AttackClass::FragmentFlood)
            );
            if !ev.unwanted && !unasked && triggers.iter().all(|t| t.is_spike()) {
                return None;
            }
            let id = self.next_id;
            self.next_id += 1;
            let mut drops = BTreeMap::new();
            for d in &report.drops {
                if d.delta > 0 {
                    *drops.entry(d.reason.clone()).or_default() += d.delta;
                }
            }
            let mut xdp_drops = BTreeMap::new();
            add_xdp_drops(&mut xdp_drops, report, &i.iface);
            // The class first, then any other vector of this interval.
            let mut vector_starts = vec![VectorStart {
                class: vectors[0].class,
                protocol: vectors[0].protocol.clone(),
                started_at: crate::units::unix_now(),
            }];
            add_vectors(&mut vector_starts, vectors);
            self.active.insert(
                i.iface.clone(),
                Active {
                    id,
                    class: vectors[0].class,
                    confidence: vectors[0].confidence,
                    started: now,
                    started_at: crate::units::unix_now(),
                    last_trigger: now,
                    trigger: triggers[0],
                    peak_pps: i.pps,
                    peak_bps: i.bps,
                    drops,
                    vector_starts,
                    xdp_drops,
                    packets: i.delta.packets,
                },
            );
            return Some(self.event(Phase::Start, i, report, sample, vectors, port_rates, ev));
        }
        None
    }

    /// DDoS-induced loss vs congestion. "ddos" needs drops on an attacked
    /// interface: an attack with nothing lost (a firewall-free bulk flow,
    /// or drops elsewhere) is not DDoS loss.
    fn loss(&mut self, report: &Measured, secs: f64) -> LossVerdict {
        let drop_rate = report.drops_delta as f64 / secs;
        // Rows without an interface (a kernel without sk_buff offsets)
        // may be the attack's.
        let attacked: u64 = report
            .drops
            .iter()
            .filter(|d| d.iface == "-" || self.active.contains_key(&d.iface))
            .map(|d| d.delta)
            .sum();
        let loss = if report.drops_delta == 0 {
            LossVerdict {
                verdict: LossKind::None,
                evidence: vec![],
            }
        } else if attacked > 0 {
            let mut evidence = vec![format!(
                "{:.0} drops/s on the attacked interface(s)",
                attacked as f64 / secs
            )];
            for (iface, a) in &self.active {
                evidence.push(format!(
                    "{iface}: attack {} ({}) peak {:.0} pps",
                    a.id, a.trigger, a.peak_pps
                ));
            }
            LossVerdict {
                verdict: LossKind::Ddos,
                evidence,
            }
        } else {
            let b = &self.drop_baseline;
            let sudden = b.samples >= 3
                && drop_rate > b.mean + 4.0 * b.var.sqrt()
                && drop_rate > 5.0 * b.mean.max(1.0);
            LossVerdict {
                verdict: LossKind::Congestion,
                evidence: vec![
                    if self.active.is_empty() {
                        format!(
                            "{drop_rate:.0} drops/s with no traffic spike and no skewed sources"
                        )
                    } else {
                        format!("{drop_rate:.0} drops/s, none on the attacked interface(s)")
                    },
                    format!(
                        "drop rate {} (baseline {:.0}/s)",
                        if sudden { "jumped" } else { "grew gradually" },
                        b.mean
                    ),
                ],
            }
        };
        if self.active.is_empty() {
            self.drop_baseline.update(drop_rate);
        }
        loss
    }

    /// Packets per second of the heavy ports of one interface this interval.
    fn port_rates(
        &self,
        heavy: &[(drop_common::PortKey, u64)],
        ifindex: u32,
        secs: f64,
    ) -> Vec<PortRate> {
        let mut v: Vec<PortRate> = heavy
            .iter()
            .filter(|(k, _)| k.ifindex == ifindex)
            .map(|(k, n)| PortRate {
                proto: L4::of(k.proto),
                port: k.port,
                pps: *n as f64 / secs,
            })
            .collect();
        v.sort_by(|a, b| b.pps.total_cmp(&a.pps));
        v.truncate(10);
        v
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one interval's view (interface, measurements, epoch, vectors, ports) and the evidence already judged from it"
    )]
    fn event(
        &self,
        phase: Phase,
        i: &IfaceReport,
        report: &Measured,
        sample: &EpochSummary,
        vectors: &[Vector],
        top_ports: Vec<PortRate>,
        ev: Evidence,
    ) -> AttackEvent {
        let a = &self.active[&i.iface];
        let distinct = sample.distinct_sources;
        let (top_sources, spread) = top_sources(&report.top_sources, &i.iface, i.pps, distinct);
        let top_share = top_sources.first().map(|s| s.share).unwrap_or(0.0);
        let eps = std::f64::consts::E / SKETCH_WIDTH as f64;
        AttackEvent {
            schema: Cow::Borrowed(EVENT_SCHEMA),
            id: a.id,
            phase,
            iface: i.iface.clone(),
            class: a.class,
            // The start's class, at this interval's confidence while that
            // vector still shows; high only with the kernel's evidence.
            confidence: {
                let c = vectors
                    .iter()
                    .find(|v| v.class == a.class)
                    .map_or(a.confidence, |v| v.confidence);
                if ev.unwanted {
                    c
                } else {
                    c.min(UNPROVEN_CONFIDENCE)
                }
            },
            evidence: ev.items,
            vectors: vectors.to_vec(),
            vector_starts: a.vector_starts.clone(),
            trigger: a.trigger,
            started_at: a.started_at,
            ts: crate::units::unix_now(),
            duration_s: a.started.elapsed().as_secs_f64(),
            pps: i.pps,
            bps: i.bps,
            peak_pps: a.peak_pps.max(i.pps),
            peak_bps: a.peak_bps.max(i.bps),
            distinct_sources: distinct.round(),
            sources: spread,
            top_source_share: top_share,
            spoofing: ev.spoofing,
            top_sources,
            top_ports,
            drops: a
                .drops
                .iter()
                .map(|(r, n)| ReasonCount {
                    reason: r.clone(),
                    packets: *n,
                })
                .collect(),
            dropped_by: a
                .xdp_drops
                .iter()
                .map(|(p, n)| ProgramDropShare {
                    program: p.clone(),
                    packets: *n,
                    share: if a.packets == 0 {
                        0.0
                    } else {
                        ((*n as f64 / a.packets as f64).min(1.0) * 1000.0).round() / 1000.0
                    },
                })
                .collect(),
            estimate: SketchBound {
                width: SKETCH_WIDTH,
                depth: SKETCH_DEPTH,
                epsilon: eps,
                delta: (-(SKETCH_DEPTH as f64)).exp(),
                packets_bound: eps * sample.packets as f64,
                sample_every: (sample.sample_every() * 100.0).round() / 100.0,
                exact: !sample.flood_mode && sample.sample_every() == 1.0,
            },
            pcap: None,
        }
    }
}

/// Packets the top five sources must have carried in their window before
/// their share may call the sources few: a handful of packets from a
/// random flood's first milliseconds (a source read right after the last
/// one, each source's rate over a few ms) says nothing about the spread.
const FEW_MIN_PACKETS: u64 = 64;

/// `iface`'s top sources among `rows` (up to 10) as shares of its rate
/// `pps`, and their spread: few when under 50 distinct, or when five carry
/// 80% of the traffic with enough packets among them to tell.
fn top_sources(
    rows: &[crate::report::SourceRow],
    iface: &str,
    pps: f64,
    distinct: f64,
) -> (Vec<SourceShare>, SourceSpread) {
    let total = pps.max(1e-9);
    let rows: Vec<&crate::report::SourceRow> =
        rows.iter().filter(|s| s.iface == iface).take(10).collect();
    let shares: Vec<SourceShare> = rows
        .iter()
        .map(|s| SourceShare {
            address: s.address.clone(),
            pps: s.pps,
            share: (s.pps / total).min(1.0),
        })
        .collect();
    let top5: f64 = shares.iter().take(5).map(|s| s.share).sum();
    let top5_packets: u64 = rows.iter().take(5).map(|s| s.packets).sum();
    let spread = if distinct < 50.0 || (top5 >= 0.8 && top5_packets >= FEW_MIN_PACKETS) {
        SourceSpread::Few
    } else {
        SourceSpread::Many
    };
    (shares, spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(f: impl FnOnce(&mut ShapeCounts)) -> ShapeCounts {
        let mut s = ShapeCounts::default();
        f(&mut s);
        s
    }

    #[test]
    fn a_few_packets_early_in_a_flood_do_not_make_its_sources_few() {
        let rows = |packets: u64, n: usize| -> Vec<crate::report::SourceRow> {
            (0..n)
                .map(|i| crate::report::SourceRow {
                    address: format!("198.18.0.{i}"),
                    iface: "vb".into(),
                    packets,
                    bytes: packets * 60,
                    pps: packets as f64 * 100.0,
                    bps: 0.0,
                    total_packets: packets,
                    total_bytes: packets * 60,
                })
                .collect()
        };
        // Six spoofed sources, a few packets each in a window of ms, rated
        // against the interface's rate over the whole interval: shares that
        // sum past 1 (the failure seen under emulation).
        let (shares, spread) = top_sources(&rows(4, 6), "vb", 1663.0, 394.0);
        assert!(shares.iter().map(|s| s.share).sum::<f64>() > 1.0);
        assert_eq!(spread, SourceSpread::Many);
        // Three real heavy hitters among many sources: few.
        assert_eq!(
            top_sources(&rows(5000, 3), "vb", 1.6e6, 394.0).1,
            SourceSpread::Few
        );
        // Another interface's rows are not this one's.
        let (shares, spread) = top_sources(&rows(5000, 3), "va", 1.6e6, 394.0);
        assert!(shares.is_empty());
        assert_eq!(spread, SourceSpread::Many);
        // Under 50 distinct sources is few whatever the packets.
        assert_eq!(top_sources(&[], "vb", 0.0, 12.0).1, SourceSpread::Few);
    }

    #[test]
    fn classes_from_shapes() {
        let syn = shape(|s| {
            s.packets = 1000;
            s.tcp_syn = 990;
            s.protocols.insert("tcp".into(), 1000);
        });
        assert_eq!(classify(&syn, &[], 1.0)[0].class, AttackClass::SynFlood);
        let refl = shape(|s| {
            s.packets = 1000;
            s.protocols.insert("udp".into(), 1000);
            s.sizes.insert("le_01518".into(), 900);
            s.fragments = 300;
        });
        let v = classify(&refl, &[(123, 1000)], 1.0);
        assert_eq!(v[0].class, AttackClass::UdpReflection);
        assert_eq!(v[0].protocol.as_deref(), Some("NTP"));
        let icmp = shape(|s| {
            s.packets = 500;
            s.protocols.insert("icmp".into(), 480);
        });
        assert_eq!(classify(&icmp, &[], 1.0)[0].class, AttackClass::IcmpFlood);
        let udp = shape(|s| {
            s.packets = 1000;
            s.protocols.insert("udp".into(), 1000);
            s.sizes.insert("le_00064".into(), 1000);
        });
        assert_eq!(
            classify(&udp, &[(40000, 1000)], 900.0)[0].class,
            AttackClass::UdpFlood
        );
        let benign = shape(|s| {
            s.packets = 1000;
            s.protocols.insert("tcp".into(), 1000);
            s.tcp_syn = 1;
            s.sizes.insert("le_01518".into(), 1000);
        });
        assert_eq!(
            classify(&benign, &[], 1.0)[0].class,
            AttackClass::Volumetric
        );
    }

    #[test]
    fn multi_vector_reports_each() {
        let mixed = shape(|s| {
            s.packets = 1000;
            s.tcp_syn = 500;
            s.protocols.insert("tcp".into(), 500);
            s.protocols.insert("icmp".into(), 500);
        });
        let v = classify(&mixed, &[], 1.0);
        let classes: Vec<_> = v.iter().map(|x| x.class).collect();
        assert!(
            classes.contains(&AttackClass::SynFlood) && classes.contains(&AttackClass::IcmpFlood),
            "{v:?}"
        );
        // SYN at twice the packet rate of large DNS answers: both show.
        let syn_and_reflection = shape(|s| {
            s.packets = 1000;
            s.tcp_syn = 660;
            s.protocols.insert("tcp".into(), 660);
            s.protocols.insert("udp".into(), 340);
            s.sizes.insert("le_00064".into(), 660);
            s.sizes.insert("le_01518".into(), 340);
        });
        let v = classify(&syn_and_reflection, &[(53, 340)], 1.0);
        let classes: Vec<_> = v.iter().map(|x| x.class).collect();
        assert!(
            classes.contains(&AttackClass::SynFlood)
                && classes.contains(&AttackClass::UdpReflection),
            "{v:?}"
        );
    }

    #[test]
    fn spoofing_from_ttls() {
        let mut spread = [0u64; 256];
        for (i, c) in spread.iter_mut().enumerate().skip(20).take(200) {
            *c = 10 + i as u64 % 3;
        }
        assert_eq!(
            spoofing(&spread, 2000, 1900.0).verdict,
            SpoofVerdict::Spoofed
        );
        // Uniform over 16..240 as the generator spoofs: each TTL under 0.5%,
        // few packets per source yet (a flood's first interval).
        let mut uniform = [0u64; 256];
        for c in uniform.iter_mut().skip(16).take(224) {
            *c = 20;
        }
        assert_eq!(
            spoofing(&uniform, 85_000, 13_456.0).verdict,
            SpoofVerdict::Spoofed
        );
        let mut botnet = [0u64; 256];
        botnet[52] = 700;
        botnet[115] = 250;
        botnet[60] = 50;
        assert_eq!(spoofing(&botnet, 1000, 20.0).verdict, SpoofVerdict::Real);
    }

    #[test]
    fn baseline_spikes_need_all_three_conditions() {
        let a = Adaptive::default();
        let mut b = Baseline::default();
        for v in [100.0, 120.0, 90.0, 110.0, 100.0] {
            b.update(v);
        }
        assert!(b.spike(5000.0, 0.1, &a, 1000.0));
        assert!(!b.spike(300.0, 0.1, &a, 1000.0), "below the floor");
        assert!(!b.spike(1100.0, 0.1, &a, 100.0) || 1100.0 > 5.0 * b.mean);
        // Two packets in 2 ms are "1000 pps", but not a flood's packets,
        // even before any baseline exists.
        assert!(!Baseline::default().spike(1000.0, 0.002, &a, 1000.0));
        assert!(Baseline::default().spike(1000.0, 0.1, &a, 1000.0));
    }
}
