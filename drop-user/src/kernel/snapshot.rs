//! Reads the kernel's counters out of the maps: one consistent-enough
//! snapshot per interval, per-CPU values summed.

use std::collections::HashMap;

use super::Table;

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, IterableMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use drop_common::{
    DropEvent, DropKey, DropPortKey, DropSlots, DropSourceKey, EpochState, HLL_REGISTERS,
    IfaceCounters, IfaceStats, LocationKey, MAX_DROP_PORTS, MAX_DROP_ROWS, MAX_LOCATIONS,
    MAX_REASONS, MAX_SOURCES, PacketSample, PortKey, SourceKey, SourceStats, SrcCache, SrcSketch,
    Trigger, UdpPortCounts, VerdictStats, XDP_ACTIONS, flood_maps, kfree_health, maps, proto,
};

pub(crate) struct Maps {
    drops_by_reason: PerCpuHashMap<MapData, u32, u64>,
    reason_counts: PerCpuArray<MapData, u64>,
    drop_slots: PerCpuArray<MapData, DropSlots>,
    drops_by_iface: PerCpuHashMap<MapData, DropKey, u64>,
    health: PerCpuArray<MapData, u64>,
    iface_stats: PerCpuArray<MapData, IfaceCounters>,
    udp_ports: PerCpuArray<MapData, UdpPortCounts>,
    sources: PerCpuHashMap<MapData, SourceKey, SourceStats>,
    /// The per-CPU cache in front of `sources`: its pending counts are
    /// part of every source's total.
    src_cache: PerCpuArray<MapData, SrcCache>,
    locations: PerCpuHashMap<MapData, LocationKey, u64>,
    drop_sources: PerCpuHashMap<MapData, DropSourceKey, u64>,
    drop_ports: PerCpuHashMap<MapData, DropPortKey, u64>,
    /// The per-drop event ring, mapped into memory only once switched on
    /// (its 4 MiB are mapped twice: 8 MiB of resident memory for nothing
    /// when only doctor reads it).
    events: Lazy<RingBuf<MapData>>,
    event_switch: Array<MapData, u32>,
    epoch: Array<MapData, u32>,
    src_sketch: PerCpuArray<MapData, SrcSketch>,
    epoch_state: PerCpuArray<MapData, EpochState>,
    heavy_ports: PerCpuHashMap<MapData, PortKey, u64>,
    verdicts: PerCpuArray<MapData, VerdictStats>,
    /// In-kernel threshold crossings; poll its fd for readiness.
    pub triggers: Option<RingBuf<MapData>>,
    /// Sampled packets for PCAP files, mapped by [`Maps::take_samples`].
    samples: Lazy<RingBuf<MapData>>,
    cache: ReadCache,
    /// Observed programs (slots of `verdicts` in use).
    pub(crate) observed: u32,
}

/// What one epoch (interval) of the sketches says, all CPUs merged.
#[derive(Clone, Debug, Default)]
pub(crate) struct EpochSummary {
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
    /// Packets that fed the sketches themselves (the rest were sampled
    /// out, see `drop_common::Sampler`); equal to `packets` when exact.
    pub samples: u64,
}

impl EpochSummary {
    /// Mean packets per sample: 1 when every packet fed the sketches.
    pub(crate) fn sample_every(&self) -> f64 {
        if self.samples == 0 || self.samples >= self.packets {
            1.0
        } else {
            self.packets as f64 / self.samples as f64
        }
    }
}

/// Distinct sources among `packets` from the `seen` distinct ones among
/// `samples` of them. Sampling hides a source only if none of its packets
/// was picked, so with p = samples / packets and sources of equal rate,
/// seen = D (1 - (1 - p)^(packets / D)); solved for D (it grows with D):
/// a few heavy sources give D = seen, a spoofed flood of one-packet sources
/// gives D = seen / p.
pub(super) fn unsample_distinct(seen: f64, samples: u64, packets: u64) -> f64 {
    if samples == 0 || samples >= packets || seen <= 0.0 {
        return seen;
    }
    let (n, p) = (packets as f64, samples as f64 / packets as f64);
    let f = |d: f64| d * (1.0 - (1.0 - p).powf(n / d));
    // Nearly every sample a different source: the solution is then steep in
    // `seen`, and HyperLogLog's error (6.5%, so 13% at two sigma) alone can
    // move it several-fold. Within that error of "all distinct", they are.
    if seen >= f(n) * (1.0 - 2.0 * 1.04 / (drop_common::HLL_REGISTERS as f64).sqrt()) {
        return n;
    }
    let (mut lo, mut hi) = (seen, n);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if f(mid) < seen {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// HyperLogLog estimate with the small-range (linear counting) correction.
pub(super) fn hll_estimate(regs: &[u8]) -> f64 {
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

/// The per-source totals: the kernel's table plus its cache's pending
/// counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    pub totals: Table<SourceKey, SourceStats>,
    /// Sources with counts pending in the cache. Never expired: the cache
    /// would bring them back as new sources, their totals counted again.
    pub cached: std::collections::HashSet<SourceKey, foldhash::fast::RandomState>,
}

/// Totals since load, as the kernel holds them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Per reason, the drops a full (reason, interface) table had no row
    /// for (the kernel counts only those per reason). Read only once a
    /// table was full (`kfree_health::MAP_FULL`); empty before.
    pub unrowed: Table<u32, u64>,
    pub by_iface: Table<DropKey, u64>,
    pub health: [u64; kfree_health::COUNT as usize],
    /// Indexed by interface slot.
    pub ifaces: Vec<IfaceStats>,
    /// (slot, bucket) -> packets; only non-zero buckets.
    pub udp_ports: UdpPortBuckets,
    pub sources: Sources,
    /// False when this snapshot skipped the source table (see `read`).
    pub sources_fresh: bool,
    /// The source table is as last read (no packet since): `sources` is
    /// empty and the previous read stands.
    pub sources_unchanged: bool,
    /// The drop tables (`unrowed`, `by_iface`, `locations`,
    /// `drop_ports`) are as last read (no drop event since): they are
    /// empty here and the previous read stands (`drop_sources` has its
    /// own flag, `drop_sources_fresh`).
    pub drops_unchanged: bool,
    /// `drop_sources` was read (at most about once a second, with the
    /// source table); otherwise it is empty and the previous read stands.
    pub drop_sources_fresh: bool,
    /// (location, reason) -> drops, for reasonless (NOT_SPECIFIED) drops.
    pub locations: Table<LocationKey, u64>,
    /// Drop attribution: (reason, source) and (reason, protocol, port) ->
    /// drops (estimates once sampled, see `KfreeConfig::attr_exact`).
    pub drop_sources: Table<DropSourceKey, u64>,
    pub drop_ports: Table<DropPortKey, u64>,
    /// Observe mode: each observed program's verdicts, indexed by slot.
    pub verdicts: Vec<VerdictStats>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

impl Maps {
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            drops_by_reason: PerCpuHashMap::try_from(take(ebpf, maps::DROPS_BY_REASON)?)?,
            reason_counts: PerCpuArray::try_from(take(ebpf, maps::REASON_COUNTS)?)?,
            drop_slots: PerCpuArray::try_from(take(ebpf, maps::DROP_SLOTS)?)?,
            drops_by_iface: PerCpuHashMap::try_from(take(ebpf, maps::DROPS_BY_IFACE)?)?,
            health: PerCpuArray::try_from(take(ebpf, maps::KFREE_HEALTH)?)?,
            iface_stats: PerCpuArray::try_from(take(ebpf, maps::IFACE_STATS)?)?,
            udp_ports: PerCpuArray::try_from(take(ebpf, maps::UDP_SRC_PORTS)?)?,
            sources: PerCpuHashMap::try_from(take(ebpf, maps::SOURCES)?)?,
            src_cache: PerCpuArray::try_from(take(ebpf, maps::SRC_CACHE)?)?,
            locations: PerCpuHashMap::try_from(take(ebpf, maps::DROP_LOCATIONS)?)?,
            // LRU per-CPU hashes read like per-CPU hashes.
            drop_sources: PerCpuHashMap::try_from(take(ebpf, maps::DROP_SOURCES)?)?,
            drop_ports: PerCpuHashMap::try_from(take(ebpf, maps::DROP_PORTS)?)?,
            events: Lazy::Unmapped(take(ebpf, maps::DROP_EVENTS)?),
            event_switch: Array::try_from(take(ebpf, maps::EVENT_SWITCH)?)?,
            epoch: Array::try_from(take(ebpf, flood_maps::EPOCH)?)?,
            src_sketch: PerCpuArray::try_from(take(ebpf, flood_maps::SRC_SKETCH)?)?,
            epoch_state: PerCpuArray::try_from(take(ebpf, flood_maps::EPOCH_STATE)?)?,
            heavy_ports: PerCpuHashMap::try_from(take(ebpf, flood_maps::HEAVY_PORTS)?)?,
            verdicts: PerCpuArray::try_from(take(ebpf, maps::XDP_VERDICTS)?)?,
            triggers: Some(RingBuf::try_from(take(ebpf, flood_maps::TRIGGERS)?)?),
            samples: Lazy::Unmapped(take(ebpf, flood_maps::SAMPLES)?),
            cache: ReadCache::default(),
            observed: 0,
        })
    }

    /// The whole source table, per-CPU values summed.
    pub(crate) fn read_sources(&self) -> Result<Sources> {
        let all = crate::kernel::batch::lookup_percpu::<SourceKey, SourceStats>(
            self.sources.map(),
            MAX_SOURCES as usize,
            |t, v| {
                t.packets += v.packets;
                t.bytes += v.bytes;
            },
        )?;
        // Sized once: grown entry by entry, 65 536 rows rehash 16 times.
        let mut t = Table::with_capacity_and_hasher(all.len(), Default::default());
        t.extend(all);
        // Read after the table: a flush between the two reads is missed
        // once (at most SRC_CACHE_FLUSH packets, or one eviction), never
        // counted twice; the next read has it.
        let mut cached = std::collections::HashSet::default();
        for cpu in self.src_cache.get(&0, 0)?.iter() {
            for slot in cpu.slots.iter().filter(|s| s.pending.packets > 0) {
                if let Some(key) = slot.source() {
                    let e = t.entry(key).or_default();
                    e.packets += slot.pending.packets;
                    e.bytes += slot.pending.bytes;
                    cached.insert(key);
                }
            }
        }
        Ok(Sources { totals: t, cached })
    }

    /// Forgets sources user space expired (see `Tracker::take_expired`).
    pub(crate) fn delete_sources(&self, keys: &[SourceKey]) -> Result<()> {
        crate::kernel::batch::delete(self.sources.map(), keys)?;
        Ok(())
    }

    /// Ends the current epoch: the XDP program moves to the other sketch;
    /// this one is read, merged over CPUs, then zeroed for its next turn.
    pub(crate) fn close_epoch(&mut self, source_budget: u32) -> Result<EpochSummary> {
        let cur = self.epoch.get(&0, 0)?;
        self.epoch.set(0, cur.wrapping_add(1), 0)?;
        let parity = cur & 1;
        // Nothing reached XDP since the last epoch (as of the last `read`):
        // the sketches are as we left them, zeroed.
        if self.cache.epoch_packets == Some(self.cache.packets) {
            return Ok(EpochSummary::default());
        }
        self.cache.epoch_packets = Some(self.cache.packets);
        let states = self.epoch_state.get(&parity, 0)?;
        let mut s = EpochSummary::default();
        let mut hll_src = [0u8; HLL_REGISTERS];
        let mut hll_port = [0u8; HLL_REGISTERS];
        for st in states.iter() {
            s.packets += st.packets as u64;
            s.bytes += st.bytes;
            s.syn += st.syn as u64;
            s.samples += st.samples as u64;
            s.new_sources += st.new_sources as u64;
            s.flood_mode |= source_budget > 0 && st.new_sources >= source_budget;
            for i in 0..HLL_REGISTERS {
                hll_src[i] = hll_src[i].max(st.hll_src[i]);
                hll_port[i] = hll_port[i].max(st.hll_dport[i]);
            }
        }
        s.distinct_sources = if s.packets == 0 {
            0.0
        } else {
            unsample_distinct(hll_estimate(&hll_src), s.samples, s.packets)
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
    pub(crate) fn heavy_ports(&mut self) -> Vec<(PortKey, u64)> {
        // Read again only when XDP saw packets since (see `read`).
        let packets = self.cache.packets;
        if let Some((at, ports)) = &self.cache.ports
            && *at == packets
        {
            return ports.clone();
        }
        let ports: Vec<(PortKey, u64)> = crate::kernel::batch::lookup_percpu::<PortKey, u64>(
            self.heavy_ports.map(),
            drop_common::MAX_HEAVY_PORTS as usize,
            crate::kernel::batch::add_u64,
        )
        .unwrap_or_default();
        self.cache.ports = Some((packets, ports.clone()));
        ports
    }

    /// The PCAP sample ring, mapped, for the caller to poll.
    pub(crate) fn take_samples(&mut self) -> Result<RingBuf<MapData>> {
        self.samples.map()?;
        match std::mem::replace(&mut self.samples, Lazy::Taken) {
            Lazy::Mapped(r) => Ok(r),
            _ => Err(anyhow!("the sample ring was already taken")),
        }
    }

    /// Takes every queued trigger.
    pub(crate) fn drain_triggers(rb: &mut RingBuf<MapData>, mut f: impl FnMut(Trigger)) {
        while let Some(item) = rb.next() {
            if item.len() >= std::mem::size_of::<Trigger>() {
                // SAFETY: Trigger is plain old data and the slice is long enough.
                f(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Trigger) });
            }
        }
    }

    pub(crate) fn drain_packet_samples(
        rb: &mut RingBuf<MapData>,
        mut f: impl FnMut(&PacketSample),
    ) {
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
    pub(crate) fn set_events(&mut self, on: bool) -> Result<()> {
        if on {
            self.events.map()?;
        }
        self.event_switch.set(0, on as u32, 0)?;
        Ok(())
    }

    /// Hands every queued drop event to `f`.
    pub(crate) fn drain_events(&mut self, mut f: impl FnMut(DropEvent)) {
        let Lazy::Mapped(events) = &mut self.events else {
            return;
        };
        while let Some(item) = events.next() {
            if item.len() >= std::mem::size_of::<DropEvent>() {
                // SAFETY: DropEvent is plain old data and the slice is long enough.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const DropEvent) };
                f(ev);
            }
        }
    }

    /// `slots` is how many interface slots are in use.
    /// `with_sources`: also read the (up to 65 536 entry) source table and
    /// the per-source drop table.
    pub(crate) fn read(&mut self, slots: usize, with_sources: bool) -> Result<Snapshot> {
        use crate::kernel::batch::counters;
        let mut s = Snapshot::default();
        // EVENTS' slot of the array stays zero: the count is in DROP_SLOTS.
        for i in (0..kfree_health::COUNT).filter(|&i| i != kfree_health::EVENTS) {
            s.health[i as usize] = self.health.get(&i, 0)?.iter().sum();
        }
        // Every CPU's drop value, one call: its event count says whether
        // the drop tables changed; its slot rows are read below if so.
        let drop_slots = self.drop_slots.get(&0, 0)?;
        s.health[kfree_health::EVENTS as usize] = drop_slots.iter().map(|c| c.events).sum();
        for slot in 0..slots as u32 {
            let mut total = IfaceStats::default();
            for cpu in self.iface_stats.get(&slot, 0)?.iter() {
                total.add(&cpu.stats());
            }
            s.ifaces.push(total);
        }
        for slot in 0..self.observed {
            let mut total = VerdictStats::default();
            for cpu in self.verdicts.get(&slot, 0)?.iter() {
                for a in 0..XDP_ACTIONS {
                    total.packets[a] += cpu.packets[a];
                    total.bytes[a] += cpu.bytes[a];
                }
            }
            s.verdicts.push(total);
        }
        let udp: u64 = s.ifaces.iter().map(|i| i.proto_packets[proto::UDP]).sum();
        if let Some((at, ports)) = &self.cache.udp_ports
            && *at == udp
        {
            s.udp_ports = ports.clone();
        } else if slots > 0 {
            let add = |t: &mut UdpPortCounts, v: &UdpPortCounts| {
                for (t, v) in t.packets.iter_mut().zip(&v.packets) {
                    *t += v;
                }
            };
            let per_slot = crate::kernel::batch::lookup_percpu::<u32, UdpPortCounts>(
                self.udp_ports.map(),
                slots,
                add,
            )?;
            for (slot, counts) in per_slot.into_iter().filter(|(k, _)| (*k as usize) < slots) {
                for (bucket, &n) in counts.packets.iter().enumerate() {
                    if n != 0 {
                        s.udp_ports.insert((slot, bucket as u32), n);
                    }
                }
            }
        }
        if slots > 0 {
            self.cache.udp_ports = Some((udp, s.udp_ports.clone()));
        }
        // A hash map's batch read walks every bucket, full or not: the drop
        // tables change only with a counted drop event and the source table
        // only with a packet, so on a quiet host they are not read again.
        let events = s.health[kfree_health::EVENTS as usize];
        if self.cache.drops_at == Some(events) {
            s.drops_unchanged = true;
        } else {
            // The hashes (rows the slot tables have no room for, subsystem
            // reasons, reasonless drops by location) are re-read only when
            // a drop was counted in one: most drops count in the slots.
            let hashed = s.health[kfree_health::HASHED as usize];
            // Drops without a row exist only once a row table was full (the
            // report's "other" rows): before, the per-reason hash is empty.
            let full = s.health[kfree_health::MAP_FULL as usize] > 0;
            // Keyed on `full` too: the drop that filled a table may have
            // been counted in the hash after `health` was read.
            if self.cache.hashed_at != Some((hashed, full)) {
                self.cache.hashes = HashTables {
                    unrowed: if full {
                        counters(self.drops_by_reason.map(), MAX_REASONS as usize)?
                    } else {
                        Table::default()
                    },
                    by_iface: counters(self.drops_by_iface.map(), MAX_DROP_ROWS as usize)?,
                    locations: counters(self.locations.map(), MAX_LOCATIONS as usize)?,
                };
                self.cache.hashed_at = Some((hashed, full));
            }
            let h = &self.cache.hashes;
            s.by_iface = h.by_iface.clone();
            s.locations = h.locations.clone();
            if full {
                s.unrowed = h.unrowed.clone();
                // The array holds every reason below MAX_REASONS; only those seen count.
                let array = counters::<u32>(self.reason_counts.map(), MAX_REASONS as usize)?;
                s.unrowed.extend(array.into_iter().filter(|(_, n)| *n > 0));
            }
            // Every CPU's slot table: its rows add to the hash's.
            for cpu in drop_slots.iter() {
                for slot in cpu.slots.iter().filter(|s| s.count > 0) {
                    *s.by_iface.entry(slot.key).or_default() += slot.count;
                }
            }
            // Per-port drops feed detection's evidence every interval.
            s.drop_ports = counters(self.drop_ports.map(), MAX_DROP_PORTS as usize)?;
            self.cache.drops_at = Some(events);
        }
        // The per-source table feeds only the top lists: read with the
        // sources, when a drop came since its own last read (which may be
        // before the other drop tables' last read).
        if with_sources && self.cache.drop_sources_at != Some(events) {
            s.drop_sources = counters(
                self.drop_sources.map(),
                drop_common::MAX_DROP_SOURCES as usize,
            )?;
            s.drop_sources_fresh = true;
            self.cache.drop_sources_at = Some(events);
        }
        let packets: u64 = s.ifaces.iter().map(|i| i.packets).sum();
        self.cache.packets = packets;
        if with_sources {
            s.sources_fresh = true;
            if self.cache.sources_at == Some(packets) {
                s.sources_unchanged = true;
            } else {
                s.sources = self.read_sources()?;
                self.cache.sources_at = Some(packets);
            }
        }
        Ok(s)
    }
}

/// A ring buffer whose memory is mapped only when someone reads it; the
/// map itself (its fd, which the programs name) lives from load on.
enum Lazy<R> {
    Unmapped(aya::maps::Map),
    Mapped(R),
    /// Handed out (see [`Maps::take_samples`]).
    Taken,
}

impl Lazy<RingBuf<MapData>> {
    /// Maps the ring (once) and returns it.
    fn map(&mut self) -> Result<&mut RingBuf<MapData>> {
        if let Lazy::Unmapped(_) = self
            && let Lazy::Unmapped(m) = std::mem::replace(self, Lazy::Taken)
        {
            *self = Lazy::Mapped(RingBuf::try_from(m)?);
        }
        match self {
            Lazy::Mapped(r) => Ok(r),
            _ => Err(anyhow!("ring buffer already handed out")),
        }
    }
}

/// (slot, bucket) -> packets.
type UdpPortBuckets = HashMap<(u32, u32), u64>;

/// The drop hashes as last read.
#[derive(Default)]
struct HashTables {
    unrowed: Table<u32, u64>,
    by_iface: Table<DropKey, u64>,
    locations: Table<LocationKey, u64>,
}

/// The last reads of the hash-map tables, with the counter that changes
/// whenever they can.
#[derive(Default)]
struct ReadCache {
    /// Drop events counted when the drop tables were last read.
    drops_at: Option<u64>,
    /// Drop events counted when the per-source drop table was last read.
    drop_sources_at: Option<u64>,
    /// Hashed drops (see `kfree_health::HASHED`) and whether a row table
    /// was full, at the hashes' last read, and that read.
    hashed_at: Option<(u64, bool)>,
    hashes: HashTables,
    /// XDP packets seen when the source table was last read.
    sources_at: Option<u64>,
    /// XDP packets at the last `read`, and at the last epoch read.
    packets: u64,
    epoch_packets: Option<u64>,
    /// (XDP packets, heavy ports) at the last read of the heavy ports.
    ports: Option<(u64, Vec<(PortKey, u64)>)>,
    /// (UDP packets, source-port buckets) at the last read of the buckets.
    udp_ports: Option<(u64, UdpPortBuckets)>,
}

#[cfg(test)]
mod tests {
    use super::unsample_distinct;

    /// Draws `samples` of `packets` packets spread over sources of the given
    /// sizes (deterministic stride) and counts the distinct ones seen.
    fn seen(sizes: &[u64], every: u64) -> (f64, u64, u64) {
        let packets: u64 = sizes.iter().sum();
        let mut owner = Vec::with_capacity(packets as usize);
        for (i, n) in sizes.iter().enumerate() {
            owner.extend(std::iter::repeat_n(i, *n as usize));
        }
        // Interleave the sources the way traffic would (a fixed shuffle).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in (1..owner.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            owner.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let picked: std::collections::HashSet<usize> =
            owner.iter().step_by(every as usize).copied().collect();
        (picked.len() as f64, packets.div_ceil(every), packets)
    }

    #[test]
    fn sampling_is_undone_for_spoofed_and_for_heavy_sources() {
        // A spoofed flood: 200 000 sources of one packet each.
        let (d, s, n) = seen(&vec![1; 200_000], 32);
        let est = unsample_distinct(d, s, n);
        assert!((est - 200_000.0).abs() < 10_000.0, "{est}");
        // Ten heavy sources: all seen, none invented.
        let (d, s, n) = seen(&[20_000; 10], 32);
        assert_eq!(d, 10.0);
        assert!((unsample_distinct(d, s, n) - 10.0).abs() < 0.5);
        // Light spoofed sources whose HyperLogLog count reads 10% low (its
        // error) are still about one per packet, not a few heavy ones.
        let (d, s, n) = seen(&vec![1; 200_000], 32);
        let est = unsample_distinct(d * 0.9, s, n);
        assert!(est > 150_000.0, "{est}");
        // Nothing sampled out: the estimate is what was seen.
        assert_eq!(unsample_distinct(123.0, 1000, 1000), 123.0);
    }
}
