//! What the host tells us, read and parsed: kernel BTF, tracefs formats,
//! kallsyms, drop-reason names, interfaces and namespaces, NIC and softnet
//! counters, sockets, sysctls and firewall rules.

pub(crate) mod btf;
pub(crate) mod host;
pub(crate) mod iface;
pub(crate) mod kallsyms;
pub(crate) mod nic;
pub(crate) mod reasons;
pub(crate) mod tracefs;
pub(crate) mod xdp_link;
