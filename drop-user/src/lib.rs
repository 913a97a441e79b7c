//! dropscope: every packet the kernel drops, and why.
//!
//! Data flow, one module per stage:
//! kernel programs (drop-ebpf) -> [`loader`] (load, attach) -> maps ->
//! [`reader`] (snapshot) + [`nic`] (counters outside kfree_skb) ->
//! [`table`] (deltas, names, categories) -> [`output`] (table or JSON lines).

pub mod batch;
pub mod btf;
pub mod detect;
pub mod doctor;
pub mod host;
pub mod iface;
pub mod kallsyms;
pub mod loader;
pub mod nic;
pub mod output;
pub mod patterns;
pub mod reader;
pub mod reasons;
pub mod table;
pub mod tracefs;
pub mod watch;
