//! The frame parser the XDP program runs, fuzzed on the host: the same
//! code (drop_common::parse) on hostile frames, checked against invariants
//! that hold for any input. Seeded, so a failure names a frame to replay.

use drop_common::{
    parse::{parse, promises},
    proto,
};
use integration_tests::frames::{Rng, random_frame};

const FRAMES: u64 = 300_000;

#[test]
fn hostile_frames_keep_every_invariant() {
    let mut r = Rng(0x5eed_d20b_5c0e_0001);
    let mut seen = [0u64; proto::COUNT];
    for _ in 0..FRAMES {
        let f = random_frame(&mut r);
        let s = promises::check(&f).unwrap_or_else(|why| panic!("{why}: {f:02x?}"));
        seen[s.proto] += 1;
    }
    // The generator reaches every class, so the invariants were exercised.
    for (i, n) in seen.iter().enumerate() {
        assert!(*n > 1000, "{} only {n} times", proto::NAMES[i]);
    }
}

#[test]
fn ip_lengths_that_disagree_with_the_frame_are_malformed() {
    use integration_tests::frames::*;
    let eth = Eth {
        dst: [2, 0, 0, 0, 0, 1],
        src: [2, 0, 0, 0, 0, 2],
        tags: vec![],
    };
    let s = "192.0.2.1".parse().unwrap();
    let d = "192.0.2.2".parse().unwrap();
    let good = eth.frame(0x0800, &ipv4(s, d, 17, (0, false), &udp(1, 2, 10)));
    assert_eq!(parse(good.as_slice()).proto, proto::UDP);
    let set_total = |f: &mut Vec<u8>, v: u16| f[16..18].copy_from_slice(&v.to_be_bytes());
    for (total, want) in [
        (38u16, proto::UDP),    // exact
        (39, proto::MALFORMED), // claims one byte more than it carries
        (19, proto::MALFORMED), // less than its own header
        (27, proto::MALFORMED), // UDP header not inside the packet
        (28, proto::UDP),       // header only: an empty datagram
        (0, proto::MALFORMED),
        (65535, proto::MALFORMED),
    ] {
        let mut f = good.clone();
        set_total(&mut f, total);
        assert_eq!(parse(f.as_slice()).proto, want, "total length {total}");
    }
    for ihl in [0u8, 1, 4] {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        assert_eq!(parse(f.as_slice()).proto, proto::MALFORMED, "IHL {ihl}");
    }
    // IHL 15 (60-byte header) on a 20-byte header: the UDP header is not there.
    let mut f = good.clone();
    f[14] = 0x4f;
    assert_eq!(parse(f.as_slice()).proto, proto::MALFORMED, "IHL 15");
    let mut f = good.clone();
    f[14] = 0x65;
    assert_eq!(
        parse(f.as_slice()).proto,
        proto::MALFORMED,
        "version 6 in IPv4"
    );
}
