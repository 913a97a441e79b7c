//! Reads the kernel's counters out of the maps: one consistent-enough
//! snapshot per interval, per-CPU values summed.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, IterableMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use drop_common::{
    DropEvent, DropKey, EpochState, HLL_REGISTERS, IfaceStats, LocationKey, MAX_DROP_ROWS,
    MAX_LOCATIONS, MAX_REASONS, MAX_SOURCES, PacketSample, PortKey, SKETCH_DEPTH, SKETCH_WIDTH,
    SourceKey, SourceStats, SrcSketch, Trigger, UDP_PORT_BUCKETS, flood_maps, kfree_health, maps,
};

pub struct Maps {
    drops_by_reason: PerCpuHashMap<MapData, u32, u64>,
    reason_counts: PerCpuArray<MapData, u64>,
    drops_by_iface: PerCpuHashMap<MapData, DropKey, u64>,
    health: PerCpuArray<MapData, u64>,
    iface_stats: PerCpuArray<MapData, IfaceStats>,
    udp_ports: PerCpuArray<MapData, u64>,
    sources: PerCpuHashMap<MapData, SourceKey, SourceStats>,
    locations: PerCpuHashMap<MapData, LocationKey, u64>,
    events: RingBuf<MapData>,
    event_switch: Array<MapData, u32>,
    epoch: Array<MapData, u32>,
    src_sketch: PerCpuArray<MapData, SrcSketch>,
    epoch_state: PerCpuArray<MapData, EpochState>,
    heavy_ports: PerCpuHashMap<MapData, PortKey, u64>,
    /// In-kernel threshold crossings; poll its fd for readiness.
    pub triggers: Option<RingBuf<MapData>>,
    /// Sampled packets for PCAP files; poll its fd for readiness.
    pub samples: Option<RingBuf<MapData>>,
}

/// What one epoch (interval) of the sketches says, all CPUs merged.
#[derive(Clone, Debug, Default)]
pub struct EpochSample {
    pub packets: u64,
    pub bytes: u64,
    pub syn: u64,
    /// Distinct sources (HyperLogLog estimate).
    pub distinct_sources: f64,
    pub distinct_dports: f64,
    /// Sources tracked exactly this epoch (new), and whether the budget ran
    /// out (flood mode) on any CPU.
    pub new_sources: u64,
    pub flood_mode: bool,
    /// Largest sketch counter: an upper bound for the heaviest source.
    pub sketch_max: u64,
}

/// HyperLogLog estimate with the small-range (linear counting) correction.
pub fn hll_estimate(regs: &[u8]) -> f64 {
    let m = regs.len() as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = regs.iter().map(|r| 2f64.powi(-(*r as i32))).sum();
    let e = alpha * m * m / sum;
    let zeros = regs.iter().filter(|r| **r == 0).count();
    if e <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        e
    }
}

/// Totals since load, as the kernel holds them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub by_reason: HashMap<u32, u64>,
    pub by_iface: HashMap<DropKey, u64>,
    pub health: [u64; kfree_health::COUNT as usize],
    /// Indexed by interface slot.
    pub ifaces: Vec<IfaceStats>,
    /// (slot, bucket) -> packets; only non-zero buckets.
    pub udp_ports: HashMap<(u32, u32), u64>,
    pub sources: HashMap<SourceKey, SourceStats>,
    /// False when this snapshot skipped the source table (see `read`).
    pub sources_fresh: bool,
    /// (location, reason) -> drops, for reasonless (NOT_SPECIFIED) drops.
    pub locations: HashMap<LocationKey, u64>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            drops_by_reason: PerCpuHashMap::try_from(take(ebpf, maps::DROPS_BY_REASON)?)?,
            reason_counts: PerCpuArray::try_from(take(ebpf, maps::REASON_COUNTS)?)?,
            drops_by_iface: PerCpuHashMap::try_from(take(ebpf, maps::DROPS_BY_IFACE)?)?,
            health: PerCpuArray::try_from(take(ebpf, maps::KFREE_HEALTH)?)?,
            iface_stats: PerCpuArray::try_from(take(ebpf, maps::IFACE_STATS)?)?,
            udp_ports: PerCpuArray::try_from(take(ebpf, maps::UDP_SRC_PORTS)?)?,
            sources: PerCpuHashMap::try_from(take(ebpf, maps::SOURCES)?)?,
            locations: PerCpuHashMap::try_from(take(ebpf, maps::DROP_LOCATIONS)?)?,
            events: RingBuf::try_from(take(ebpf, maps::DROP_EVENTS)?)?,
            event_switch: Array::try_from(take(ebpf, maps::EVENT_SWITCH)?)?,
            epoch: Array::try_from(take(ebpf, flood_maps::EPOCH)?)?,
            src_sketch: PerCpuArray::try_from(take(ebpf, flood_maps::SRC_SKETCH)?)?,
            epoch_state: PerCpuArray::try_from(take(ebpf, flood_maps::EPOCH_STATE)?)?,
            heavy_ports: PerCpuHashMap::try_from(take(ebpf, flood_maps::HEAVY_PORTS)?)?,
            triggers: Some(RingBuf::try_from(take(ebpf, flood_maps::TRIGGERS)?)?),
            samples: Some(RingBuf::try_from(take(ebpf, flood_maps::SAMPLES)?)?),
        })
    }

    /// The whole source table, per-CPU values summed.
    pub fn read_sources(&self) -> Result<HashMap<SourceKey, SourceStats>> {
        let all = crate::batch::lookup_percpu::<SourceKey, SourceStats>(
            self.sources.map(),
            MAX_SOURCES as usize,
        )?;
        let mut out = HashMap::with_capacity(all.len());
        for (k, v) in all {
            let mut t = SourceStats::default();
            for cpu in &v {
                t.packets += cpu.packets;
                t.bytes += cpu.bytes;
            }
            out.insert(k, t);
        }
        Ok(out)
    }

    /// Ends the current epoch: the XDP program moves to the other sketch;
    /// this one is read, merged over CPUs, then zeroed for its next turn.
    pub fn sample_epoch(&mut self, source_budget: u32) -> Result<EpochSample> {
        let cur = self.epoch.get(&0, 0)?;
        self.epoch.set(0, cur.wrapping_add(1), 0)?;
        let parity = cur & 1;
        let states = self.epoch_state.get(&parity, 0)?;
        let sketches = self.src_sketch.get(&parity, 0)?;
        let mut s = EpochSample::default();
        let mut hll_src = [0u8; HLL_REGISTERS];
        let mut hll_port = [0u8; HLL_REGISTERS];
        for st in states.iter() {
            s.packets += st.packets as u64;
            s.bytes += st.bytes;
            s.syn += st.syn as u64;
            s.new_sources += st.new_sources as u64;
            s.flood_mode |= source_budget > 0 && st.new_sources >= source_budget;
            for i in 0..HLL_REGISTERS {
                hll_src[i] = hll_src[i].max(st.hll_src[i]);
                hll_port[i] = hll_port[i].max(st.hll_dport[i]);
            }
        }
        let mut merged = vec![[0u64; SKETCH_WIDTH]; SKETCH_DEPTH];
        for sk in sketches.iter() {
            for (r, row) in merged.iter_mut().enumerate() {
                for (c, cell) in row.iter_mut().enumerate() {
                    *cell += sk.pkts[r][c] as u64;
                }
            }
        }
        // The heaviest source is at most the smallest row maximum.
        s.sketch_max = merged
            .iter()
            .map(|row| row.iter().copied().max().unwrap_or(0))
            .min()
            .unwrap_or(0);
        s.distinct_sources = if s.packets == 0 {
            0.0
        } else {
            hll_estimate(&hll_src)
        };
        s.distinct_dports = if hll_port.iter().all(|r| *r == 0) {
            0.0
        } else {
            hll_estimate(&hll_port)
        };
        let n = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        // SAFETY: both are plain old data; all-zero is their empty state.
        let zero_state: EpochState = unsafe { std::mem::zeroed() };
        let zero_sketch: SrcSketch = unsafe { std::mem::zeroed() };
        self.epoch_state.set(
            parity,
            aya::maps::PerCpuValues::try_from(vec![zero_state; n])?,
            0,
        )?;
        self.src_sketch.set(
            parity,
            aya::maps::PerCpuValues::try_from(vec![zero_sketch; n])?,
            0,
        )?;
        Ok(s)
    }

    /// Destination ports past the promotion threshold: (key, packets since promoted).
    pub fn heavy_ports(&self) -> Vec<(PortKey, u64)> {
        crate::batch::lookup_percpu::<PortKey, u64>(
            self.heavy_ports.map(),
            drop_common::MAX_HEAVY_PORTS as usize,
        )
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.iter().sum()))
        .collect()
    }

    /// Takes every queued trigger.
    pub fn drain_triggers(rb: &mut RingBuf<MapData>, mut f: impl FnMut(Trigger)) {
        while let Some(item) = rb.next() {
            if item.len() >= std::mem::size_of::<Trigger>() {
                // SAFETY: Trigger is plain old data and the slice is long enough.
                f(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Trigger) });
            }
        }
    }

    pub fn drain_samples(rb: &mut RingBuf<MapData>, mut f: impl FnMut(&PacketSample)) {
        while let Some(item) = rb.next() {
            if item.len() >= std::mem::size_of::<PacketSample>() {
                // SAFETY: PacketSample is plain old data and the slice is long enough.
                let s = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const PacketSample) };
                f(&s);
            }
        }
    }

    /// Switches the per-drop event stream on or off (off by default: it
    /// costs a ring buffer write per drop).
    pub fn set_events(&mut self, on: bool) -> Result<()> {
        self.event_switch.set(0, on as u32, 0)?;
        Ok(())
    }

    /// Hands every queued drop event to `f`.
    pub fn drain_events(&mut self, mut f: impl FnMut(DropEvent)) {
        while let Some(item) = self.events.next() {
            if item.len() >= std::mem::size_of::<DropEvent>() {
                // SAFETY: DropEvent is plain old data and the slice is long enough.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const DropEvent) };
                f(ev);
            }
        }
    }

    /// `slots` is how many interface slots are in use.
    /// `with_sources`: also read the (up to 65 536 entry) source table.
    pub fn read(&self, slots: usize, with_sources: bool) -> Result<Snapshot> {
        use crate::batch::lookup_percpu;
        let mut s = Snapshot::default();
        for (k, v) in lookup_percpu::<u32, u64>(self.drops_by_reason.map(), MAX_REASONS as usize)? {
            s.by_reason.insert(k, v.iter().sum());
        }
        for (k, v) in lookup_percpu::<u32, u64>(self.reason_counts.map(), MAX_REASONS as usize)? {
            let n: u64 = v.iter().sum();
            if n > 0 {
                s.by_reason.insert(k, n);
            }
        }
        for (k, v) in
            lookup_percpu::<DropKey, u64>(self.drops_by_iface.map(), MAX_DROP_ROWS as usize)?
        {
            s.by_iface.insert(k, v.iter().sum());
        }
        for i in 0..kfree_health::COUNT {
            s.health[i as usize] = self.health.get(&i, 0)?.iter().sum();
        }
        for slot in 0..slots as u32 {
            let mut total = IfaceStats::default();
            for cpu in self.iface_stats.get(&slot, 0)?.iter() {
                total.add(cpu);
            }
            s.ifaces.push(total);
        }
        if slots > 0 {
            let n = slots * UDP_PORT_BUCKETS as usize;
            for (i, v) in lookup_percpu::<u32, u64>(self.udp_ports.map(), n)? {
                let total: u64 = v.iter().sum();
                if total != 0 && (i as usize) < n {
                    s.udp_ports
                        .insert((i / UDP_PORT_BUCKETS, i % UDP_PORT_BUCKETS), total);
                }
            }
        }
        if with_sources {
            s.sources_fresh = true;
            s.sources = self.read_sources()?;
        }
        for (k, v) in
            lookup_percpu::<LocationKey, u64>(self.locations.map(), MAX_LOCATIONS as usize)?
        {
            s.locations.insert(k, v.iter().sum());
        }
        Ok(s)
    }
}
