//! Host fuzzing of every text parser that reads the outside world: the
//! tracefs format, /proc files, kallsyms, the config file, durations and
//! addresses. Real inputs (read live where the file exists) are mutated by a
//! seeded PRNG; each parser must return, never panic, and its errors must
//! stay one line.

use crate::{
    config, export::prometheus, sys::host, sys::iface, sys::kallsyms, sys::nic, sys::tracefs,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: [&str; 16] = [
    "\n",
    "\t",
    " ",
    ":",
    ";",
    "0",
    "-1",
    "18446744073709551616",
    "0x",
    "{",
    "}",
    "\"",
    "=",
    "[[hooks]]",
    "\u{00e9}",
    "\0",
];

/// One to eight edits: delete, duplicate, insert a token, flip a byte,
/// truncate. The result is always valid UTF-8 (lossy).
fn mutate(r: &mut Rng, seed: &str) -> String {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..1 + r.below(8) {
        let at = r.below(b.len() + 1);
        match r.below(5) {
            0 if !b.is_empty() => {
                let end = (at + r.below(16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            1 if !b.is_empty() => {
                let end = (at + r.below(64)).min(b.len());
                let piece = b[at.min(end)..end].to_vec();
                b.splice(at..at, piece);
            }
            2 => {
                let t = TOKENS[r.below(TOKENS.len())].as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            3 if !b.is_empty() => {
                let i = r.below(b.len());
                b[i] ^= 1 << r.below(8);
            }
            _ => b.truncate(at),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn one_line<E: std::fmt::Display>(what: &str, input: &str, e: E) {
    let msg = format!("{e:#}");
    assert!(
        !msg.contains('\n'),
        "{what}: multi-line error {msg:?} for {input:?}"
    );
}

fn live(path: &str, fallback: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|_| fallback.to_string())
}

const ROUNDS: usize = 4000;

#[test]
fn tracefs_format() {
    let mut r = Rng(1);
    let seed = tracefs::tests::KFREE_618;
    for _ in 0..ROUNDS {
        let m = mutate(&mut r, seed);
        match tracefs::parse_format(&m) {
            Ok(f) => {
                let _ = f.symbols("reason");
                let _ = f.field("reason");
            }
            Err(e) => one_line("tracefs", &m, anyhow::anyhow!(e)),
        }
    }
}

#[test]
fn proc_files() {
    let mut r = Rng(2);
    let dev = live(
        "/proc/net/dev",
        "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
    );
    let softnet = live(
        "/proc/net/softnet_stat",
        "0000 0001 0002 0 0 0 0 0 0 0 0 0 0\n",
    );
    let udp = live(
        "/proc/net/udp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n",
    );
    let route = live(
        "/proc/net/route",
        "Iface\tDestination\tGateway\nvb\t00000000\t0102A8C0\n",
    );
    let route6 = live("/proc/net/ipv6_route", "");
    let syms: String = live("/proc/kallsyms", "ffffffff81000000 T _stext\n")
        .lines()
        .take(300)
        .collect::<Vec<_>>()
        .join("\n");
    for _ in 0..ROUNDS {
        let m = mutate(&mut r, &dev);
        if let Err(e) = nic::parse_proc_net_dev(&m) {
            one_line("/proc/net/dev", &m, e);
        }
        let m = mutate(&mut r, &softnet);
        if let Err(e) = nic::parse_softnet(&m) {
            one_line("softnet_stat", &m, e);
        }
        let _ = host::parse_proc_udp(&mutate(&mut r, &udp));
        let _ = iface::parse_route_v4(&mutate(&mut r, &route));
        let _ = iface::parse_route_v6(&mutate(&mut r, &route6));
        let m = mutate(&mut r, &syms);
        if let Err(e) = kallsyms::Symbols::parse(&m) {
            one_line("kallsyms", &m, e);
        }
    }
}

#[test]
fn config_file() {
    let mut r = Rng(3);
    let seed = config::tests::SAMPLE;
    assert!(config::Config::parse(seed).is_ok());
    for _ in 0..ROUNDS {
        let m = mutate(&mut r, seed);
        if let Err(e) = config::Config::parse(&m) {
            one_line("config", &m, e);
        }
    }
}

#[test]
fn durations_and_addresses() {
    let mut r = Rng(4);
    for _ in 0..ROUNDS {
        let m = mutate(&mut r, "1.5s");
        if let Err(e) = crate::units::parse_duration(&m) {
            one_line("duration", &m, e);
        }
        let m = mutate(&mut r, "[::1]:9184");
        if let Err(e) = prometheus::parse_addr(&m) {
            one_line("address", &m, e);
        }
        let m = mutate(&mut r, "2001:db8::/32");
        if let Err(e) = m.parse::<crate::act::blocklist::Prefix>() {
            one_line("prefix", &m, e);
        }
    }
}
