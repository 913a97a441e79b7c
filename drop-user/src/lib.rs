//! dropscope: every packet the kernel drops, and why.
//!
//! Data flow, one module per stage:
//! kernel programs (drop-ebpf) -> [`kernel`] (load, attach, maps ->
//! snapshot) -> `report` (deltas, names, categories: one builder for the
//! whole report) -> `analysis` (attacks, loss verdict, hints, doctor) ->
//! `export` (terminal table or JSON lines, full screen, Prometheus, event
//! stream, PCAP) and `act` (blocklist, hooks). `watch` runs the loop; `sys`
//! reads the host (BTF, tracefs, kallsyms, interfaces, NIC counters);
//! `config` and `cli` turn flags and files into validated options.
#![warn(unreachable_pub, unused_crate_dependencies)]

mod act;
mod analysis;
mod cli;
mod config;
mod export;
#[doc(hidden)]
pub mod host_readers;
pub mod kernel;
mod ports;
mod report;
pub mod schema;
mod sys;
mod taxonomy;
#[doc(hidden)]
pub mod text_parsers;
mod units;
mod watch;

pub use cli::main;
