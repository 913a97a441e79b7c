//! Observe mode: dropscope's fentry/fexit programs on an XDP program that
//! was already attached (xdp-filter, a libxdp dispatcher, ...). The entry
//! program runs the same counting as dropscope's own XDP program; each exit
//! program counts one observed program's verdicts and turns XDP_DROP and
//! XDP_ABORTED into drop rows (maps: `maps::{XDP_VERDICTS, OBSERVE_STASH}`).

/// Observed programs at once: exit programs `dropscope_xdp_exit_0` ..
/// `_15` in the object, one per observed program (a libxdp dispatcher's
/// components each take one).
pub const MAX_OBSERVED: u32 = 16;

/// XDP actions counted, in the kernel's numbering (`enum xdp_action`);
/// anything larger counts as ABORTED, as the kernel treats it.
pub const XDP_ACTIONS: usize = 5;
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Drop-table reasons for packets an observed XDP program dropped: far
/// above any `enum skb_drop_reason` value (subsystem ids sit in bits
/// 16..), slot in bits 1..8, bit 0 set for ABORTED.
pub const XDP_REASON_BASE: u32 = 0x7f00_0000;

/// The drop-table reason of `action` (DROP or ABORTED) by observed `slot`.
#[inline(always)]
pub const fn xdp_drop_reason(slot: u32, aborted: bool) -> u32 {
    XDP_REASON_BASE | (slot << 1) | aborted as u32
}

/// (slot, aborted) of an XDP drop reason, or None for a kernel reason.
pub const fn xdp_reason_parts(reason: u32) -> Option<(u32, bool)> {
    if reason & 0xff00_0000 != XDP_REASON_BASE || (reason & 0x00ff_ffff) >> 1 >= MAX_OBSERVED {
        return None;
    }
    Some(((reason & 0x00ff_ffff) >> 1, reason & 1 == 1))
}

/// One observed program's verdicts (per CPU; index = observed slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VerdictStats {
    pub packets: [u64; XDP_ACTIONS],
    pub bytes: [u64; XDP_ACTIONS],
}

/// What the entry program learnt about the packet in flight on this CPU,
/// for the exit programs' attribution (XDP runs to completion on one CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveStash {
    /// xdp_buff address the entry saw: an exit for another packet ignores it.
    pub buff: u64,
    /// The frame's first byte as the entry saw it: an exit that counts a
    /// drop reads the source from it (most packets pass: no read).
    pub data: u64,
    /// The rx queue whose (ifindex, netns) are cached below, and the epoch
    /// they were read in: a queue's device is read again once an epoch,
    /// not on every packet (each read is a probe-read helper call).
    pub rxq: u64,
    pub rxq_epoch: u32,
    pub rxq_ifindex: u32,
    pub rxq_netns: u32,
    pub ifindex: u32,
    pub len: u32,
    pub netns: u32,
    /// Offset of the source address in the frame (family below).
    pub source_off: u16,
    /// 4, 6, or 0: no source.
    pub family: u8,
    /// L4 protocol of `dport`, 0: none.
    pub proto: u8,
    pub dport: u16,
    /// Set by an exit program that dropped the packet: in generic mode
    /// (and veth's native mode) the kernel frees that skb next through
    /// kfree_skb, and the kfree program skips it, so it counts once.
    pub pending_free: u8,
    pub _pad: [u8; 5],
}

/// Kernel struct offsets the observe programs read, from BTF. Set by
/// user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveConfig {
    /// `xdp_buff.data`, `.data_end`, `.rxq`, `xdp_rxq_info.dev`,
    /// `net_device.ifindex`, `net_device.nd_net.net`, `net.ns.inum`.
    pub buff_data: u32,
    pub buff_data_end: u32,
    pub buff_rxq: u32,
    /// 1 when data, data_end and rxq sit at 0, 8 and 32 (every kernel so
    /// far): the entry reads them in one probe read.
    pub buff_block: u32,
    pub rxq_dev: u32,
    pub dev_ifindex: u32,
    pub dev_net: u32,
    pub net_inum: u32,
    /// The kfree_skb reason generic XDP drops are freed with
    /// (`SKB_DROP_REASON_XDP`, else NOT_SPECIFIED on older kernels).
    pub reason_xdp: u32,
}

pub(crate) mod map_names {
    /// Per-CPU array indexed by observed slot: [`crate::VerdictStats`].
    pub const XDP_VERDICTS: &str = "XDP_VERDICTS";
    /// Per-CPU array[1]: [`crate::ObserveStash`].
    pub const OBSERVE_STASH: &str = "OBSERVE_STASH";
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for VerdictStats {}
    unsafe impl aya::Pod for ObserveConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_reasons_round_trip_and_kernel_reasons_are_not_xdp() {
        for slot in 0..MAX_OBSERVED {
            for aborted in [false, true] {
                assert_eq!(
                    xdp_reason_parts(xdp_drop_reason(slot, aborted)),
                    Some((slot, aborted))
                );
            }
        }
        for kernel in [0u32, 2, 77, 120, 0x1_0000, 0x3_0005] {
            assert_eq!(xdp_reason_parts(kernel), None);
        }
    }
}
