//! kfree_skb programs: one drop event in, one counter up.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use drop_common::{
    AttrState, DROP_EVENT_RING_BYTES, DROP_SLOT_COUNT, DropEvent, DropKey, DropPortKey, DropSlots,
    DropSourceKey, KFREE_FLAG_PKT_OFFSETS, KFREE_FLAG_SKB_OFFSETS, KfreeConfig, LocationKey,
    MAX_DROP_PORTS, MAX_DROP_ROWS, MAX_DROP_SOURCES, MAX_LOCATIONS, MAX_REASONS, kfree_health,
    parse::{Addr, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::xdp::EPOCH;

/// Filled in by user space before load (offsets from BTF and tracefs).
#[unsafe(no_mangle)]
static KFREE_CONFIG: KfreeConfig = KfreeConfig {
    reason_not_dropped_yet: 0,
    reason_consumed: 1,
    reason_not_specified: 2,
    flags: 0,
    netns_filter: 0,
    skb_dev: 0,
    skb_iif: 0,
    skb_sk: 0,
    dev_ifindex: 0,
    dev_net: 0,
    sk_net: 0,
    net_inum: 0,
    tp_skbaddr: 0,
    tp_location: 0,
    tp_reason: 0,
    tp_reason_size: 0,
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    skb_protocol: 0,
    attr_exact: 0,
    attr_every: 0,
    attr_source_budget: 0,
    attr_port_budget: 0,
    drop_slots: 0,
};

#[map]
static DROPS_BY_REASON: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(MAX_REASONS, 0);

#[map]
static REASON_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_REASONS, 0);

/// Each CPU's event count, attribution sampler and direct-mapped rows
/// (found before the hash, see `count_row`): one value, so a drop finds
/// all it touches with one lookup.
#[map]
static DROP_SLOTS: PerCpuArray<DropSlots> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub(crate) static DROPS_BY_IFACE: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_DROP_ROWS, 0);

#[map]
static DROP_LOCATIONS: PerCpuHashMap<LocationKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_LOCATIONS, 0);

#[map]
static DROP_EVENTS: RingBuf = RingBuf::with_byte_size(DROP_EVENT_RING_BYTES, 0);

#[map]
static EVENT_SWITCH: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static DROP_SOURCES: LruPerCpuHashMap<DropSourceKey, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_DROP_SOURCES, 0);

#[map]
static DROP_PORTS: LruPerCpuHashMap<DropPortKey, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_DROP_PORTS, 0);

#[map]
static KFREE_HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(kfree_health::COUNT, 0);

/// The load-time config. User space patches .rodata at load, so LLVM must
/// not fold the zeros of the initializer: the address goes through a
/// volatile read (opaque to LLVM), and each path then loads only the
/// fields it uses (a volatile copy of the whole struct loaded all 25 on
/// every drop). The verifier still sees a frozen read-only map value, so
/// the offsets the direct BTF loads need are known constants.
#[inline(always)]
pub(crate) fn config() -> &'static KfreeConfig {
    let p = &raw const KFREE_CONFIG;
    // SAFETY: p is a valid pointer to a static that lives forever and is
    // never written from BPF; the volatile read only hides its value.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// tp_btf/kfree_skb: typed arguments (skb, location, reason[, rx_sk]).
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    // skb is a BTF-typed pointer here: its fields load directly, checked by
    // the verifier against the kernel's BTF, with no helper call.
    record_drop::<true, _>(&ctx, config(), skb, location, reason);
    0
}

/// Classic skb:kfree_skb tracepoint: field offsets come from tracefs.
#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb_tp(ctx: TracePointContext) -> u32 {
    let cfg = config();
    // SAFETY: the offsets and sizes come from this kernel's tracefs format
    // of skb:kfree_skb; read_at is a bounded probe read of the context.
    let skb: u64 = unsafe { ctx.read_at(cfg.tp_skbaddr as usize) }.unwrap_or(0);
    // SAFETY: as above.
    let location: u64 = unsafe { ctx.read_at(cfg.tp_location as usize) }.unwrap_or(0);
    let reason: u32 = if cfg.tp_reason_size == 0 {
        // Before 5.17 kfree_skb is only called for drops (consume_skb for
        // the rest): each event is a drop the kernel gave no reason for.
        cfg.reason_not_specified
    } else if cfg.tp_reason_size == 2 {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u16>(cfg.tp_reason as usize) }.unwrap_or(0) as u32
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u32>(cfg.tp_reason as usize) }.unwrap_or(0)
    };
    record_drop::<false, _>(&ctx, cfg, skb, location, reason);
    0
}

#[inline(always)]
pub(crate) fn bump_health(slot: u32) {
    if let Some(p) = KFREE_HEALTH.get_ptr_mut(slot) {
        // SAFETY: a per-CPU array value, valid and ours for this run.
        unsafe { *p += 1 };
    }
}

/// Counts a drop that found no (reason, interface) row in a full table
/// under its reason alone: the report's "other" row. Only these count per
/// reason; every other drop is in its row (no update per drop that user
/// space would only subtract again).
#[inline(always)]
pub(crate) fn unrowed<C: EbpfContext>(ctx: &C, reason: u32) {
    // Reasons below MAX_REASONS count in an array (no hashing); subsystem
    // and XDP reasons (high bits set) in the hash.
    if reason < MAX_REASONS {
        if let Some(p) = REASON_COUNTS.get_ptr_mut(reason) {
            // SAFETY: a per-CPU array value, valid and ours for this run.
            unsafe { *p += 1 };
        }
    } else {
        let _ = bump(&DROPS_BY_REASON, &reason);
    }
    map_full(ctx);
}

/// Counts one drop event on this CPU (an observed XDP program's drop;
/// kfree_skb's are counted in `record_drop`): user space re-reads the
/// drop tables only when the count moved.
#[inline(always)]
pub(crate) fn count_event() {
    if let Some(cpu) = DROP_SLOTS.get_ptr_mut(0) {
        // SAFETY: this CPU's value of a per-CPU array, valid and ours for
        // this run.
        unsafe { (*cpu).events += 1 };
    }
}

/// Counts a drop that found no row in a full table. The first on each CPU
/// is logged (aya-log; user space prints it on stderr), never another.
#[inline(always)]
pub(crate) fn map_full<C: EbpfContext>(ctx: &C) {
    let Some(p) = KFREE_HEALTH.get_ptr_mut(kfree_health::MAP_FULL) else {
        return;
    };
    // SAFETY: a per-CPU array value, valid and ours for this run.
    let before = unsafe { *p };
    // SAFETY: as above.
    unsafe { *p = before + 1 };
    if before == 0 {
        warn!(
            ctx,
            "a drop table is full: drops that find no (reason, interface) or location row are counted per reason only"
        );
    }
}

#[inline(always)]
fn read<T, const DIRECT: bool>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    if DIRECT {
        // The offset is a read-only constant, so the verifier knows exactly
        // which BTF field this is; a fault (freed memory) reads as zero.
        // SAFETY: base is a BTF-typed kernel pointer and offset a field of
        // its type from BTF; the verifier checks the load (BPF_PROBE_MEM).
        return Some(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) });
    }
    // SAFETY: a probe read: any address is allowed, faults return Err.
    match unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            bump_health(kfree_health::READ_ERRORS);
            None
        }
    }
}

#[inline(always)]
fn record_drop<const DIRECT: bool, C: EbpfContext>(
    ctx: &C,
    cfg: &KfreeConfig,
    skb: u64,
    location: u64,
    reason: u32,
) {
    if reason == cfg.reason_not_dropped_yet || reason == cfg.reason_consumed {
        return;
    }

    let mut key = DropKey {
        reason,
        ifindex: 0,
        netns: 0,
        _pad: 0,
    };
    if cfg.flags & KFREE_FLAG_SKB_OFFSETS != 0 {
        let dev: u64 = read::<_, DIRECT>(skb, cfg.skb_dev).unwrap_or(0);
        // skb_iif is the ingress device even after skb->dev moved on.
        let iif: u32 = read::<_, DIRECT>(skb, cfg.skb_iif).unwrap_or(0);
        key.ifindex = if iif != 0 {
            iif
        } else {
            read::<_, DIRECT>(dev, cfg.dev_ifindex).unwrap_or(0)
        };
        let mut net: u64 = read::<_, DIRECT>(dev, cfg.dev_net).unwrap_or(0);
        if net == 0 {
            let sk: u64 = read::<_, DIRECT>(skb, cfg.skb_sk).unwrap_or(0);
            net = read::<_, DIRECT>(sk, cfg.sk_net).unwrap_or(0);
        }
        key.netns = read::<_, DIRECT>(net, cfg.net_inum).unwrap_or(0);
    }
    // An observed XDP program's drop, which its exit already counted.
    if crate::observe::counted_by_exit(reason, cfg.reason_not_specified, key.ifindex) {
        return;
    }
    if cfg.netns_filter != 0 && key.netns != 0 && key.netns != cfg.netns_filter {
        bump_health(kfree_health::OTHER_NETNS);
        return;
    }
    let Some(cpu) = DROP_SLOTS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value of a per-CPU array, valid for this run and
    // written by no one else (this program does not nest on a CPU).
    let cpu = unsafe { &mut *cpu };
    cpu.events += 1;
    if !count_row(cfg, cpu, &key) {
        unrowed(ctx, reason);
    }
    // A reasonless drop is only findable by where it happened.
    if reason == cfg.reason_not_specified {
        let lk = LocationKey {
            location,
            reason,
            ifindex: key.ifindex,
            netns: key.netns,
            _pad: 0,
        };
        if !bump(&DROP_LOCATIONS, &lk) {
            map_full(ctx);
        }
    }
    if cfg.flags & KFREE_FLAG_PKT_OFFSETS != 0 {
        attribute::<DIRECT>(cfg, skb, reason);
    }
    if EVENT_SWITCH.get(0).copied().unwrap_or(0) != 0 {
        let ev = DropEvent {
            // SAFETY: a helper with no arguments.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            location,
            reason,
            ifindex: key.ifindex,
            netns: key.netns,
            _pad: 0,
        };
        if DROP_EVENTS.output::<DropEvent>(&ev, 0).is_err() {
            bump_health(kfree_health::EVENTS_LOST);
        }
    }
}

/// Adds one to `key`'s row: its slot in this CPU's slot table when the
/// slot is free or already its own (an inlined array lookup and an index:
/// the common case, a few busy rows), else the hash. Only this program
/// writes the slots, and it does not nest on a CPU, so a slot is never
/// claimed twice. False if the hash is full.
#[inline(always)]
fn count_row(cfg: &KfreeConfig, cpu: &mut DropSlots, key: &DropKey) -> bool {
    if cfg.drop_slots != 0 {
        // Masked below DROP_SLOT_COUNT.
        let i = drop_common::drop_slot(key) & (DROP_SLOT_COUNT - 1);
        let s = &mut cpu.slots[i];
        if s.count == 0 {
            s.key = *key;
            s.count = 1;
            return true;
        }
        if s.key.reason == key.reason && s.key.ifindex == key.ifindex && s.key.netns == key.netns {
            s.count += 1;
            return true;
        }
    }
    bump(&DROPS_BY_IFACE, key)
}

/// Adds one to a per-CPU counter, creating it if needed; false if the map is
/// full. Counted in `HASHED`, so user space skips reading hashes that did
/// not change.
#[inline(always)]
pub(crate) fn bump<K>(map: &PerCpuHashMap<K, u64>, key: &K) -> bool {
    bump_health(kfree_health::HASHED);
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU hash entry.
        unsafe { *p += 1 };
        return true;
    }
    match map.insert(key, &1, BPF_NOEXIST as u64) {
        Ok(()) => true,
        // Another CPU created it first: count on the existing entry.
        Err(_) => match map.get_ptr_mut(key) {
            Some(p) => {
                // SAFETY: as above.
                unsafe { *p += 1 };
                true
            }
            None => false,
        },
    }
}

/// Drop attribution: the dropped packet's source address and destination
/// port, counted per reason. Exact until this CPU has seen `attr_exact`
/// drops in the epoch, then for 1 in about `attr_every` drops, each counted
/// for its gap (see `drop_common::Sampler`), so a drop flood costs a hash
/// update only now and then. New rows per epoch are budgeted: a spoofed
/// flood can't churn the tables, and what finds no row is counted.
#[inline(always)]
fn attribute<const DIRECT: bool>(cfg: &KfreeConfig, skb: u64, reason: u32) {
    let Some((st, weight)) = attr_weight(cfg) else {
        return;
    };

    let head: u64 = read::<_, DIRECT>(skb, cfg.skb_head).unwrap_or(0);
    let nh: u16 = read::<_, DIRECT>(skb, cfg.skb_network_header).unwrap_or(0xffff);
    let th: u16 = read::<_, DIRECT>(skb, cfg.skb_transport_header).unwrap_or(0xffff);
    let protocol = u16::from_be(read::<u16, DIRECT>(skb, cfg.skb_protocol).unwrap_or(0));
    // ~0 means "not set": dropped before the stack looked at the headers.
    if head == 0 || nh == 0xffff {
        return;
    }
    let ip = head + nh as u64;
    let mut src = DropSourceKey {
        reason,
        family: 0,
        _pad: [0; 3],
        addr: [0; 16],
    };
    let mut dport = None;
    let (l4proto, l4) = match protocol {
        ETH_P_IP => {
            // 24 bytes: with a plain 20-byte header the ports come along,
            // saving a second read.
            // SAFETY: a probe read: any address is allowed, faults return Err.
            let Ok(h) = (unsafe { bpf_probe_read_kernel(ip as *const [u8; 24]) }) else {
                return;
            };
            if h[0] >> 4 != 4 {
                return;
            }
            src.family = 4;
            src.addr[..4].copy_from_slice(&h[12..16]);
            // Later fragments carry no transport header.
            let later = u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0;
            let ihl = (h[0] & 0x0f) as u16 * 4;
            let l4 = if th != 0xffff && th > nh {
                head + th as u64
            } else {
                ip + ihl as u64
            };
            if ihl == 20 && l4 == ip + 20 {
                dport = Some(u16::from_be_bytes([h[22], h[23]]));
            }
            (if later { 0 } else { h[9] }, l4)
        }
        ETH_P_IPV6 => {
            // SAFETY: a probe read: any address is allowed, faults return Err.
            let Ok(h) = (unsafe { bpf_probe_read_kernel(ip as *const [u8; 24]) }) else {
                return;
            };
            if h[0] >> 4 != 6 {
                return;
            }
            src.family = 6;
            src.addr.copy_from_slice(&h[8..24]);
            // Extension headers: the port is known only once the stack has
            // found the transport header.
            let l4 = if th != 0xffff && th > nh {
                head + th as u64
            } else {
                ip + 40
            };
            let direct = th == 0xffff || th as u32 == nh as u32 + 40;
            (if direct { h[6] } else { 0 }, l4)
        }
        _ => return,
    };
    // Plain values, not Option combinators around the helper call: LLVM
    // may spill a None's undefined payload register after the call, which
    // the verifier rejects as a read of an unset register (6.18).
    let mut port: u16 = 0;
    let mut has_port = false;
    if l4proto == IPPROTO_TCP || l4proto == IPPROTO_UDP {
        if let Some(p) = dport {
            port = p;
            has_port = true;
        } else if let Ok(b) =
            // SAFETY: a probe read, as above.
            unsafe { bpf_probe_read_kernel((l4 + 2) as *const [u8; 2]) }
        {
            port = u16::from_be_bytes(b);
            has_port = true;
        }
    }
    attr_count(cfg, st, weight, src, has_port.then_some((l4proto, port)));
}

/// Attribution of a drop whose source and port are already known (an
/// observed XDP program's drop, from its entry's stash).
#[inline(always)]
pub(crate) fn attribute_parsed(
    cfg: &KfreeConfig,
    reason: u32,
    src: Option<Addr>,
    port: Option<(u8, u16)>,
) {
    let Some(src) = src else {
        return;
    };
    let Some((st, weight)) = attr_weight(cfg) else {
        return;
    };
    let key = DropSourceKey {
        reason,
        family: src.family,
        _pad: [0; 3],
        addr: src.bytes(),
    };
    attr_count(cfg, st, weight, key, port);
}

/// This CPU's attribution state and the weight of this drop, or None when
/// the sampler skips it.
#[inline(always)]
fn attr_weight(cfg: &KfreeConfig) -> Option<(&'static mut AttrState, u32)> {
    let cpu = DROP_SLOTS.get_ptr_mut(0)?;
    // SAFETY: this CPU's value of a per-CPU array, valid and ours for this
    // run; its head line is the one the drop's event count just touched.
    let st = unsafe { &mut (*cpu).attr };
    let weight = st.sampler.take()?;
    let epoch = EPOCH.get(0).copied().unwrap_or(0);
    if st.epoch != epoch {
        st.epoch = epoch;
        st.drops = 0;
        st.new_sources = 0;
        st.new_ports = 0;
    }
    st.drops = st.drops.wrapping_add(weight);
    // SAFETY: a helper with no arguments.
    let random = || unsafe { bpf_get_prandom_u32() };
    st.sampler
        .next(st.drops >= cfg.attr_exact, cfg.attr_every, random);
    Some((st, weight))
}

/// Counts a sampled drop (weight `weight`) for its source and port.
#[inline(always)]
fn attr_count(
    cfg: &KfreeConfig,
    st: &mut AttrState,
    weight: u32,
    src: DropSourceKey,
    port: Option<(u8, u16)>,
) {
    let mut attributed = count_weighted(
        &DROP_SOURCES,
        &src,
        weight,
        &mut st.new_sources,
        cfg.attr_source_budget,
    );
    if let Some((proto, port)) = port {
        let port = DropPortKey {
            reason: src.reason,
            proto,
            _pad: 0,
            port,
        };
        attributed &= count_weighted(
            &DROP_PORTS,
            &port,
            weight,
            &mut st.new_ports,
            cfg.attr_port_budget,
        );
    }
    if !attributed {
        bump_health(kfree_health::UNATTRIBUTED);
    }
}

/// Adds `w` to `key`'s row, inserting it while `budget` lasts; false when
/// it has no row.
#[inline(always)]
fn count_weighted<K>(
    map: &LruPerCpuHashMap<K, u64>,
    key: &K,
    w: u32,
    inserted: &mut u32,
    budget: u32,
) -> bool {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's value of an LRU per-CPU hash entry.
        unsafe { *p += w as u64 };
        return true;
    }
    if *inserted >= budget {
        return false;
    }
    *inserted += 1;
    map.insert(key, &(w as u64), 0).is_ok()
}
