//! dropscope: every packet the kernel drops, and why.
//!
//! Data flow, one module per stage:
//! kernel programs (drop-ebpf) -> [`loader`] (load, attach) -> maps ->
//! [`reader`] (snapshot) + [`nic`] (counters outside kfree_skb) ->
//! [`table`] (deltas, names, categories) -> [`detect`] (attacks) ->
//! exporters: [`output`] (table or JSON lines), [`top`] (full screen),
//! [`prometheus`], [`events`] (JSON stream) -> actions: [`hooks`],
//! [`blocklist`] (`--enforce`), [`pcap`] (samples). [`watch`] runs the loop.

pub mod batch;
pub mod blocklist;
pub mod btf;
pub mod config;
pub mod detect;
pub mod doctor;
pub mod events;
pub mod hooks;
pub mod host;
pub mod iface;
pub mod kallsyms;
pub mod loader;
pub mod nic;
pub mod output;
pub mod patterns;
pub mod pcap;
pub mod prometheus;
pub mod reader;
pub mod reasons;
pub mod table;
pub mod top;
pub mod tracefs;
pub mod watch;

#[cfg(test)]
mod fuzz;
