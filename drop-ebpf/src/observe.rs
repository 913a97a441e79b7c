//! Observe mode: fentry/fexit on an XDP program dropscope did not attach.
//!
//! `dropscope_xdp_entry` runs before the observed program with its
//! `xdp_buff` and does what dropscope's own XDP program does (shapes,
//! per-source and per-port paths, triggers, PCAP samples), reading the
//! frame with probe reads: a tracing program may not touch packet memory
//! directly. It leaves where the packet's source is, and its port, in a
//! per-CPU stash.
//! Each `dropscope_xdp_exit_N` runs after one observed program (the whole
//! program, or one component of a libxdp dispatcher) and counts its verdict
//! for observed slot N; XDP_DROP and XDP_ABORTED become drop-table rows,
//! attributed from the stash. The observed program's verdict is untouched:
//! these programs cannot change it.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, map},
    maps::PerCpuArray,
    programs::{FEntryContext, FExitContext},
};
use drop_common::{
    DropKey, MAX_OBSERVED, ObserveConfig, ObserveStash, VerdictStats, XDP_ABORTED, XDP_ACTIONS,
    XDP_DROP,
    parse::{Bytes, parse, source_at},
    xdp_drop_reason,
};

use crate::{
    kfree,
    xdp::{EPOCH, iface_stats, sample, sampled_path, xdp_config},
};

/// Filled in by user space before load: offsets from BTF.
#[unsafe(no_mangle)]
static OBSERVE_CONFIG: ObserveConfig = ObserveConfig {
    buff_data: 0,
    buff_data_end: 0,
    buff_rxq: 0,
    buff_block: 0,
    rxq_dev: 0,
    dev_ifindex: 0,
    dev_net: 0,
    net_inum: 0,
    reason_xdp: u32::MAX,
};

#[inline(always)]
pub(crate) fn config() -> ObserveConfig {
    // SAFETY: a plain aligned read of a static; volatile because user
    // space patches .rodata at load time.
    unsafe { core::ptr::read_volatile(&raw const OBSERVE_CONFIG) }
}

#[map]
static XDP_VERDICTS: PerCpuArray<VerdictStats> = PerCpuArray::with_max_entries(MAX_OBSERVED, 0);

#[map]
static OBSERVE_STASH: PerCpuArray<ObserveStash> = PerCpuArray::with_max_entries(1, 0);

/// Frames bigger than this are not read (no XDP frame is: a page).
const MAX_FRAME: u64 = 1 << 16;

/// The frame behind an `xdp_buff`, read with bpf_probe_read_kernel.
struct Probed {
    data: u64,
    len: usize,
}

impl Bytes for Probed {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off + N > self.len {
            return None;
        }
        // SAFETY: a probe read: any address is allowed, faults return Err.
        unsafe { bpf_probe_read_kernel((self.data + off as u64) as *const [u8; N]) }.ok()
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }
}

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: a probe read: any address is allowed, faults return Err.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// `xdp_buff`'s data, data_end and rxq: one probe read of its first 40
/// bytes where BTF says the layout is the usual one (user space checks,
/// `buff_block`), one read each otherwise.
#[inline(always)]
fn buff_fields(cfg: &ObserveConfig, buff: u64) -> Option<(u64, u64, u64)> {
    if buff == 0 {
        return None;
    }
    if cfg.buff_block != 0 {
        // SAFETY: a probe read: any address is allowed, faults return Err.
        let b = unsafe { bpf_probe_read_kernel(buff as *const [u64; 5]) }.ok()?;
        return Some((b[0], b[1], b[4]));
    }
    Some((
        read(buff, cfg.buff_data)?,
        read(buff, cfg.buff_data_end)?,
        read(buff, cfg.buff_rxq)?,
    ))
}

/// The frame, ingress ifindex and netns of an `xdp_buff`. A queue's
/// (ifindex, netns) are cached in the stash for the epoch: three probe
/// reads a packet fewer, and a device that goes away takes its queue with
/// it (at worst an epoch of packets on a queue reused at once by a new
/// device would keep the old name).
#[inline(always)]
fn frame_of(
    cfg: &ObserveConfig,
    buff: u64,
    stash: &mut ObserveStash,
) -> Option<(Probed, u32, u32)> {
    let (data, end, rxq) = buff_fields(cfg, buff)?;
    if end < data || end - data > MAX_FRAME || rxq == 0 {
        return None;
    }
    let epoch = EPOCH.get(0).copied().unwrap_or(0);
    let (ifindex, netns) = if stash.rxq == rxq && stash.rxq_epoch == epoch {
        (stash.rxq_ifindex, stash.rxq_netns)
    } else {
        let dev: u64 = read(rxq, cfg.rxq_dev)?;
        let ifindex: u32 = read(dev, cfg.dev_ifindex)?;
        let net: u64 = read(dev, cfg.dev_net).unwrap_or(0);
        let netns: u32 = read(net, cfg.net_inum).unwrap_or(0);
        stash.rxq = rxq;
        stash.rxq_epoch = epoch;
        stash.rxq_ifindex = ifindex;
        stash.rxq_netns = netns;
        (ifindex, netns)
    };
    let len = (end - data) as usize;
    Some((Probed { data, len }, ifindex, netns))
}

#[fentry]
pub fn dropscope_xdp_entry(ctx: FEntryContext) -> i32 {
    entry(&ctx);
    0
}

#[inline(always)]
fn entry(ctx: &FEntryContext) {
    let buff: u64 = ctx.arg(0);
    let Some(stash) = OBSERVE_STASH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU array slot, valid and ours for this run.
    let stash = unsafe { &mut *stash };
    // A new packet: whatever an exit left for kfree_skb is stale now.
    stash.buff = 0;
    stash.pending_free = 0;
    let cfg = config();
    let Some((frame, ifindex, netns)) = frame_of(&cfg, buff, stash) else {
        return;
    };
    let Some((slot, stats)) = iface_stats(ifindex) else {
        return;
    };
    let len = frame.len as u64;
    let sample_every = xdp_config!(sample_every);
    if sample_every != 0 {
        let data = frame.data;
        sample(ifindex, len as u32, sample_every, |dst, caplen| {
            // SAFETY: a probe read into the reserved record's data array;
            // caplen is within 1..=its size (checked by `sample`).
            unsafe {
                aya_ebpf::helpers::generated::bpf_probe_read_kernel(dst, caplen, data as *const _)
                    == 0
            }
        });
    }
    sampled_path(&frame, || ifindex, slot, stats, len);
    // Unlike dropscope's own program, the exit needs the source and port
    // too: the full shape.
    let shape = parse(&frame);
    stats.count(&shape, len);
    stash.buff = buff;
    stash.data = frame.data;
    stash.ifindex = ifindex;
    stash.netns = netns;
    stash.len = len as u32;
    // Where the source is, not the address: only an exit that counts a
    // drop reads it.
    match shape.source_at.get() {
        Some((family, off)) if off < MAX_FRAME as usize => {
            stash.family = family;
            stash.source_off = off as u16;
        }
        _ => stash.family = 0,
    }
    match shape.dport.get() {
        Some((proto, port)) => {
            stash.proto = proto;
            stash.dport = port;
        }
        None => stash.proto = 0,
    }
}

/// One exit program per observed slot: the slot is the only thing that
/// tells them apart, and a tracing program's target is fixed at load.
macro_rules! exit_programs {
    ($($name:ident = $slot:expr;)*) => {$(
        #[fexit]
        pub fn $name(ctx: FExitContext) -> i32 {
            exit(&ctx, $slot);
            0
        }
    )*};
}

exit_programs! {
    dropscope_xdp_exit_0 = 0;
    dropscope_xdp_exit_1 = 1;
    dropscope_xdp_exit_2 = 2;
    dropscope_xdp_exit_3 = 3;
    dropscope_xdp_exit_4 = 4;
    dropscope_xdp_exit_5 = 5;
    dropscope_xdp_exit_6 = 6;
    dropscope_xdp_exit_7 = 7;
    dropscope_xdp_exit_8 = 8;
    dropscope_xdp_exit_9 = 9;
    dropscope_xdp_exit_10 = 10;
    dropscope_xdp_exit_11 = 11;
    dropscope_xdp_exit_12 = 12;
    dropscope_xdp_exit_13 = 13;
    dropscope_xdp_exit_14 = 14;
    dropscope_xdp_exit_15 = 15;
}

#[inline(always)]
fn exit(ctx: &FExitContext, slot: u32) {
    let buff: u64 = ctx.arg(0);
    // The observed function takes one argument: its return value follows.
    let ret: u64 = ctx.arg(1);
    let action = if ret < XDP_ACTIONS as u64 {
        ret as u32
    } else {
        XDP_ABORTED
    };
    let Some(stash) = OBSERVE_STASH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU array slot, valid and ours for this run.
    let stash = unsafe { &mut *stash };
    let cfg = config();
    let (ifindex, netns, len, known) = if stash.buff == buff && buff != 0 {
        (stash.ifindex, stash.netns, stash.len as u64, true)
    } else {
        // The entry program did not see this packet (attached a moment
        // later): count the verdict, attribute nothing.
        match frame_of(&cfg, buff, stash) {
            Some((f, i, n)) => (i, n, f.len as u64, false),
            None => (0, 0, 0, false),
        }
    };
    if let Some(v) = XDP_VERDICTS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU array value, valid and ours for this run.
        let v = unsafe { &mut *v };
        let a = action as usize;
        if a < XDP_ACTIONS {
            v.packets[a] += 1;
            v.bytes[a] += len;
        }
    }
    if action != XDP_DROP && action != XDP_ABORTED {
        return;
    }
    let reason = xdp_drop_reason(slot, action == XDP_ABORTED);
    // A drop event like kfree_skb's: user space re-reads the drop tables
    // only when this count moved.
    kfree::count_event();
    // Generic mode (and veth's native mode, which runs on an skb) frees
    // the dropped skb next, through kfree_skb: marked so it counts once.
    stash.pending_free = 1;
    stash.ifindex = ifindex;
    let key = DropKey {
        reason,
        ifindex,
        netns,
        _pad: 0,
    };
    if !kfree::bump(&kfree::DROPS_BY_IFACE, &key) {
        kfree::unrowed(ctx, reason);
    }
    if known {
        let frame = Probed {
            data: stash.data,
            len: stash.len as usize,
        };
        let src = if stash.family != 0 {
            source_at(&frame, stash.family, stash.source_off as usize).get()
        } else {
            None
        };
        let port = if stash.proto != 0 {
            Some((stash.proto, stash.dport))
        } else {
            None
        };
        kfree::attribute_parsed(kfree::config(), reason, src, port);
    }
}

/// For kfree_skb: true when this drop is the skb an observed program just
/// dropped on `ifindex` (0: unknown), already counted as an XDP drop; the
/// mark is cleared. Only the next free on this CPU, of the XDP reason (or
/// NOT_SPECIFIED, before that reason existed), before the next packet's
/// entry, can match.
#[inline(always)]
pub(crate) fn counted_by_exit(reason: u32, not_specified: u32, ifindex: u32) -> bool {
    // One field, not the whole config: this runs on every kfree_skb.
    // SAFETY: a plain aligned read of a static's field; volatile because
    // user space patches .rodata at load time.
    let reason_xdp = unsafe { core::ptr::read_volatile(&raw const OBSERVE_CONFIG.reason_xdp) };
    if reason != reason_xdp && reason != not_specified {
        return false;
    }
    let Some(stash) = OBSERVE_STASH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU array slot, valid and ours for this run.
    let stash = unsafe { &mut *stash };
    if stash.pending_free == 0 || (ifindex != 0 && ifindex != stash.ifindex) {
        return false;
    }
    stash.pending_free = 0;
    true
}
