//! Where reports go: the terminal (table or JSON lines), the full-screen
//! view, Prometheus, the JSON event stream, and PCAP samples per attack.

pub(crate) mod events;
pub(crate) mod pcap;
pub(crate) mod prometheus;
pub(crate) mod terminal;
pub(crate) mod top;
