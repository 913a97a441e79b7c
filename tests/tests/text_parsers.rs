//! Mutation fuzzing of every parser that reads text from outside the
//! program: tracefs formats, /proc files, kallsyms, the config file,
//! durations, addresses and prefixes. The seeds are fixture files
//! (tests/fixtures/text, captured from a real 6.18 host) and the PRNG is
//! seeded, so a failure reproduces on any machine. Each parser must
//! return, never panic, and its errors must stay one line.

use dropscope::text_parsers as p;
use integration_tests::frames::Rng;

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

const ROUNDS: usize = 4000;

/// A uniform index below `n`.
fn rb(r: &mut Rng, n: usize) -> usize {
    r.below(n as u64) as usize
}

/// One to eight edits: delete, duplicate, insert a token, flip a bit,
/// truncate. The result is always valid UTF-8 (lossy).
fn mutate(r: &mut Rng, seed: &str) -> String {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..1 + rb(r, 8) {
        let at = rb(r, b.len() + 1);
        match rb(r, 5) {
            0 if !b.is_empty() => {
                let end = (at + rb(r, 16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            1 if !b.is_empty() => {
                let end = (at + rb(r, 64)).min(b.len());
                let piece = b[at.min(end)..end].to_vec();
                b.splice(at..at, piece);
            }
            2 => {
                let t = TOKENS[rb(r, TOKENS.len())].as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            3 if !b.is_empty() => {
                let i = rb(r, b.len());
                b[i] ^= 1 << rb(r, 8);
            }
            _ => b.truncate(at),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/text/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each seed parses; then ROUNDS mutations of it return one-line errors.
fn fuzz(seed_rng: u64, what: &str, seed: &str, parse: impl Fn(&str) -> Result<(), String>) {
    assert_eq!(
        parse(seed),
        Ok(()),
        "{what}: the unmutated fixture must parse"
    );
    let mut r = Rng(seed_rng);
    for _ in 0..ROUNDS {
        let m = mutate(&mut r, seed);
        if let Err(e) = parse(&m) {
            assert!(
                !e.contains('\n') && !e.is_empty(),
                "{what}: error {e:?} for {m:?}"
            );
        }
    }
}

#[test]
fn tracefs_format() {
    fuzz(
        1,
        "tracefs format",
        &fixture("kfree_skb.format"),
        p::tracefs_format,
    );
}

#[test]
fn proc_files() {
    fuzz(
        2,
        "/proc/net/dev",
        &fixture("proc_net_dev"),
        p::proc_net_dev,
    );
    fuzz(3, "softnet_stat", &fixture("softnet_stat"), p::softnet_stat);
    fuzz(4, "kallsyms", &fixture("kallsyms"), p::kallsyms);
    let udp = fixture("proc_net_udp");
    assert_eq!(p::proc_net_udp(&udp), 2, "both sockets of the fixture");
    let (v4, v6) = (fixture("proc_net_route"), fixture("proc_net_ipv6_route"));
    assert!(p::routes(&v4, &v6) >= 1, "the fixture's default route");
    let mut r = Rng(5);
    for _ in 0..ROUNDS {
        let _ = p::proc_net_udp(&mutate(&mut r, &udp));
        let _ = p::routes(&mutate(&mut r, &v4), &mutate(&mut r, &v6));
    }
}

#[test]
fn config_file() {
    fuzz(6, "config", &fixture("dropscope.toml"), p::config);
}

#[test]
fn durations_addresses_and_prefixes() {
    fuzz(7, "duration", "1.5s", p::duration);
    fuzz(8, "address", "[::1]:9184", p::listen_address);
    fuzz(9, "prefix", "2001:db8::/32", p::prefix);
    fuzz(10, "prefix", "198.51.100.0/24", p::prefix);
}
