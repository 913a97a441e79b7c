//! Drops counted by the kfree_skb programs: per reason, per (reason,
//! interface, netns), per kernel location, the event stream, the load-time
//! config and the programs' health counters (maps: `maps::{REASON_COUNTS,
//! DROPS_BY_REASON, DROP_SLOTS, DROPS_BY_IFACE, DROP_LOCATIONS,
//! DROP_EVENTS, EVENT_SWITCH, KFREE_HEALTH}`).

/// Upper bound of distinct reasons tracked (the kernel has about 120).
pub const MAX_REASONS: u32 = 1024;
/// Upper bound of (reason, interface, netns) rows.
pub const MAX_DROP_ROWS: u32 = 8192;
/// Upper bound of (reason, location) rows.
pub const MAX_LOCATIONS: u32 = 4096;
/// Drop event ring size in bytes (a power of two; 32 bytes an event).
pub const DROP_EVENT_RING_BYTES: u32 = 1 << 22;

/// Rows of each CPU's direct-mapped table in front of `DROPS_BY_IFACE`
/// (a power of two).
pub const DROP_SLOT_COUNT: usize = 64;

/// The slot of `key` in a CPU's [`DropSlots`]: a multiplicative hash,
/// the same on both sides (user space reads slots whole, so it only needs
/// this to explain a layout).
#[inline(always)]
pub fn drop_slot(key: &DropKey) -> usize {
    let h = (key.reason ^ key.ifindex.rotate_left(11) ^ key.netns.rotate_left(22))
        .wrapping_mul(0x9e37_79b1);
    (h >> 26) as usize & (DROP_SLOT_COUNT - 1)
}

/// One (reason, interface, netns) row of a CPU's slot table; `count` 0
/// marks a free slot. A claimed slot keeps its key for good (bounded:
/// DROP_SLOT_COUNT per CPU); a key whose slot is taken goes to the hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropSlot {
    pub key: DropKey,
    pub count: u64,
}

/// What each drop event touches on its CPU, in one value: the event
/// count and the attribution sampler at its head (one cache line), then
/// the slot table. The value of the one-entry per-CPU array `DROP_SLOTS`:
/// the program finds all of it with one inlined array lookup (a drop
/// touches two lines of it, not three values' lines), and user space
/// reads every CPU's with one call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DropSlots {
    /// Drop events counted on this CPU (`kfree_health::EVENTS`, which
    /// user space fills from here).
    pub events: u64,
    /// The attribution sampler and budgets of this CPU.
    pub attr: crate::AttrState,
    pub slots: [DropSlot; DROP_SLOT_COUNT],
}

impl Default for DropSlots {
    fn default() -> Self {
        Self {
            events: 0,
            attr: crate::AttrState::default(),
            slots: [DropSlot::default(); DROP_SLOT_COUNT],
        }
    }
}

/// Key of the per-(reason, interface) drop map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// Raw `enum skb_drop_reason` value, subsystem bits included.
    pub reason: u32,
    /// Ingress ifindex (`skb_iif`), else the device's ifindex, else 0.
    pub ifindex: u32,
    /// Inode number of the device's (or socket's) network namespace, 0 if unknown.
    pub netns: u32,
    pub _pad: u32,
}

/// One drop, as streamed for loss-pattern analysis (burst vs random).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropEvent {
    /// bpf_ktime_get_ns().
    pub ts_ns: u64,
    /// Kernel address that freed the skb.
    pub location: u64,
    pub reason: u32,
    pub ifindex: u32,
    pub netns: u32,
    pub _pad: u32,
}

/// Key of the per-location map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocationKey {
    pub location: u64,
    pub reason: u32,
    /// Where the packet came in, as in [`DropKey`]: on kernels without
    /// drop reasons (before 5.17) the location is all there is, and it is
    /// counted per interface.
    pub ifindex: u32,
    pub netns: u32,
    pub _pad: u32,
}

/// Offsets and constants the kfree_skb programs need, all read from the
/// running kernel (BTF, tracefs) by user space: nothing is hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KfreeConfig {
    /// `enum skb_drop_reason` values that are not drops.
    pub reason_not_dropped_yet: u32,
    pub reason_consumed: u32,
    /// Drops with this reason are also counted per kernel location.
    pub reason_not_specified: u32,
    /// Bit 0: the sk_buff offsets below are valid.
    pub flags: u32,
    /// Only count drops in this network namespace (inode); 0 counts every namespace.
    pub netns_filter: u32,
    pub skb_dev: u32,
    pub skb_iif: u32,
    pub skb_sk: u32,
    pub dev_ifindex: u32,
    /// Offset of `net_device.nd_net.net`.
    pub dev_net: u32,
    /// Offset of `sock.__sk_common.skc_net.net`.
    pub sk_net: u32,
    /// Offset of `net.ns.inum`.
    pub net_inum: u32,
    /// Classic tracepoint record layout (from tracefs `format`).
    pub tp_skbaddr: u32,
    pub tp_location: u32,
    pub tp_reason: u32,
    /// 0: the record has no reason (before 5.17); every event is a drop,
    /// counted as `reason_not_specified`, by location.
    pub tp_reason_size: u32,
    /// sk_buff `head` (pointer) and the u16 header offsets from it, and
    /// `protocol` (big-endian ethertype): where the dropped packet's
    /// addresses and ports are.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_protocol: u32,
    /// Attribution: per CPU and epoch, drops past this many are attributed
    /// 1 in about `attr_every` (a power of two, weighted by the gap; 0 or
    /// 1: never sample).
    pub attr_exact: u32,
    pub attr_every: u32,
    /// New (reason, source) and (reason, port) rows per CPU and epoch.
    pub attr_source_budget: u32,
    pub attr_port_budget: u32,
    /// Non-zero: rows are found in the per-CPU slot table first (0 only
    /// where a test simulates a full `DROPS_BY_IFACE`).
    pub drop_slots: u32,
}

pub const KFREE_FLAG_SKB_OFFSETS: u32 = 1;
/// The packet-header offsets in [`KfreeConfig`] are valid.
pub const KFREE_FLAG_PKT_OFFSETS: u32 = 2;

/// Slots of the `KFREE_HEALTH` array.
pub mod kfree_health {
    /// Drop events counted (in [`crate::DropSlots::events`]; this slot of
    /// the array stays zero and user space fills it from there).
    pub const EVENTS: u32 = 0;
    /// Events whose row could not be inserted because a map was full.
    pub const MAP_FULL: u32 = 1;
    /// Kernel reads that failed.
    pub const READ_ERRORS: u32 = 2;
    /// Events dropped by the namespace filter.
    pub const OTHER_NETNS: u32 = 3;
    /// Drop events the event ring had no room for.
    pub const EVENTS_LOST: u32 = 4;
    /// Drops whose source or port had no row (budget spent or table full).
    pub const UNATTRIBUTED: u32 = 5;
    /// Drops counted in a hash table (the per-reason hash, the (reason,
    /// interface) hash behind the slot table, the location table): user
    /// space re-reads those only when this moved.
    pub const HASHED: u32 = 6;
    pub const COUNT: u32 = 7;
}

/// The names of the maps this concept owns (the statics' names in the
/// eBPF object); `crate::maps` and `crate::flood_maps` index them all.
pub(crate) mod map_names {
    /// Per-CPU array: reason (below MAX_REASONS) -> drops that found no
    /// (reason, interface) row (a full table).
    pub const REASON_COUNTS: &str = "REASON_COUNTS";
    /// Per-CPU hash: the same for subsystem and XDP reasons (high bits set).
    pub const DROPS_BY_REASON: &str = "DROPS_BY_REASON";
    /// Per-CPU array[1] of [`crate::DropSlots`]: the rows found first.
    pub const DROP_SLOTS: &str = "DROP_SLOTS";
    /// Per-CPU hash: (reason, ifindex, netns) -> drops, for the keys whose
    /// slot another key holds.
    pub const DROPS_BY_IFACE: &str = "DROPS_BY_IFACE";
    /// Ring buffer of [`crate::DropEvent`]s, written only while switched on.
    pub const DROP_EVENTS: &str = "DROP_EVENTS";
    /// Array[1]: non-zero switches the drop event stream on.
    pub const EVENT_SWITCH: &str = "EVENT_SWITCH";
    /// Per-CPU hash: (reason, kernel location) -> drops, for NOT_SPECIFIED.
    pub const DROP_LOCATIONS: &str = "DROP_LOCATIONS";
    /// Per-CPU array: kfree_skb program health counters (see [`crate::KfreeHealth`]).
    pub const KFREE_HEALTH: &str = "KFREE_HEALTH";
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, and valid for any bit pattern.
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for DropSlots {}
    unsafe impl aya::Pod for DropEvent {}
    unsafe impl aya::Pod for LocationKey {}
    unsafe impl aya::Pod for KfreeConfig {}
}
