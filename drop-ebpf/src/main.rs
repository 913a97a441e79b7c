//! dropscope's kernel side: where every counter is born.
//!
//! * `kfree_skb_btf` / `kfree_skb_tp`: count dropped packets per reason and per
//!   (reason, interface, netns). Struct offsets come from user space (BTF).
//! * `dropscope_xdp`: per-interface packet-shape counters and per-source
//!   packets/bytes. It always returns `XDP_PASS`: observing never changes traffic.
#![no_std]
#![no_main]
// aya-ebpf's map methods take `impl Borrow<K>`: a reference keeps the key
// where it is instead of another copy on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod generator;
mod kfree;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
