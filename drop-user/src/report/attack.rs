//! Attack events and the loss verdict: what `analysis::detect` finds,
//! as the report and the event stream carry it (schema
//! `dropscope.attack/1`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The attack stream's schema.
pub(crate) const EVENT_SCHEMA: &str = "dropscope.attack/1";
super::constant_field!(attack_schema, EVENT_SCHEMA);

use crate::taxonomy::{AttackClass, L4, LossKind, Phase, SourceSpread, SpoofVerdict, Trigger};

/// A vector of an attack and when it first showed: vectors are added as
/// they appear (a reflection joining a SYN flood), each with its own start.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VectorStart {
    pub class: AttackClass,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Cow<'static, str>>,
    pub started_at: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Vector {
    /// syn-flood, ack-rst-flood, udp-flood, udp-reflection, icmp-flood,
    /// fragment-flood, volumetric.
    pub class: AttackClass,
    pub confidence: u8,
    /// The reflected protocol (DNS, NTP, memcached...) for udp-reflection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Cow<'static, str>>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Spoofing {
    pub verdict: SpoofVerdict,
    /// TTL values that carry at least 0.5% of packets.
    pub distinct_ttls: usize,
    /// Share of packets in the three most common TTLs.
    pub top3_ttl_share: f64,
    /// Share of packets whose TTL no real host sends from within 32 hops
    /// (initial TTLs are 32, 64, 128 or 255): random spoofed TTLs land
    /// there about half the time, real traffic almost never.
    pub implausible_ttl_share: f64,
    pub packets_per_source: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SourceShare {
    pub address: String,
    pub pps: f64,
    pub share: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PortRate {
    pub proto: L4,
    pub port: u16,
    pub pps: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ReasonCount {
    pub reason: String,
    pub packets: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ProgramDropShare {
    pub program: String,
    pub packets: u64,
    /// Of the packets the interface received since the attack started.
    pub share: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SketchBound {
    pub width: usize,
    pub depth: usize,
    /// A per-source estimate exceeds the truth by at most epsilon * packets
    /// of the interval, with probability 1 - delta.
    pub epsilon: f64,
    pub delta: f64,
    pub packets_bound: f64,
    /// Mean packets per sampled packet (1: none sampled out). Sampling adds
    /// at most 4 * sqrt(2 * n * sample_every) to the error of a source that
    /// sent n packets (4 standard deviations).
    pub sample_every: f64,
    /// Sources tracked exactly (false: a spoofed flood exhausted the budget,
    /// sources below the promotion threshold are estimated only, or packets
    /// were sampled).
    pub exact: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AttackEvent {
    /// `dropscope.attack/1`.
    #[serde(deserialize_with = "attack_schema")]
    pub schema: Cow<'static, str>,
    pub id: u64,
    pub phase: Phase,
    pub iface: String,
    pub class: AttackClass,
    /// Confidence comes from evidence: without the kernel's word that the
    /// traffic was unwanted it stays at 60 or below.
    pub confidence: u8,
    /// What the kernel saw this interval: drops by reason as a share of the
    /// interface's packets (or that none were counted), spoofed sources,
    /// half-open handshakes.
    pub evidence: Vec<String>,
    pub vectors: Vec<Vector>,
    /// Every vector seen since the start (confidence 50 or more), with
    /// when it first showed; the first is the attack's class.
    pub vector_starts: Vec<VectorStart>,
    /// What started it: "threshold:<name>", "spike:<metric>" or "kernel:<kind>".
    pub trigger: Trigger,
    pub started_at: f64,
    pub ts: f64,
    pub duration_s: f64,
    pub pps: f64,
    pub bps: f64,
    pub peak_pps: f64,
    pub peak_bps: f64,
    pub distinct_sources: f64,
    pub sources: SourceSpread,
    pub top_source_share: f64,
    pub spoofing: Spoofing,
    pub top_sources: Vec<SourceShare>,
    pub top_ports: Vec<PortRate>,
    /// Drops by reason since the attack started.
    pub drops: Vec<ReasonCount>,
    /// Observe mode: what each observed XDP program on the interface
    /// dropped of the attack's packets since it started ("98% dropped by
    /// xdpfilt_alw_all").
    pub dropped_by: Vec<ProgramDropShare>,
    pub estimate: SketchBound,
    /// PCAP file with the onset and a sample of the attack (`--pcap-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LossVerdict {
    pub verdict: LossKind,
    pub evidence: Vec<String>,
}
