//! Reads the kernel's counters out of the maps: one consistent-enough
//! snapshot per interval, per-CPU values summed.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use drop_common::{
    DropEvent, DropKey, IfaceStats, LocationKey, SourceKey, SourceStats, UDP_PORT_BUCKETS,
    kfree_health, maps,
};

pub struct Maps {
    drops_by_reason: PerCpuHashMap<MapData, u32, u64>,
    drops_by_iface: PerCpuHashMap<MapData, DropKey, u64>,
    health: PerCpuArray<MapData, u64>,
    iface_stats: PerCpuArray<MapData, IfaceStats>,
    udp_ports: PerCpuArray<MapData, u64>,
    sources: PerCpuHashMap<MapData, SourceKey, SourceStats>,
    locations: PerCpuHashMap<MapData, LocationKey, u64>,
    events: RingBuf<MapData>,
    event_switch: Array<MapData, u32>,
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
            drops_by_iface: PerCpuHashMap::try_from(take(ebpf, maps::DROPS_BY_IFACE)?)?,
            health: PerCpuArray::try_from(take(ebpf, maps::KFREE_HEALTH)?)?,
            iface_stats: PerCpuArray::try_from(take(ebpf, maps::IFACE_STATS)?)?,
            udp_ports: PerCpuArray::try_from(take(ebpf, maps::UDP_SRC_PORTS)?)?,
            sources: PerCpuHashMap::try_from(take(ebpf, maps::SOURCES)?)?,
            locations: PerCpuHashMap::try_from(take(ebpf, maps::DROP_LOCATIONS)?)?,
            events: RingBuf::try_from(take(ebpf, maps::DROP_EVENTS)?)?,
            event_switch: Array::try_from(take(ebpf, maps::EVENT_SWITCH)?)?,
        })
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
    pub fn read(&self, slots: usize) -> Result<Snapshot> {
        let mut s = Snapshot::default();
        for item in self.drops_by_reason.iter() {
            // An entry can vanish between key and value lookups: skip it.
            let Ok((k, v)) = item else { continue };
            s.by_reason.insert(k, v.iter().sum());
        }
        for item in self.drops_by_iface.iter() {
            let Ok((k, v)) = item else { continue };
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
            for bucket in 0..UDP_PORT_BUCKETS {
                let v: u64 = self
                    .udp_ports
                    .get(&(slot * UDP_PORT_BUCKETS + bucket), 0)?
                    .iter()
                    .sum();
                if v != 0 {
                    s.udp_ports.insert((slot, bucket), v);
                }
            }
        }
        for item in self.sources.iter() {
            let Ok((k, v)) = item else { continue };
            let mut t = SourceStats::default();
            for cpu in v.iter() {
                t.packets += cpu.packets;
                t.bytes += cpu.bytes;
            }
            s.sources.insert(k, t);
        }
        for item in self.locations.iter() {
            let Ok((k, v)) = item else { continue };
            s.locations.insert(k, v.iter().sum());
        }
        Ok(s)
    }
}
