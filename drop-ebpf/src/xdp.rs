//! XDP observer: packet shapes per interface and packets/bytes per source.
//! Every read is bounds checked against data_end; the verdict is always PASS.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::{bpf_ktime_get_ns, bpf_map_lookup_elem},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use drop_common::{
    BLOCK_FILTER_WORDS, BlockEntry, Classify, EpochState, IfaceCounters, MAX_BLOCKS,
    MAX_HEAVY_PORTS, MAX_IFACES, MAX_SOURCES, PacketSample, PortKey, SAMPLE_RING_BYTES,
    SAMPLE_SNAP_MAX, SKETCH_WIDTH, SLOT_ARRAY_IFINDEXES, SRC_CACHE_FLUSH, SRC_CACHE_SLOTS,
    SourceKey, SourceStats, SrcCache, SrcCacheSlot, SrcSketch, TRIGGER_RING_BYTES, Trigger,
    UDP_OTHER_BUCKET, UDP_PORT_BUCKETS, UdpPortCounts, XdpConfig, fmix, hash_addr, hll_slot,
    parse::{Addr, Bytes, Shape, parse, source_at, walk},
    sketch_index, trigger_kind,
};

/// One field of [`XDP_CONFIG`], the only way it is read.
macro_rules! xdp_config {
    ($field:ident) => {
        // SAFETY: a plain aligned read of a static; volatile because user
        // space patches .rodata at load time and LLVM must not fold the
        // zero it sees here.
        unsafe { core::ptr::read_volatile(&raw const $crate::xdp::XDP_CONFIG.$field) }
    };
}
pub(crate) use xdp_config;

/// Filled in by user space before load: budgets and trigger counts.
#[unsafe(no_mangle)]
pub(crate) static XDP_CONFIG: XdpConfig = XdpConfig {
    source_budget: 0,
    promote_packets: 0,
    port_budget: 0,
    promote_port_packets: 0,
    trigger_source: 0,
    trigger_port: 0,
    trigger_packets: 0,
    trigger_syn: 0,
    enforce: 0,
    sample_every: 0,
    snaplen: 0,
    exact_packets: 0,
    flood_sample_every: 0,
};

#[map]
pub(crate) static EPOCH: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static SRC_SKETCH: PerCpuArray<SrcSketch> = PerCpuArray::with_max_entries(2, 0);

#[map]
static EPOCH_STATE: PerCpuArray<EpochState> = PerCpuArray::with_max_entries(2, 0);

#[map]
static HEAVY_PORTS: LruPerCpuHashMap<PortKey, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_HEAVY_PORTS, 0);

#[map]
static TRIGGERS: RingBuf = RingBuf::with_byte_size(TRIGGER_RING_BYTES, 0);

#[map]
static IFACE_SLOT_ARRAY: Array<u32> = Array::with_max_entries(SLOT_ARRAY_IFINDEXES, 0);

#[map]
static IFACE_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IFACES, 0);

#[map]
static IFACE_STATS: PerCpuArray<IfaceCounters> = PerCpuArray::with_max_entries(MAX_IFACES, 0);

#[map]
static PORT_BUCKETS: Array<u32> = Array::with_max_entries(65536, 0);

#[map]
static UDP_SRC_PORTS: PerCpuArray<UdpPortCounts> = PerCpuArray::with_max_entries(MAX_IFACES, 0);

#[map]
static SOURCES: LruPerCpuHashMap<SourceKey, SourceStats> =
    LruPerCpuHashMap::with_max_entries(MAX_SOURCES, 0);

#[map]
static SRC_CACHE: PerCpuArray<SrcCache> = PerCpuArray::with_max_entries(1, 0);

/// `--enforce` blocklists, pinned so `dropscope block` can edit them.
#[map]
static BLOCK_V4: LpmTrie<[u8; 4], BlockEntry> = LpmTrie::with_max_entries(MAX_BLOCKS, 0);

#[map]
static BLOCK_V6: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::with_max_entries(MAX_BLOCKS, 0);

#[map]
static BLOCK_FILTER: Array<u64> = Array::with_max_entries(BLOCK_FILTER_WORDS, 0);

/// 1-in-K packet samples for the PCAP ring.
#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLE_RING_BYTES, 0);

#[map]
static SAMPLE_COUNT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Heavy destination ports are counted in steps of this many packets.
const PORT_SAMPLE: u32 = 64;

/// Any watched interface: the slot is looked up from the frame's ifindex.
#[xdp]
pub fn dropscope_xdp(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some((slot, stats)) = iface_stats(ifindex) else {
        return xdp_action::XDP_PASS;
    };
    observe(&ctx, slot, stats, || ifindex)
}

/// One program per fixed interface slot (`programs::XDP_SLOT`): attached to
/// that slot's interface only, it skips the per-frame ifindex read (three
/// dependent loads through the receive queue and device) and the slot
/// lookup, and reads the ifindex only on the sampled path that needs it.
macro_rules! xdp_for_slot {
    ($($name:ident = $slot:literal),* $(,)?) => {$(
        #[xdp]
        pub fn $name(ctx: XdpContext) -> u32 {
            let Some(stats) = IFACE_STATS.get_ptr_mut($slot) else {
                return xdp_action::XDP_PASS;
            };
            // SAFETY: a per-CPU array slot: valid for the program's run
            // and written by no one else (XDP is not preempted on its CPU).
            let stats = unsafe { &mut *stats };
            observe(&ctx, $slot, stats, || ctx.ingress_ifindex() as u32)
        }
    )*};
}

xdp_for_slot!(
    dropscope_xdp_0 = 0,
    dropscope_xdp_1 = 1,
    dropscope_xdp_2 = 2,
    dropscope_xdp_3 = 3,
);

/// A bounds-checked view of the frame.
struct Frame {
    start: usize,
    end: usize,
}

impl Bytes for Frame {
    /// Copies `N` bytes at `off`, or None past the end. N must be at least 2:
    /// LLVM turns a one-byte check into `p >= end`, which the verifier
    /// can't use to prove the read safe.
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        let src = p as *const u8;
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            // SAFETY: p + N <= end was checked above, so every byte read
            // lies inside the packet (and the verifier sees the check).
            out[i] = unsafe { *src.add(i) };
            i += 1;
        }
        Some(out)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Counts the frame; the verdict is PASS unless `--enforce` finds its
/// source in the blocklist.
///
/// Every frame pays only for its shape counters (exact); the per-source and
/// per-port path ([`per_source`]) runs for every frame until this CPU has seen
/// `exact_packets` in the epoch, then for about 1 in `flood_sample_every`,
/// each sample weighted by its gap. That keeps the cost per packet near the
/// floor whatever the traffic, and the estimates unbiased.
#[inline(always)]
fn observe(
    ctx: &XdpContext,
    slot: u32,
    stats: &mut IfaceCounters,
    ifindex: impl Fn() -> u32,
) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let len = (frame.end - frame.start) as u64;
    // PCAP samples need no parse: taken before any, the verifier checks
    // this path once instead of once per parse outcome.
    let sample_every = xdp_config!(sample_every);
    if sample_every != 0 {
        sample(ifindex(), len as u32, sample_every, |dst, caplen| {
            // SAFETY: dst is the reserved record's data array and caplen
            // within 1..=its size (checked by `sample`).
            unsafe { aya_ebpf::helpers::bpf_xdp_load_bytes(ctx.ctx, 0, dst, caplen) == 0 }
        });
    }
    sampled_path(&frame, ifindex, slot, stats, len);
    // Every frame: the walk reports only what the shape counters need.
    let mut class = Classify::default();
    walk(&frame, &mut class);
    stats.count_class(&class, len);
    let enforce = xdp_config!(enforce);
    if enforce != 0
        && let Some((family, off)) = class.source_at().get()
        && maybe_blocked(&frame, family, off)
        && let Some(addr) = source_at(&frame, family, off).get()
        && blocked(&addr, len)
    {
        stats.blocked += 1;
        stats.blocked_bytes += len;
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// The watched interface's slot and this CPU's counters for it, or None
/// when `ifindex` is not watched.
#[inline(always)]
pub(crate) fn iface_stats(ifindex: u32) -> Option<(u32, &'static mut IfaceCounters)> {
    // Array lookups are inlined by the verifier; the hash is the rare path.
    let slot = if ifindex < SLOT_ARRAY_IFINDEXES {
        match IFACE_SLOT_ARRAY.get(ifindex).copied() {
            Some(s) if s > 0 => s - 1,
            _ => return None,
        }
    } else {
        // SAFETY: the value is copied out at once; user space only inserts
        // and removes whole entries, never writes one in place.
        unsafe { IFACE_SLOTS.get(&ifindex) }.copied()?
    };
    let stats = IFACE_STATS.get_ptr_mut(slot)?;
    // SAFETY: a per-CPU array slot: valid for the program's run and
    // written by no one else (XDP is not preempted on its CPU).
    Some((slot, unsafe { &mut *stats }))
}

/// The sampled per-source and per-port path, for the frames the sampler
/// picks (see [`observe`]). Shared by dropscope's own XDP program and
/// observe mode's entry program, which differ only in how they read the
/// frame; each then counts the frame's shape itself.
///
/// It runs before the counting parse and keeps nothing alive past its
/// end, so the verifier checks it and the counting one after the other.
/// Older verifiers (6.1, 5.10) explore every combination of live states:
/// with one parse alive through the other, the paths multiplied past the
/// 1M-instruction limit.
#[inline(always)]
pub(crate) fn sampled_path<F: Bytes>(
    frame: &F,
    ifindex: impl Fn() -> u32,
    slot: u32,
    stats: &mut IfaceCounters,
    len: u64,
) {
    if let Some(weight) = stats.sampler.take() {
        // Its own parse: cheaper, 1 in K packets, than keeping every field
        // of a full parse alive through the per-frame count.
        let shape = parse(frame);
        count_udp_source_port(slot, &shape, weight);
        let epoch_packets = per_source(frame, ifindex(), len, &shape, weight);
        stats.sampler.next(
            epoch_packets >= xdp_config!(exact_packets),
            xdp_config!(flood_sample_every),
            // SAFETY: a helper with no arguments.
            || unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() },
        );
    }
}

/// UDP source-port buckets (reflection), `weight` packets at a time.
#[inline(always)]
fn count_udp_source_port(slot: u32, shape: &Shape, weight: u32) {
    if let Some(port) = shape.udp_sport.get() {
        // 0 means "no bucket of its own"; otherwise bucket + 1.
        let v = PORT_BUCKETS.get(port as u32).copied().unwrap_or(0);
        let bucket = if v == 0 || v > UDP_PORT_BUCKETS {
            UDP_OTHER_BUCKET
        } else {
            v - 1
        };
        if let Some(c) = UDP_SRC_PORTS.get_ptr_mut(slot) {
            // SAFETY: a per-CPU array value, valid and ours for this run.
            let c = unsafe { &mut *c };
            if let Some(n) = c.packets.get_mut(bucket as usize) {
                *n += weight as u64;
            }
        }
    }
}

/// The blocklist's prefilter: false when no prefix covers the source's
/// first 16 bits (one inlined array read instead of a trie walk).
#[inline(always)]
fn maybe_blocked(frame: &Frame, family: u8, off: usize) -> bool {
    let Some(top) = frame.be16(off) else {
        return false;
    };
    let base = if family == 4 {
        0
    } else {
        BLOCK_FILTER_WORDS / 2
    };
    match BLOCK_FILTER.get(base + (top as u32 >> 6)) {
        Some(w) => *w & (1u64 << (top & 63)) != 0,
        None => false,
    }
}

/// Whether `addr` falls in an unexpired blocklist prefix; counts the hit
/// on the entry.
#[inline(always)]
fn blocked(addr: &Addr, len: u64) -> bool {
    let e = if addr.family == 4 {
        block_entry(&BLOCK_V4, &Key::new(32, addr.words[0].to_ne_bytes()))
    } else {
        block_entry(&BLOCK_V6, &Key::new(128, addr.bytes()))
    };
    if e.is_null() {
        return false;
    }
    // SAFETY: a non-null lookup result points at the entry's value, valid
    // for this run; user space replaces entries whole, never in place.
    let expires_ns = unsafe { (*e).expires_ns };
    // SAFETY: a helper with no arguments.
    if expires_ns != 0 && unsafe { bpf_ktime_get_ns() } > expires_ns {
        return false;
    }
    // Per-entry hits are plain adds (two CPUs may race and lose one);
    // the exact blocked count is the per-CPU interface counter.
    // SAFETY: as above; written through the raw pointer the kernel gave,
    // never through a shared reference.
    unsafe {
        (*e).packets += 1;
        (*e).bytes += len;
    }
    true
}

/// The blocklist value for `key`, or null: a raw pointer, because its hit
/// counters are written in place and `LpmTrie::get` hands out `&V`.
#[inline(always)]
fn block_entry<K>(map: &LpmTrie<K, BlockEntry>, key: &Key<K>) -> *mut BlockEntry {
    // SAFETY: LpmTrie is #[repr(transparent)] over its map definition, so
    // its address is the map pointer the helper takes (as aya's own `get`
    // passes it); the key lives on this stack for the call.
    unsafe {
        bpf_map_lookup_elem(
            map as *const LpmTrie<K, BlockEntry> as *mut c_void,
            key as *const Key<K> as *const c_void,
        ) as *mut BlockEntry
    }
}

/// Sends 1 in `every` packets (per CPU) to the sample ring, cut to the
/// configured snap length; `copy(dst, caplen)` fills the record's data.
#[inline(always)]
pub(crate) fn sample(
    ifindex: u32,
    len: u32,
    every: u32,
    copy: impl FnOnce(*mut c_void, u32) -> bool,
) {
    let Some(c) = SAMPLE_COUNT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU array value, valid and ours for this run.
    let n = unsafe { *c }.wrapping_add(1);
    // SAFETY: as above.
    unsafe { *c = if n >= every { 0 } else { n } };
    if n < every {
        return;
    }
    let snap = xdp_config!(snaplen);
    // black_box: LLVM would fold these checks away (it knows the minimum
    // is at least 1 after a `want == 0` test), and the verifier then
    // rejects a possibly zero-sized read.
    let want = core::hint::black_box(len.min(snap));
    if want == 0 || want > SAMPLE_SNAP_MAX as u32 {
        return;
    }
    // The same value, in a form whose range (1..=MAX) even verifiers that
    // lose bounds through `want - 1 < MAX` comparisons (6.1) can see.
    let caplen = ((want - 1) & (SAMPLE_SNAP_MAX as u32 - 1)) + 1;
    let Some(mut entry) = SAMPLES.reserve::<PacketSample>(0) else {
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: p is the reserved ring record, ours until submit or discard.
    let ok = unsafe {
        (*p).ts_ns = bpf_ktime_get_ns();
        (*p).ifindex = ifindex;
        (*p).len = len;
        (*p).caplen = caplen;
        (*p)._pad = 0;
        copy((*p).data.as_mut_ptr() as *mut c_void, caplen)
    };
    if ok {
        entry.submit(0);
    } else {
        entry.discard(0);
    }
}

/// Per-source and per-port accounting whose cost stays flat whatever the
/// source mix: a per-CPU count-min sketch and HyperLogLog registers for
/// everyone, exact per-source counters while the epoch's budget of new
/// sources lasts, then only for sources the sketch shows are heavy. The
/// packet counts for `weight` packets (see [`Sampler`]); returns the
/// epoch's packets on this CPU so far.
#[inline(always)]
fn per_source<F: Bytes>(frame: &F, ifindex: u32, len: u64, shape: &Shape, weight: u32) -> u32 {
    let epoch = EPOCH.get(0).copied().unwrap_or(0);
    let parity = epoch & 1;
    let Some(st) = EPOCH_STATE.get_ptr_mut(parity) else {
        return 0;
    };
    // SAFETY: a per-CPU array slot, valid and ours for this run.
    let st = unsafe { &mut *st };
    let w = weight;
    st.samples = st.samples.wrapping_add(1);
    st.packets = st.packets.wrapping_add(w);
    st.bytes += len * w as u64;
    if crossed(st.packets, w, xdp_config!(trigger_packets)) {
        emit(
            trigger_kind::PACKETS,
            ifindex,
            epoch,
            0,
            st.packets as u64,
            None,
        );
    }
    if let Some(flags) = shape.tcp_flags.get()
        && flags & 0x12 == 0x02
    {
        st.syn = st.syn.wrapping_add(w);
        if crossed(st.syn, w, xdp_config!(trigger_syn)) {
            emit(trigger_kind::SYN, ifindex, epoch, 0, st.syn as u64, None);
        }
    }

    if let Some((proto, port)) = shape.dport.get() {
        let ph = fmix(((proto as u32) << 16) | port as u32);
        let (reg, rank) = hll_slot(ph);
        if reg < st.hll_dport.len() && st.hll_dport[reg] < rank {
            st.hll_dport[reg] = rank;
        }
        let est = sketch_count(&mut st.port_sketch, ph, w);
        if crossed(est, w, xdp_config!(trigger_port)) {
            emit(
                trigger_kind::PORT,
                ifindex,
                epoch,
                ((proto as u32) << 16) | port as u32,
                est as u64,
                None,
            );
        }
        // Promote only what stands above the sketch's noise (its average
        // counter): under a random-port flood nothing does. A heavy port is
        // counted in steps of 64 so its table costs one hash per 64 packets.
        let steps = (est / PORT_SAMPLE).wrapping_sub(est.wrapping_sub(w) / PORT_SAMPLE);
        if above_noise(est, st.packets, xdp_config!(promote_port_packets)) && steps > 0 {
            let key = PortKey {
                ifindex,
                proto: proto as u16,
                port,
            };
            match HEAVY_PORTS.get_ptr_mut(&key) {
                // SAFETY: this CPU's value of an LRU per-CPU hash entry.
                Some(v) => unsafe { *v += (steps * PORT_SAMPLE) as u64 },
                None => {
                    if st.new_ports < xdp_config!(port_budget) {
                        st.new_ports += 1;
                        let _ = HEAVY_PORTS.insert(&key, &(est as u64), BPF_NOEXIST as u64);
                    }
                }
            }
        }
    }

    let packets = st.packets;
    // Read here, after every parse branch has joined: carried from the
    // parse, its 16 bytes were live (and spilled) through all of them.
    let Some(addr) = shape.source(frame).get() else {
        return packets;
    };
    let h = hash_addr(&addr.words, addr.family);
    let (reg, rank) = hll_slot(h);
    if reg < st.hll_src.len() && st.hll_src[reg] < rank {
        st.hll_src[reg] = rank;
    }
    let Some(sk) = SRC_SKETCH.get_ptr_mut(parity) else {
        return packets;
    };
    // SAFETY: a per-CPU array slot, valid and ours for this run.
    let sk = unsafe { &mut *sk };
    let est = sketch_count(&mut sk.pkts, h, w);
    if crossed(est, w, xdp_config!(trigger_source)) {
        emit(
            trigger_kind::SOURCE,
            ifindex,
            epoch,
            0,
            est as u64,
            Some(&addr),
        );
    }

    // Past the budget, only sources well above the sketch's noise (its
    // average counter) are hashed: random spoofed sources never are.
    let flood_mode = st.new_sources >= xdp_config!(source_budget);
    if flood_mode && !above_noise(est, st.packets, xdp_config!(promote_packets)) {
        return packets;
    }
    let key = SourceKey::new(&addr, ifindex);
    let add = SourceStats {
        packets: w as u64,
        bytes: len * w as u64,
    };
    let Some(cache) = SRC_CACHE.get_ptr_mut(0) else {
        return packets;
    };
    // SAFETY: a per-CPU array slot, valid and ours for this run.
    let cache = unsafe { &mut *cache };
    let words = SrcCacheSlot::words(&key);
    // The top bits: the sketch's rows index with the low ones.
    let Some(slot) = cache
        .slots
        .get_mut((h >> 26) as usize & (SRC_CACHE_SLOTS - 1))
    else {
        return packets;
    };
    if slot.key[0] == words[0] && slot.key[1] == words[1] && slot.key[2] == words[2] {
        slot.pending.packets += add.packets;
        slot.pending.bytes += add.bytes;
        if slot.pending.packets >= SRC_CACHE_FLUSH {
            let pending = slot.pending;
            slot.pending = SourceStats::default();
            add_source(&key, &pending, None);
        }
        return packets;
    }
    // Promoted from the sketch past the budget: start from its estimate.
    let first = if flood_mode {
        SourceStats {
            packets: est as u64,
            bytes: est as u64 * len,
        }
    } else {
        add
    };
    if add_source(&key, &add, Some(&first)) {
        st.new_sources = st.new_sources.wrapping_add(1);
    }
    // Only a source heavy this epoch takes the slot (random spoofed ones
    // never are), flushing what the slot's last source had pending.
    if above_noise(est, st.packets, SRC_CACHE_ADMIT) {
        if slot.pending.packets != 0
            && let Some(old) = slot.source()
        {
            add_source(&old, &slot.pending, None);
        }
        slot.key = words;
        slot.pending = SourceStats::default();
    }
    packets
}

/// A cached source is this heavy in the epoch's sketch (and above the
/// sketch's noise) first.
const SRC_CACHE_ADMIT: u32 = 16;

/// Whether a sketch estimate `est` is at least `floor` and stands that far
/// above the sketch's noise (twice its average counter after `packets`
/// this epoch): the test for promoting a port or source and for caching a
/// source. The first comparison holds on its own when the sum wraps.
#[inline(always)]
fn above_noise(est: u32, packets: u32, floor: u32) -> bool {
    est >= floor && est >= 2 * (packets >> 10) + floor
}

/// Adds `add` to `key`'s row of the source table. A key not in the table
/// is inserted with `first` (or `add` when None); returns whether it was.
#[inline(always)]
fn add_source(key: &SourceKey, add: &SourceStats, first: Option<&SourceStats>) -> bool {
    // Adds to the row if there is one.
    let bump = || match SOURCES.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU hash entry.
        Some(v) => unsafe {
            (*v).packets += add.packets;
            (*v).bytes += add.bytes;
            true
        },
        None => false,
    };
    if bump() {
        return false;
    }
    if SOURCES
        .insert(key, first.unwrap_or(add), BPF_NOEXIST as u64)
        .is_ok()
    {
        return true;
    }
    // Inserted meanwhile (another program on this CPU): add to it.
    bump();
    false
}

/// Whether a count that just grew by `w` to `now` crossed `threshold`
/// (0: no threshold).
#[inline(always)]
fn crossed(now: u32, w: u32, threshold: u32) -> bool {
    threshold != 0 && now >= threshold && now.wrapping_sub(w) < threshold
}

/// Adds `w` for hash `h` to a count-min sketch of `D` rows and returns the
/// estimate: the smallest of its counters.
#[inline(always)]
fn sketch_count<const D: usize>(rows: &mut [[u32; SKETCH_WIDTH]; D], h: u32, w: u32) -> u32 {
    let mut est = u32::MAX;
    let mut row = 0;
    while row < D {
        let i = sketch_index(h, row);
        if i < SKETCH_WIDTH {
            let c = rows[row][i].wrapping_add(w);
            rows[row][i] = c;
            est = est.min(c);
        }
        row += 1;
    }
    est
}

#[inline(always)]
fn emit(kind: u32, ifindex: u32, epoch: u32, port: u32, value: u64, src: Option<&Addr>) {
    // Off the per-packet path's straight line: a crossing is once an epoch.
    core::hint::cold_path();
    let (family, addr) = src.map_or((0, [0; 16]), |a| (a.family, a.bytes()));
    let t = Trigger {
        // SAFETY: a helper with no arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind,
        ifindex,
        epoch,
        port,
        value,
        addr,
        family,
        _pad: [0; 7],
    };
    let _ = TRIGGERS.output::<Trigger>(&t, 0);
}
