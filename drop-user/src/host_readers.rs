//! The readers of the running kernel and host (BTF, reason names,
//! sysctls, interfaces), reachable by the integration tests
//! (tests/tests/host.rs). They run there, on this machine and on every
//! kernel of the matrix, so the library's unit tests never read the live
//! host and pass the same anywhere. Not an API.

use std::path::Path;

use crate::sys::{btf::KernelBtf, host, iface, reasons::ReasonTable};

fn text<T>(r: anyhow::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{e:#}"))
}

/// A member's byte offset in a kernel struct, by name (through anonymous
/// unions and nested structs), from the running kernel's BTF.
pub fn btf_member_offset(strukt: &str, path: &[&str]) -> Result<u32, String> {
    text(KernelBtf::load().and_then(|b| b.member_offset(strukt, path)))
}

/// An enum's (name, value) members; None: the kernel has no such enum.
pub type Members = Option<Vec<(String, u32)>>;

/// An enum's members from the running kernel's BTF.
pub fn btf_enum(name: &str) -> Result<Members, String> {
    text(KernelBtf::load().and_then(|b| b.enum_members(name)))
}

/// A BTF file read through a memory copy (the path for kernels that refuse
/// to mmap sysfs BTF): (skb_iif offset, skb_drop_reason members).
pub fn btf_through_a_copy(path: &str) -> Result<(u32, Members), String> {
    let b = text(KernelBtf::from_copy(Path::new(path)))?;
    Ok((
        text(b.member_offset("sk_buff", &["skb_iif"]))?,
        text(b.enum_members("skb_drop_reason"))?,
    ))
}

/// The drop reasons the running kernel names (short names), and which
/// not-a-drop values its table knows: (not dropped yet, consumed). The
/// enum gained SKB_CONSUMED in 6.2; 6.1 has only SKB_NOT_DROPPED_YET.
pub fn kernel_reasons() -> Result<(Vec<String>, (bool, bool)), String> {
    let b = text(KernelBtf::load())?;
    let t = text(ReasonTable::from_btf(&b))?.ok_or("the kernel has no skb_drop_reason enum")?;
    let known = (t.not_dropped_yet.is_some(), t.consumed.is_some());
    Ok((t.all().into_iter().map(|(_, n)| n).collect(), known))
}

pub fn sysctl(name: &str) -> Option<String> {
    host::sysctl(name)
}

/// Interface names to (name, ifindex), or the one-line error a user sees.
pub fn resolve_ifaces(names: &[&str]) -> Result<Vec<(String, u32)>, String> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    text(iface::resolve(&names))
}

/// The UDP sockets of this namespace, as (local address, port), from
/// /proc/net/udp and udp6.
pub fn udp_sockets() -> Vec<(std::net::IpAddr, u16)> {
    host::udp_sockets()
        .into_iter()
        .map(|s| (s.local, s.port))
        .collect()
}
