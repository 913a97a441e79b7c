//! dropscope's kernel side: where every counter is born.
//!
//! * `kfree_skb_btf` / `kfree_skb_tp`: count dropped packets per reason and per
//!   (reason, interface, netns). Struct offsets come from user space (BTF).
//! * `dropscope_xdp` (any interface) and `dropscope_xdp_0..3` (the same
//!   program with the interface slot fixed, for the first four watched
//!   interfaces): per-interface packet-shape counters and per-source
//!   packets/bytes. It returns `XDP_PASS` unless `--enforce` finds the
//!   source in the blocklist: observing never changes traffic.
//!
//! The test generator and the benchmarks' empty program are in their own
//! object (src/bin/drop-ebpf-test.rs), never in this one.
#![no_std]
#![no_main]
// aya-ebpf's map methods take `impl Borrow<K>`: a reference keeps the key
// where it is instead of another copy on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod kfree;
mod observe;
mod xdp;

/// The kernel refuses GPL-only helpers (bpf_probe_read_kernel, ...) to
/// programs whose license it does not read as GPL-compatible; the code is
/// MIT (as the workspace says), offered under the GPL for the kernel.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
