//! Turns successive snapshots into the interval report: deltas, rates, totals
//! since start, names and categories. One report per interval.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use drop_common::{
    IfaceStats, PortKey, SIZE_BUCKET_LIMITS, SIZE_BUCKETS, SourceKey, UDP_OTHER_BUCKET,
    kfree_health, proto,
};
use serde::{Deserialize, Serialize};

use crate::taxonomy::{Cause, L4, XdpMode};
use crate::{
    kernel::{EpochSummary, Snapshot, Table},
    ports::REFLECTOR_PORTS_HIGH,
    sys::{
        iface,
        nic::Counters,
        reasons::{Category, ReasonTable},
    },
};

mod attack;

pub(crate) use attack::EVENT_SCHEMA;

pub use attack::{
    AttackEvent, LossVerdict, PortRate, ProgramDropShare, ReasonCount, SketchBound, SourceShare,
    Spoofing, Vector, VectorStart,
};

pub(crate) const SCHEMA: &str = "dropscope.watch/1";

/// Reads a document's constant string (its `schema`, an event's name)
/// back as the constant it was written from; any other value is an error
/// naming both. (A `Cow`, not a `&'static str`: serde would make a
/// `&'static str` field borrow from input that lives forever.)
macro_rules! constant_field {
    ($name:ident, $value:expr) => {
        pub(crate) fn $name<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<std::borrow::Cow<'static, str>, D::Error> {
            let s = <String as serde::Deserialize>::deserialize(d)?;
            if s == $value {
                Ok(std::borrow::Cow::Borrowed($value))
            } else {
                Err(serde::de::Error::custom(format!(
                    "{s:?} where {:?} was expected",
                    $value
                )))
            }
        }
    };
}
pub(crate) use constant_field;

constant_field!(watch_schema, SCHEMA);

/// The `--enforce` blocklist's drops are reported as a reason of their own,
/// outside the kernel's numbering.
pub(crate) const BLOCKLIST_REASON: &str = "DROPSCOPE_BLOCKLIST";
pub(crate) const BLOCKLIST_REASON_CODE: u32 = 0xffff_0001;

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    /// `dropscope.watch/1`.
    #[serde(deserialize_with = "watch_schema")]
    pub schema: Cow<'static, str>,
    /// Unix time of this snapshot, seconds.
    pub ts: f64,
    pub interval_s: f64,
    pub elapsed_s: f64,
    pub drops_delta: u64,
    pub drops_total: u64,
    /// Every (reason, interface) row seen since start, busiest first.
    pub drops: Vec<DropRow>,
    pub interfaces: Vec<IfaceReport>,
    /// Every interface counter (NIC, driver, softnet backlog).
    pub counters: Vec<CounterRow>,
    pub top_sources: Vec<SourceRow>,
    /// Busiest destination ports (TCP/UDP) this interval, from XDP.
    pub top_ports: Vec<TopPort>,
    /// Whether `top_sources` was read this interval (at intervals under a
    /// second the source table is read about once a second).
    pub top_sources_fresh: bool,
    /// Reasonless (NOT_SPECIFIED) drops by kernel location, busiest first.
    pub locations: Vec<LocationRow>,
    /// Drops by (reason, source address) and (reason, protocol, destination
    /// port), busiest this interval first: "NETFILTER_DROP from 203.0.113.7",
    /// "SOCKET_RCVBUFF on udp/5353".
    pub drop_sources: Vec<DropSourceRow>,
    pub drop_ports: Vec<DropPortRow>,
    /// Observe mode: each XDP program dropscope observes in place (a
    /// libxdp dispatcher's components one by one) and its verdicts.
    pub xdp_programs: Vec<XdpProgramRow>,
    /// Attacks in progress (the latest event of each).
    pub attacks: Vec<AttackEvent>,
    /// DDoS-induced loss or congestion, with the evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossVerdict>,
    /// Distinct sources this interval (HyperLogLog), and whether a spoofed
    /// flood pushed per-source tracking into sketch-only mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources_estimate: Option<SourcesEstimate>,
    /// Live diagnosis: what this interval's drops most likely mean.
    pub diagnosis: Vec<Hint>,
    pub health: Health,
}

/// What the tracker measured over one interval: every report field but
/// the analysis' (attacks, loss verdict, hints). Detection reads this.
pub(crate) struct Measured {
    pub ts: f64,
    pub interval_s: f64,
    pub elapsed_s: f64,
    pub drops_delta: u64,
    pub drops_total: u64,
    pub drops: Vec<DropRow>,
    pub interfaces: Vec<IfaceReport>,
    pub counters: Vec<CounterRow>,
    pub top_sources: Vec<SourceRow>,
    pub top_ports: Vec<TopPort>,
    pub top_sources_fresh: bool,
    pub locations: Vec<LocationRow>,
    pub drop_sources: Vec<DropSourceRow>,
    pub drop_ports: Vec<DropPortRow>,
    pub xdp_programs: Vec<XdpProgramRow>,
    pub sources_estimate: Option<SourcesEstimate>,
    pub health: Health,
    /// False on kernels whose kfree_skb names no reason (before 5.17):
    /// every drop is NOT_SPECIFIED there, and detection can't tell a
    /// refused packet from an overflow.
    pub reasons_named: bool,
}

/// What the analysis stage concluded about an interval.
#[derive(Default)]
pub(crate) struct Analysis {
    /// Attacks in progress (the latest event of each; no `end` events).
    pub attacks: Vec<AttackEvent>,
    pub loss: Option<LossVerdict>,
    pub diagnosis: Vec<Hint>,
}

impl Report {
    /// The one place a report is made: an interval's measurements and what
    /// the analysis made of them. Nothing changes a report afterwards.
    pub(crate) fn build(m: Measured, a: Analysis) -> Report {
        Report {
            schema: Cow::Borrowed(SCHEMA),
            ts: m.ts,
            interval_s: m.interval_s,
            elapsed_s: m.elapsed_s,
            drops_delta: m.drops_delta,
            drops_total: m.drops_total,
            drops: m.drops,
            interfaces: m.interfaces,
            counters: m.counters,
            top_sources: m.top_sources,
            top_ports: m.top_ports,
            top_sources_fresh: m.top_sources_fresh,
            locations: m.locations,
            drop_sources: m.drop_sources,
            drop_ports: m.drop_ports,
            xdp_programs: m.xdp_programs,
            attacks: a.attacks,
            loss: a.loss,
            sources_estimate: m.sources_estimate,
            diagnosis: a.diagnosis,
            health: m.health,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DropRow {
    pub reason: String,
    pub reason_code: u32,
    pub category: Category,
    /// The observed XDP program that dropped (XDP_DROP, XDP_ABORTED rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    pub iface: String,
    pub ifindex: u32,
    pub delta: u64,
    pub rate: f64,
    pub total: u64,
}

/// One observed XDP program's verdicts: since the last interval and since
/// dropscope started observing it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct XdpProgramRow {
    pub iface: String,
    pub program: String,
    pub id: u32,
    /// Native or generic: how the observed program is attached.
    pub mode: XdpMode,
    pub delta: VerdictCounts,
    pub total: VerdictCounts,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub struct VerdictCounts {
    pub aborted: u64,
    pub drop: u64,
    pub pass: u64,
    pub tx: u64,
    pub redirect: u64,
}

impl VerdictCounts {
    fn of(v: &drop_common::VerdictStats) -> Self {
        let p = v.packets;
        Self {
            aborted: p[drop_common::XDP_ABORTED as usize],
            drop: p[drop_common::XDP_DROP as usize],
            pass: p[drop_common::XDP_PASS as usize],
            tx: p[drop_common::XDP_TX as usize],
            redirect: p[drop_common::XDP_REDIRECT as usize],
        }
    }

    fn minus(self, o: Self) -> Self {
        Self {
            aborted: self.aborted.saturating_sub(o.aborted),
            drop: self.drop.saturating_sub(o.drop),
            pass: self.pass.saturating_sub(o.pass),
            tx: self.tx.saturating_sub(o.tx),
            redirect: self.redirect.saturating_sub(o.redirect),
        }
    }

    /// (action name, count) in the kernel's order.
    pub(crate) fn each(&self) -> [(&'static str, u64); 5] {
        [
            ("aborted", self.aborted),
            ("drop", self.drop),
            ("pass", self.pass),
            ("tx", self.tx),
            ("redirect", self.redirect),
        ]
    }
}

impl DropRow {
    /// The reason as tables show it: an observed XDP program's drops name
    /// the program ("XDP_DROP (xdpfilt_alw_all)").
    pub(crate) fn label(&self) -> String {
        match &self.program {
            Some(p) => format!("{} ({p})", self.reason),
            None => self.reason.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TopPort {
    pub iface: String,
    pub proto: L4,
    pub port: u16,
    pub pps: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SourcesEstimate {
    pub distinct_sources: f64,
    pub distinct_dports: f64,
    pub flood_mode: bool,
    /// Mean packets per packet that fed the per-source and per-port
    /// estimates (1: all of them). Past ~20 000 packets a second per CPU,
    /// about 1 in 32 does, each counting for the gap before it.
    pub sample_every: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DropSourceRow {
    pub reason: String,
    pub address: String,
    pub delta: u64,
    pub rate: f64,
    pub total: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DropPortRow {
    pub reason: String,
    pub proto: L4,
    pub port: u16,
    pub delta: u64,
    pub rate: f64,
    pub total: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LocationRow {
    pub reason: String,
    /// Where the dropped packet came in ("-" when the kernel had not
    /// assigned it an interface).
    pub iface: String,
    /// `function+0xoffset` from /proc/kallsyms, else the raw address.
    pub location: String,
    pub delta: u64,
    pub total: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CounterRow {
    pub iface: String,
    pub counter: String,
    pub delta: u64,
    /// Change since dropscope started.
    pub total: u64,
    /// The kernel's own value.
    pub value: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SourceRow {
    pub address: String,
    pub iface: String,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    pub bps: f64,
    pub total_packets: u64,
    pub total_bytes: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct ShapeCounts {
    pub packets: u64,
    pub bytes: u64,
    pub protocols: BTreeMap<Cow<'static, str>, u64>,
    pub ipv4: u64,
    pub ipv6: u64,
    pub vlan: u64,
    pub tcp_syn: u64,
    pub tcp_syn_ack: u64,
    pub tcp_ack_only: u64,
    pub tcp_rst: u64,
    pub tcp_fin: u64,
    pub fragments: u64,
    /// Frame size upper bound ("le_64", ..., "gt_9018") -> packets.
    pub sizes: BTreeMap<String, u64>,
    /// IPv4 TTL / IPv6 hop limit histogram (256 entries; not in JSON).
    #[serde(skip)]
    pub ttl: Vec<u64>,
}

impl ShapeCounts {
    fn from_stats(s: &IfaceStats) -> Self {
        let mut sizes = BTreeMap::new();
        for i in 0..SIZE_BUCKETS {
            let label = match SIZE_BUCKET_LIMITS.get(i) {
                Some(l) => format!("le_{l:05}"),
                None => format!("gt_{:05}", SIZE_BUCKET_LIMITS[SIZE_BUCKETS - 2]),
            };
            sizes.insert(label, s.size_buckets[i]);
        }
        ShapeCounts {
            packets: s.packets,
            bytes: s.bytes,
            protocols: (0..proto::COUNT)
                .map(|i| (Cow::Borrowed(proto::NAMES[i]), s.proto_packets[i]))
                .collect(),
            ipv4: s.ipv4,
            ipv6: s.ipv6,
            vlan: s.vlan,
            tcp_syn: s.tcp_syn,
            tcp_syn_ack: s.tcp_syn_ack,
            tcp_ack_only: s.tcp_ack_only,
            tcp_rst: s.tcp_rst,
            tcp_fin: s.tcp_fin,
            fragments: s.fragments,
            sizes,
            ttl: s.ttl.to_vec(),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PortRow {
    /// Port number, or "other" for ports without a counter of their own.
    pub port: String,
    pub packets: u64,
    pub total: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct IfaceReport {
    pub iface: String,
    pub ifindex: u32,
    /// Native, generic, observe (another program's, observed in place),
    /// taken (another program's, not observable here) or off.
    pub xdp_mode: XdpMode,
    /// False while the interface does not exist (deleted; re-attached when
    /// it comes back).
    pub present: bool,
    /// Administratively up and with carrier (IFF_UP and IFF_RUNNING).
    pub link_up: bool,
    pub pps: f64,
    pub bps: f64,
    pub delta: ShapeCounts,
    pub total: ShapeCounts,
    /// Busiest UDP source ports this interval.
    pub udp_src_ports: Vec<PortRow>,
}

/// One line of the live diagnosis panel in `watch`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Hint {
    pub cause: Cause,
    pub reason: String,
    pub iface: String,
    pub rate: f64,
    pub hint: Cow<'static, str>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Health {
    pub drop_events: u64,
    /// Drop rows lost because a map was full.
    pub map_full: u64,
    pub read_errors: u64,
    pub other_netns: u64,
    /// Drop events the pattern stream had no room for.
    pub events_lost: u64,
    pub sources_tracked: usize,
    /// Sources entered into the exact table since start, and how many of
    /// them have left it since (inserted minus still there): evicted by
    /// the LRU, or expired as idle light sources of a crowded table.
    pub sources_inserted: u64,
    pub sources_evicted: u64,
    /// Drops whose source or port found no attribution row (the per-epoch
    /// budget of new rows was spent, e.g. by a spoofed flood).
    pub unattributed: u64,
    /// Rows in the kernel's drop tables: (reason, interface), location,
    /// attributed source and port rows.
    pub drop_rows: usize,
}

pub(crate) struct Tracker {
    reasons: ReasonTable,
    /// Observe mode's programs (their verdicts are `Snapshot::verdicts`).
    observed: Vec<crate::kernel::ObservedProg>,
    ifaces: Vec<(String, u32)>,
    xdp_modes: HashMap<String, XdpMode>,
    netns: u32,
    top_n: usize,
    start: Instant,
    last: Instant,
    prev: Snapshot,
    nic_start: BTreeMap<String, Counters>,
    nic_prev: BTreeMap<String, Counters>,
    names: HashMap<u32, String>,
    foreign: iface::ForeignNames,
    prev_sources: Table<SourceKey, drop_common::SourceStats>,
    /// Sources the last read expired, for the kernel's table to forget
    /// (see [`Tracker::take_expired`]).
    expired: Vec<SourceKey>,
    last_sources_at: Instant,
    last_top: Vec<SourceRow>,
    /// The per-source drop table's last read, and the top list it gave.
    drop_sources_at: Instant,
    last_drop_sources: Vec<DropSourceRow>,
    sources_tracked: usize,
    /// New sources the kernel inserted since start (the epochs' sum).
    sources_inserted: u64,
    /// Kernel function names for reasonless drops' locations, loaded on
    /// a thread from the start (the loop would stall tens of ms for them).
    symbols: crate::sys::kallsyms::Pending,
}

/// The `n` rows with the most drops since `prev` (then the most in total).
fn top_by_delta<K: Eq + std::hash::Hash + Ord, R>(
    now: &Table<K, u64>,
    prev: &Table<K, u64>,
    secs: f64,
    n: usize,
    row: impl Fn(&K, u64, f64, u64) -> R,
) -> Vec<R> {
    let mut rows: Vec<(u64, u64, &K)> = now
        .iter()
        .map(|(k, t)| (t.saturating_sub(prev.get(k).copied().unwrap_or(0)), *t, k))
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    rows.into_iter()
        .take(n)
        .map(|(d, t, k)| row(k, d, d as f64 / secs, t))
        .collect()
}

/// Source tables larger than this expire their idle light sources.
const EXPIRE_ABOVE: usize = drop_common::MAX_SOURCES as usize / 8;
/// Below this many packets an idle source is expired from a crowded
/// table: spoofed sources have one, or the sketch estimate they were
/// promoted with under a flood (a few hundred at most: the promotion
/// threshold stands above the sketch's noise).
const EXPIRE_LIGHTER_THAN: u64 = 1024;

pub(crate) fn format_addr(k: &SourceKey) -> String {
    if k.family == 4 {
        Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]).to_string()
    } else {
        Ipv6Addr::from(k.addr).to_string()
    }
}

fn port_label(bucket: u32) -> String {
    if bucket < 1024 {
        bucket.to_string()
    } else if bucket == UDP_OTHER_BUCKET {
        "other".into()
    } else {
        REFLECTOR_PORTS_HIGH
            .get((bucket - 1024) as usize)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "other".into())
    }
}

impl Tracker {
    /// The instant every `elapsed_s` counts from; a run's `--duration`
    /// counts from it too, so the last line says the duration asked for.
    pub(crate) fn started_at(&self) -> Instant {
        self.start
    }

    /// The programs observe mode attached to: their verdicts are reported.
    pub(crate) fn with_observed(mut self, progs: &[crate::kernel::ObservedProg]) -> Self {
        for p in progs {
            self.reasons.observe(p.slot, &p.name);
        }
        self.observed = progs.to_vec();
        self
    }

    /// As `with_observed`, after observe mode followed a change (which may
    /// also have changed an interface's XDP mode).
    pub(crate) fn set_observed(
        &mut self,
        progs: &[crate::kernel::ObservedProg],
        modes: &[(String, XdpMode)],
    ) {
        self.xdp_modes = modes.iter().cloned().collect();
        for p in progs {
            self.reasons.observe(p.slot, &p.name);
        }
        self.observed = progs.to_vec();
    }

    pub(crate) fn new(
        reasons: ReasonTable,
        ifaces: Vec<(String, u32)>,
        xdp_modes: &[(String, XdpMode)],
        netns: u32,
        top_n: usize,
        nic_start: BTreeMap<String, Counters>,
    ) -> Self {
        let now = Instant::now();
        Self {
            reasons,
            observed: Vec::new(),
            ifaces,
            xdp_modes: xdp_modes.iter().cloned().collect(),
            netns,
            top_n,
            start: now,
            last: now,
            prev: Snapshot::default(),
            nic_prev: nic_start.clone(),
            nic_start,
            names: HashMap::new(),
            foreign: iface::ForeignNames::default(),
            symbols: crate::sys::kallsyms::Symbols::load_in_background(),
            prev_sources: Table::default(),
            expired: Vec::new(),
            last_sources_at: now,
            last_top: Vec::new(),
            drop_sources_at: now,
            last_drop_sources: Vec::new(),
            sources_tracked: 0,
            sources_inserted: 0,
        }
    }

    /// The watched interface in `slot` now has index `ifindex`.
    pub(crate) fn set_ifindex(&mut self, slot: usize, ifindex: u32) {
        if let Some(e) = self.ifaces.get_mut(slot) {
            e.1 = ifindex;
        }
        self.names.insert(ifindex, self.ifaces[slot].0.clone());
    }

    /// Recomputes the top sources from a fresh read of the source table.
    pub(crate) fn refresh_sources(
        &mut self,
        sources: crate::kernel::Sources,
        now: Instant,
    ) -> Vec<SourceRow> {
        let ssecs = now
            .duration_since(self.last_sources_at)
            .as_secs_f64()
            .max(1e-3);
        let crate::kernel::Sources {
            totals: mut sources,
            cached,
        } = sources;
        let mut rows: Vec<(u64, u64, &SourceKey, &drop_common::SourceStats)> = sources
            .iter_mut()
            .map(|(k, v)| {
                let p = self.prev_sources.get(k).copied().unwrap_or_default();
                // A cache flush racing the read (see `Maps::read_sources`)
                // can leave a total below the last one: totals never go
                // back, and the next read catches up.
                v.packets = v.packets.max(p.packets);
                v.bytes = v.bytes.max(p.bytes);
                (v.packets - p.packets, v.bytes - p.bytes, k, &*v)
            })
            .collect();
        let order = |a: &(u64, u64, &SourceKey, &drop_common::SourceStats),
                     b: &(u64, u64, &SourceKey, &drop_common::SourceStats)| {
            b.0.cmp(&a.0)
                .then(b.3.packets.cmp(&a.3.packets))
                .then(a.2.addr.cmp(&b.2.addr))
        };
        // Only the top N are formatted: the table can hold 65 536 sources.
        if rows.len() > self.top_n && self.top_n > 0 {
            rows.select_nth_unstable_by(self.top_n - 1, order);
            rows.truncate(self.top_n);
        }
        rows.sort_by(order);
        rows.truncate(self.top_n);
        let top: Vec<SourceRow> = rows
            .into_iter()
            .map(|(packets, bytes, k, v)| SourceRow {
                address: format_addr(k),
                iface: self.iface_name(k.ifindex, 0),
                packets,
                bytes,
                pps: packets as f64 / ssecs,
                bps: bytes as f64 * 8.0 / ssecs,
                total_packets: v.packets,
                total_bytes: v.bytes,
            })
            .collect();
        self.last_top = top;
        self.sources_tracked = sources.len();
        // A table past an eighth of its bound is a spoofed flood's doing
        // (each interval's budget of new sources, one packet each, and the
        // sources sketch collisions promote): sources that stayed light
        // and sent nothing since the last read are expired, so the next
        // read walks the live ones, not the junk.
        if sources.len() > EXPIRE_ABOVE {
            let prev = &self.prev_sources;
            self.expired = sources
                .iter()
                .filter(|(k, v)| {
                    v.packets < EXPIRE_LIGHTER_THAN
                        && prev.get(*k).is_some_and(|p| p.packets == v.packets)
                        && !cached.contains(k)
                })
                .map(|(k, _)| *k)
                .collect();
            for k in &self.expired {
                sources.remove(k);
            }
        }
        self.prev_sources = sources;
        self.last_sources_at = now;
        self.last_top.clone()
    }

    /// Sources to delete from the kernel's table: idle and light at the
    /// last read, already forgotten here (a source that comes back starts
    /// a new total; packets it sent between that read and the delete are
    /// lost to its row, never to the interface's counters).
    pub(crate) fn take_expired(&mut self) -> Vec<SourceKey> {
        std::mem::take(&mut self.expired)
    }

    fn iface_name(&mut self, ifindex: u32, netns: u32) -> String {
        if ifindex == 0 {
            return "-".into();
        }
        if netns != 0 && netns != self.netns {
            return self.foreign.label(netns, ifindex);
        }
        if let Some(n) = self.names.get(&ifindex) {
            return n.clone();
        }
        match iface::name_of(ifindex) {
            Some(n) => {
                self.names.insert(ifindex, n.clone());
                n
            }
            None => format!("if{ifindex}"),
        }
    }

    /// Measures the interval that ends now: `snap` and `nic` are the
    /// kernel's and the interfaces' counters read at its end; `flood` is
    /// the epoch's sample and the heavy ports' deltas (None in doctor,
    /// which runs no flood accounting).
    pub(crate) fn measure(
        &mut self,
        mut snap: Snapshot,
        nic: BTreeMap<String, Counters>,
        flood: Option<(&EpochSummary, &[(PortKey, u64)])>,
    ) -> Measured {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        let prev = &mut self.prev;
        if snap.drops_unchanged {
            // Nothing dropped since the last read: the previous tables stand
            // (their deltas come out zero). Moved, not copied: `prev` is
            // replaced by `snap` below and its tables are read no more.
            snap.unrowed = std::mem::take(&mut prev.unrowed);
            snap.by_iface = std::mem::take(&mut prev.by_iface);
            snap.locations = std::mem::take(&mut prev.locations);
            snap.drop_ports = std::mem::take(&mut prev.drop_ports);
        }
        // The per-source drop table is read about once a second: between
        // reads the last top list stands, as the top sources' does.
        let drop_sources_fresh = snap.drop_sources_fresh;
        if !drop_sources_fresh {
            snap.drop_sources = std::mem::take(&mut prev.drop_sources);
            if snap.drops_unchanged {
                // No drop since the last read: the same rows, none dropping.
                for r in &mut self.last_drop_sources {
                    (r.delta, r.rate) = (0, 0.0);
                }
            }
        }

        let (drops, drops_delta, drops_total) = self.drop_rows(&snap, secs);

        let interfaces = self.iface_rows(&snap, secs);

        let counters = self.counter_rows(&nic);

        // Top sources by packets since the last read of the source table
        // (every interval, or once a second at shorter intervals).
        if snap.sources_unchanged {
            // No packet since the last read: the same sources, none sending.
            for r in &mut self.last_top {
                (r.packets, r.bytes, r.pps, r.bps) = (0, 0, 0.0, 0.0);
            }
            self.last_sources_at = now;
        } else if snap.sources_fresh {
            self.refresh_sources(std::mem::take(&mut snap.sources), now);
        }
        let top_sources = self.last_top.clone();

        let locations = self.location_rows(&snap);

        if drop_sources_fresh {
            let secs = now
                .duration_since(self.drop_sources_at)
                .as_secs_f64()
                .max(1e-3);
            self.drop_sources_at = now;
            self.last_drop_sources = top_by_delta(
                &snap.drop_sources,
                &self.prev.drop_sources,
                secs,
                self.top_n,
                |k, delta, rate, total| DropSourceRow {
                    reason: self.reasons.name(k.reason),
                    address: format_addr(&SourceKey {
                        addr: k.addr,
                        ifindex: 0,
                        family: k.family,
                        _pad: [0; 3],
                    }),
                    delta,
                    rate,
                    total,
                },
            );
        }
        let drop_sources = self.last_drop_sources.clone();
        let drop_ports = top_by_delta(
            &snap.drop_ports,
            &self.prev.drop_ports,
            secs,
            self.top_n,
            |k, delta, rate, total| DropPortRow {
                reason: self.reasons.name(k.reason),
                proto: L4::of(k.proto.into()),
                port: k.port,
                delta,
                rate,
                total,
            },
        );

        let mut health = Health {
            unattributed: snap.health[kfree_health::UNATTRIBUTED as usize],
            drop_rows: snap.by_iface.len()
                + snap.locations.len()
                + snap.drop_sources.len()
                + snap.drop_ports.len(),
            drop_events: snap.health[kfree_health::EVENTS as usize],
            map_full: snap.health[kfree_health::MAP_FULL as usize],
            read_errors: snap.health[kfree_health::READ_ERRORS as usize],
            other_netns: snap.health[kfree_health::OTHER_NETNS as usize],
            events_lost: snap.health[kfree_health::EVENTS_LOST as usize],
            sources_tracked: self.sources_tracked,
            ..Default::default()
        };
        let (mut top_ports, mut sources_estimate) = (Vec::new(), None);
        if let Some((sample, ports)) = flood {
            self.sources_inserted += sample.new_sources;
            health.sources_inserted = self.sources_inserted;
            health.sources_evicted = self
                .sources_inserted
                .saturating_sub(health.sources_tracked as u64);
            sources_estimate = Some(SourcesEstimate {
                distinct_sources: sample.distinct_sources.round(),
                distinct_dports: sample.distinct_dports.round(),
                flood_mode: sample.flood_mode,
                sample_every: (sample.sample_every() * 100.0).round() / 100.0,
            });
            top_ports = self.top_ports(ports, secs);
        }

        let xdp_programs = self
            .observed
            .iter()
            .map(|p| {
                let slot = p.slot as usize;
                let now = snap
                    .verdicts
                    .get(slot)
                    .map(VerdictCounts::of)
                    .unwrap_or_default();
                let prev = self
                    .prev
                    .verdicts
                    .get(slot)
                    .map(VerdictCounts::of)
                    .unwrap_or_default();
                XdpProgramRow {
                    iface: p.iface.clone(),
                    program: p.name.clone(),
                    id: p.id,
                    mode: p.mode.mode(),
                    delta: now.minus(prev),
                    total: now,
                }
            })
            .collect();
        let top_sources_fresh = snap.sources_fresh;
        self.prev = snap;
        self.nic_prev = nic;
        Measured {
            reasons_named: self.reasons.names_reasons(),
            xdp_programs,
            ts: crate::units::unix_now(),
            interval_s: secs,
            elapsed_s: now.duration_since(self.start).as_secs_f64(),
            drops_delta,
            drops_total,
            top_sources_fresh,
            top_ports,
            sources_estimate,
            locations,
            drop_sources,
            drop_ports,
            drops,
            interfaces,
            counters,
            top_sources,
            health,
        }
    }
    /// Drops per (reason, interface) since the last interval and in total,
    /// busiest first, with the blocklist's drops as a reason of their own;
    /// and the sums over every row.
    fn drop_rows(&mut self, snap: &Snapshot, secs: f64) -> (Vec<DropRow>, u64, u64) {
        // Drops per (reason, interface).
        let mut drops = Vec::new();
        let mut drops_delta = 0;
        let mut drops_total = 0;
        let mut merged: HashMap<(u32, String), (u32, u64, u64)> = HashMap::new();
        for (k, total) in &snap.by_iface {
            let prev = self.prev.by_iface.get(k).copied().unwrap_or(0);
            let name = self.iface_name(k.ifindex, k.netns);
            let e = merged.entry((k.reason, name)).or_insert((k.ifindex, 0, 0));
            e.1 += total.saturating_sub(prev);
            e.2 += total;
        }
        // A full (reason, interface) table loses rows, not counts: what
        // found no row is counted per reason alone, shown as iface "other".
        if snap.health[kfree_health::MAP_FULL as usize] > 0 {
            for (&reason, &total) in &snap.unrowed {
                if total > 0 {
                    let p = self.prev.unrowed.get(&reason).copied().unwrap_or(0);
                    let e = merged
                        .entry((reason, "other".to_string()))
                        .or_insert((0, 0, 0));
                    e.1 += total.saturating_sub(p);
                    e.2 += total;
                }
            }
        }
        for ((reason, iface), (ifindex, delta, total)) in merged {
            drops_delta += delta;
            drops_total += total;
            drops.push(DropRow {
                reason: self.reasons.name(reason),
                reason_code: reason,
                category: self.reasons.category(reason),
                program: self.reasons.program(reason),
                iface,
                ifindex,
                delta,
                rate: delta as f64 / secs,
                total,
            });
        }
        // The --enforce blocklist's drops, per interface, as their own reason.
        for (slot, (name, ifindex)) in self.ifaces.iter().enumerate() {
            let total = snap.ifaces.get(slot).map_or(0, |s| s.blocked);
            if total == 0 {
                continue;
            }
            let prev = self.prev.ifaces.get(slot).map_or(0, |s| s.blocked);
            let delta = total.saturating_sub(prev);
            drops_delta += delta;
            drops_total += total;
            drops.push(DropRow {
                reason: BLOCKLIST_REASON.into(),
                reason_code: BLOCKLIST_REASON_CODE,
                category: Category::Blocklist,
                program: None,
                iface: name.clone(),
                ifindex: *ifindex,
                delta,
                rate: delta as f64 / secs,
                total,
            });
        }
        drops.sort_by(|a, b| {
            b.delta
                .cmp(&a.delta)
                .then(b.total.cmp(&a.total))
                .then(a.reason.cmp(&b.reason))
                .then(a.iface.cmp(&b.iface))
        });

        (drops, drops_delta, drops_total)
    }

    /// What XDP saw per watched interface.
    fn iface_rows(&self, snap: &Snapshot, secs: f64) -> Vec<IfaceReport> {
        // XDP view per interface.
        let mut interfaces = Vec::new();
        for (slot, (name, ifindex)) in self.ifaces.iter().enumerate() {
            let zero = IfaceStats::default();
            let cur = snap.ifaces.get(slot).unwrap_or(&zero);
            let prev = self.prev.ifaces.get(slot).unwrap_or(&zero);
            let d = cur.since(prev);
            let mut ports: Vec<PortRow> = snap
                .udp_ports
                .iter()
                .filter(|((s, _), _)| *s == slot as u32)
                .map(|((_, b), total)| {
                    let p = self
                        .prev
                        .udp_ports
                        .get(&(slot as u32, *b))
                        .copied()
                        .unwrap_or(0);
                    PortRow {
                        port: port_label(*b),
                        packets: total.saturating_sub(p),
                        total: *total,
                    }
                })
                .collect();
            ports.sort_by(|a, b| b.packets.cmp(&a.packets).then(b.total.cmp(&a.total)));
            ports.truncate(self.top_n);
            interfaces.push(IfaceReport {
                iface: name.clone(),
                ifindex: *ifindex,
                xdp_mode: self.xdp_modes.get(name).copied().unwrap_or(XdpMode::Off),
                present: iface::index_of(name) == Some(*ifindex),
                link_up: iface::link_state(name) == Some((true, true)),
                pps: d.packets as f64 / secs,
                bps: d.bytes as f64 * 8.0 / secs,
                delta: ShapeCounts::from_stats(&d),
                total: ShapeCounts::from_stats(cur),
                udp_src_ports: ports,
            });
        }

        interfaces
    }

    /// NIC and softnet counters: since the last interval, since start, and
    /// the kernel's own value.
    fn counter_rows(&self, nic: &BTreeMap<String, Counters>) -> Vec<CounterRow> {
        // NIC and softnet counters.
        let mut counters = Vec::new();
        for (iface, c) in nic {
            for (name, value) in c {
                let prev = self.nic_prev.get(iface).and_then(|p| p.get(name)).copied();
                let start = self.nic_start.get(iface).and_then(|p| p.get(name)).copied();
                counters.push(CounterRow {
                    iface: iface.clone(),
                    counter: name.clone(),
                    delta: value.saturating_sub(prev.unwrap_or(*value)),
                    total: value.saturating_sub(start.unwrap_or(*value)),
                    value: *value,
                });
            }
        }

        counters
    }

    /// The kernel symbol table this tracker loaded (waiting for it if need
    /// be), for a caller that needs it past the tracker: doctor's facts.
    pub(crate) fn take_symbols(&mut self) -> Option<crate::sys::kallsyms::Symbols> {
        self.symbols.get();
        match std::mem::replace(
            &mut self.symbols,
            crate::sys::kallsyms::Pending::Ready(None),
        ) {
            crate::sys::kallsyms::Pending::Ready(s) => s,
            crate::sys::kallsyms::Pending::Loading(_) => None,
        }
    }

    /// Reasonless (NOT_SPECIFIED) drops by kernel location, busiest first.
    fn location_rows(&mut self, snap: &Snapshot) -> Vec<LocationRow> {
        let mut locations = Vec::new();
        if !snap.locations.is_empty() {
            for (k, total) in &snap.locations {
                let prev = self.prev.locations.get(k).copied().unwrap_or(0);
                let iface = self.iface_name(k.ifindex, k.netns);
                let symbols = self.symbols.get();
                locations.push(LocationRow {
                    reason: self.reasons.name(k.reason),
                    iface,
                    location: symbols
                        .and_then(|s| s.resolve(k.location))
                        .unwrap_or_else(|| format!("{:#x}", k.location)),
                    delta: total.saturating_sub(prev),
                    total: *total,
                });
            }
            locations.sort_by(|a, b| {
                b.delta
                    .cmp(&a.delta)
                    .then(b.total.cmp(&a.total))
                    .then(a.location.cmp(&b.location))
            });
            locations.truncate(self.top_n);
        }

        locations
    }

    /// The heavy destination ports' rates, busiest first.
    fn top_ports(&self, ports: &[(PortKey, u64)], secs: f64) -> Vec<TopPort> {
        let mut out: Vec<TopPort> = ports
            .iter()
            .map(|(k, d)| TopPort {
                iface: self
                    .ifaces
                    .iter()
                    .find(|(_, i)| *i == k.ifindex)
                    .map_or_else(|| k.ifindex.to_string(), |(n, _)| n.clone()),
                proto: L4::of(k.proto),
                port: k.port,
                pps: *d as f64 / secs.max(1e-3),
            })
            .collect();
        out.sort_by(|a, b| b.pps.total_cmp(&a.pps));
        out.truncate(self.top_n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drop_common::DropKey;

    fn tracker() -> Tracker {
        let reasons = ReasonTable::from_pairs([
            ("SKB_DROP_REASON_NOT_SPECIFIED".to_string(), 2),
            ("SKB_DROP_REASON_NETFILTER_DROP".to_string(), 9),
        ]);
        Tracker::new(reasons, Vec::new(), &[], 1, 10, BTreeMap::new())
    }

    fn key(reason: u32, ifindex: u32) -> DropKey {
        DropKey {
            reason,
            ifindex,
            netns: 1,
            _pad: 0,
        }
    }

    /// A full (reason, interface) table: the drops that found no row still
    /// show, as iface "other", and the totals equal the per-reason counts.
    #[test]
    fn drops_without_a_row_count_as_other() {
        let mut t = tracker();
        let mut snap = Snapshot::default();
        // 100 drops: 70 found their row, 30 a full table.
        snap.unrowed.insert(9, 30);
        snap.by_iface.insert(key(9, 0), 70);
        snap.health[kfree_health::MAP_FULL as usize] = 30;
        let m = t.measure(snap.clone(), BTreeMap::new(), None);
        assert_eq!(m.drops_total, 100);
        let other = m.drops.iter().find(|d| d.iface == "other").unwrap();
        assert_eq!((other.reason.as_str(), other.total), ("NETFILTER_DROP", 30));
        // Next interval: 20 more without a row, 5 more with one.
        snap.unrowed.insert(9, 50);
        snap.by_iface.insert(key(9, 0), 75);
        let m = t.measure(snap, BTreeMap::new(), None);
        let other = m.drops.iter().find(|d| d.iface == "other").unwrap();
        assert_eq!((other.delta, other.total), (20, 50));
        assert_eq!(m.drops_delta, 25);
    }

    /// With no map full, rows are the kernel's rows only.
    #[test]
    fn no_other_row_while_no_map_is_full() {
        let mut t = tracker();
        let mut snap = Snapshot::default();
        snap.unrowed.insert(9, 100);
        snap.by_iface.insert(key(9, 0), 99);
        let m = t.measure(snap, BTreeMap::new(), None);
        assert!(m.drops.iter().all(|d| d.iface != "other"));
        assert_eq!(m.drops_total, 99);
    }
}
