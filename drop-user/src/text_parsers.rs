//! Every parser of text from outside the program (tracefs formats, /proc
//! files, kallsyms, the config file, flag values), reachable by the
//! integration tests' mutation fuzzer (tests/tests/text_parsers.rs). Each
//! returns Ok or its one-line error text; none may panic. Not an API.

use crate::{
    act::blocklist::Prefix,
    config::Config,
    export::prometheus,
    sys::{host, iface, kallsyms::Symbols, nic, tracefs},
    units,
};

fn text<E: std::fmt::Display>(r: Result<impl Sized, E>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| format!("{e:#}"))
}

/// A tracepoint's tracefs `format` file; the `reason` field looked up.
pub fn tracefs_format(s: &str) -> Result<(), String> {
    text(tracefs::parse_format(s).map(|f| {
        let _ = f.symbols("reason");
        let _ = f.field("reason");
    }))
}

pub fn proc_net_dev(s: &str) -> Result<(), String> {
    text(nic::parse_proc_net_dev(s))
}

pub fn softnet_stat(s: &str) -> Result<(), String> {
    text(nic::parse_softnet(s))
}

/// /proc/net/udp: unreadable lines are skipped, never an error.
pub fn proc_net_udp(s: &str) -> usize {
    host::parse_proc_udp(s).len()
}

/// /proc/net/route and ipv6_route: the default-route interfaces.
pub fn routes(v4: &str, v6: &str) -> usize {
    iface::parse_route_v4(v4).len() + iface::parse_route_v6(v6).len()
}

pub fn kallsyms(s: &str) -> Result<(), String> {
    text(Symbols::parse(s))
}

/// The `--config` file.
pub fn config(s: &str) -> Result<(), String> {
    text(Config::parse(s))
}

/// `--interval`, `--duration`, `--ttl` and the config's durations.
pub fn duration(s: &str) -> Result<(), String> {
    text(units::parse_duration(s))
}

/// `--prometheus ADDR`.
pub fn listen_address(s: &str) -> Result<(), String> {
    text(prometheus::parse_addr(s))
}

/// `dropscope block PREFIX`.
pub fn prefix(s: &str) -> Result<(), String> {
    text(s.parse::<Prefix>())
}
