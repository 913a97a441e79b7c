//! Test-only programs, built into their own object (`drop-ebpf-test`) so
//! none of them ships in the production one that dropscope loads:
//!
//! * `dropscope_gen`: the test traffic generator, run only through
//!   BPF_PROG_TEST_RUN in live-frames mode by the tests and benchmarks
//!   (never attached): each run rewrites the template frame's IPv4 source
//!   (and TTL) and transmits it.
//! * `dropscope_pass`: the benchmarks' floor, an XDP program that only passes.
//! * `dropscope_touch`: the same after reading the frame's Ethernet type:
//!   what any program that looks at the packet pays for its first cache line.
//! * `dropscope_kfree_empty`: the kfree_skb benchmark's floor, a tp_btf
//!   program that returns at once.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_redirect},
    macros::{btf_tracepoint, xdp},
    programs::{BtfTracePointContext, XdpContext},
};
use drop_common::GenConfig;

#[unsafe(no_mangle)]
static GEN_CONFIG: GenConfig = GenConfig {
    sources: 0,
    base: 0,
    spoof_ttl: 0,
    ifindex: 0,
    dports: 0,
};

#[xdp]
pub fn dropscope_gen(ctx: XdpContext) -> u32 {
    // SAFETY: a plain aligned read of a static; volatile because user
    // space patches .rodata at load time.
    let cfg = unsafe { core::ptr::read_volatile(&raw const GEN_CONFIG) };
    let start = ctx.data();
    if start + 34 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // Only untagged IPv4 frames are rewritten; others go out as they are.
    let eth = start as *const u8;
    // SAFETY: start + 34 <= data_end was checked above.
    if unsafe { *eth.add(12) != 0x08 || *eth.add(13) != 0x00 } {
        return transmit(&cfg);
    }
    let ip = (start + 14) as *mut u8;
    // SAFETY: every byte written lies in ip[0..20], inside the 34 bytes
    // checked above; the frame is ours to rewrite in XDP.
    unsafe {
        if cfg.sources > 1 {
            let a = cfg.base.wrapping_add(bpf_get_prandom_u32() % cfg.sources);
            let b = a.to_be_bytes();
            let old = [
                ((*ip.add(12) as u16) << 8) | *ip.add(13) as u16,
                ((*ip.add(14) as u16) << 8) | *ip.add(15) as u16,
            ];
            *ip.add(12) = b[0];
            *ip.add(13) = b[1];
            *ip.add(14) = b[2];
            *ip.add(15) = b[3];
            // TCP's checksum covers the source address (pseudo-header):
            // update it (RFC 1624) so a valid template stays valid. Only
            // an unfragmented 20-byte header; an invalid template stays
            // invalid, as some tests want.
            if *ip.add(9) == 6
                && *ip.add(0) == 0x45
                && (*ip.add(6) & 0x3f) == 0
                && *ip.add(7) == 0
                && start + 14 + 20 + 18 <= ctx.data_end()
            {
                let tcp = ip.add(20);
                let hc = ((*tcp.add(16) as u16) << 8) | *tcp.add(17) as u16;
                let new = [
                    ((b[0] as u16) << 8) | b[1] as u16,
                    ((b[2] as u16) << 8) | b[3] as u16,
                ];
                let mut sum = (!hc) as u32;
                sum += (!old[0]) as u32 + new[0] as u32;
                sum += (!old[1]) as u32 + new[1] as u32;
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                let c = !(sum as u16);
                *tcp.add(16) = (c >> 8) as u8;
                *tcp.add(17) = c as u8;
            }
        }
        // A UDP destination port at random (its checksum is 0: none to fix).
        if cfg.dports != 0
            && *ip.add(9) == 17
            && *ip.add(0) == 0x45
            && start + 14 + 20 + 8 <= ctx.data_end()
        {
            let p = (1024 + bpf_get_prandom_u32() % cfg.dports) as u16;
            *ip.add(22) = (p >> 8) as u8;
            *ip.add(23) = p as u8;
        }
        if cfg.spoof_ttl != 0 {
            *ip.add(8) = 16 + (bpf_get_prandom_u32() % 224) as u8;
        }
        // Header checksum over the 20-byte header, checksum field zeroed.
        *ip.add(10) = 0;
        *ip.add(11) = 0;
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < 20 {
            sum += ((*ip.add(i) as u32) << 8) | *ip.add(i + 1) as u32;
            i += 2;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let c = !(sum as u16);
        *ip.add(10) = (c >> 8) as u8;
        *ip.add(11) = c as u8;
    }
    transmit(&cfg)
}

#[inline(always)]
fn transmit(cfg: &GenConfig) -> u32 {
    if cfg.ifindex != 0 {
        // SAFETY: a helper taking plain integers.
        unsafe { bpf_redirect(cfg.ifindex, 0) as u32 }
    } else {
        xdp_action::XDP_TX
    }
}

/// The floor for benchmarks: an XDP program that only passes.
#[xdp]
pub fn dropscope_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Passes after reading the frame's Ethernet type: the cost of bringing the
/// frame's first cache line in, which the empty program never pays (the
/// stack pays it later, after XDP).
#[xdp]
pub fn dropscope_touch(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 14 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: start + 14 <= data_end was checked above. Volatile: the
    // value is unused, the read is the point.
    unsafe { core::ptr::read_volatile((start + 12) as *const u16) };
    xdp_action::XDP_PASS
}

/// The floor for the kfree_skb benchmark: what attaching to tp_btf costs
/// per drop before a program does anything.
#[btf_tracepoint(function = "kfree_skb")]
pub fn dropscope_kfree_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
