//! Hostile and malformed frames through the real XDP program with
//! BPF_PROG_TEST_RUN: every truncation point of several frame shapes is
//! counted exactly, as its protocol when complete and as malformed when not;
//! and thousands of random hostile frames (bogus IHL and lengths, extension
//! chains, odd fragments, VLAN stacks, cuts, bit flips, maximum size) give
//! exactly the counters the host computes with the same parser.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use dropscope::kernel::{self as loader, KfreeChoice, LoadOptions, XdpChoice};
use integration_tests::{Lab, frames::*};

struct Expect {
    packets: u64,
    malformed: u64,
    tcp: u64,
    udp: u64,
    syn: u64,
    vlan: u64,
    fragments: u64,
}

#[test]
fn every_truncation_point_is_counted_exactly() {
    let lab = Lab::new();
    let eth = |tags| Eth {
        dst: [2, 0, 0, 0, 0, 1],
        src: [2, 0, 0, 0, 0, 2],
        tags,
    };
    let s4 = Ipv4Addr::new(192, 0, 2, 7);
    let d4 = Ipv4Addr::new(192, 0, 2, 8);
    let s6: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let d6: Ipv6Addr = "2001:db8::8".parse().unwrap();
    // (frame, length from which it is complete, its protocol). A frame is
    // complete when it carries all its IP header says: shorter, the kernel
    // drops it as too small, and so it counts as malformed.
    let shapes: Vec<(Vec<u8>, usize, &str)> = vec![
        (
            eth(vec![]).frame(0x0800, &ipv4(s4, d4, 6, (0, false), &tcp(1, 2, SYN))),
            14 + 20 + 20,
            "tcp",
        ),
        (
            eth(vec![]).frame(
                0x86dd,
                &ipv6(
                    s6,
                    d6,
                    17,
                    &[hop_by_hop(), fragment(0, true)],
                    &udp(3, 4, 8),
                ),
            ),
            // The IPv6 payload length covers the datagram's 8 data bytes:
            // any cut is malformed (the kernel drops it as too small).
            14 + 40 + 8 + 8 + 16,
            "udp",
        ),
        (
            eth(vec![(TPID_8021AD, 10), (TPID_8021Q, 20)])
                .frame(0x0800, &ipv4(s4, d4, 17, (0, false), &udp(5, 6, 8))),
            14 + 8 + 20 + 16,
            "udp",
        ),
    ];
    let mut frames = Vec::new();
    let mut want = Expect {
        packets: 0,
        malformed: 0,
        tcp: 0,
        udp: 0,
        syn: 0,
        vlan: 0,
        fragments: 0,
    };
    for (i, (frame, complete, proto)) in shapes.iter().enumerate() {
        // The kernel won't run XDP on less than an Ethernet header.
        for len in 14..=frame.len() {
            frames.push(frame[..len].to_vec());
            want.packets += 1;
            if len < *complete {
                want.malformed += 1;
            } else if *proto == "tcp" {
                want.tcp += 1;
                want.syn += 1;
            } else {
                want.udp += 1;
            }
            if i == 2 {
                want.vlan += 1;
            }
            // Extension headers are walked only in a complete packet.
            if i == 1 && len >= *complete {
                want.fragments += 1;
            }
        }
    }
    let (got, refused) = run_frames(&lab, frames);
    assert!(refused.is_empty());
    use drop_common::proto;
    assert_eq!(got.packets, want.packets);
    assert_eq!(got.proto_packets[proto::MALFORMED], want.malformed);
    assert_eq!(got.proto_packets[proto::TCP], want.tcp);
    assert_eq!(got.proto_packets[proto::UDP], want.udp);
    assert_eq!(got.tcp_syn, want.syn);
    assert_eq!(got.vlan, want.vlan);
    assert_eq!(got.fragments, want.fragments);
}

/// Loads the real program (not attached) for BPF_PROG_TEST_RUN on `vb`.
fn run_frames(lab: &Lab, frames: Vec<Vec<u8>>) -> (drop_common::IfaceStats, Vec<usize>) {
    let ifindex = lab.ifindex(&lab.b, "vb");
    lab.in_ns(&lab.b, move || {
        let mut probes = loader::load(&LoadOptions {
            ifaces: vec![("vb".into(), ifindex)],
            xdp: XdpChoice::None,
            kfree: KfreeChoice::Auto,
            own_netns_only: true,
            xdp_config: loader::default_xdp_config(),
        })
        .expect("load");
        loader::prepare_xdp(&mut probes.ebpf, &[("vb".into(), ifindex)]).expect("prepare");
        let prog: &mut Xdp = probes
            .ebpf
            .program_mut("dropscope_xdp")
            .unwrap()
            .try_into()
            .unwrap();
        let mut refused = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(f.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            match prog.test_run(TestRunOptions {
                data_in: Some(f),
                ctx_in: Some(&ctx),
                repeat: 1,
                ..Default::default()
            }) {
                Ok(r) => assert_eq!(r.return_value, 2, "XDP_PASS for frame {i}"),
                Err(_) => refused.push(i),
            }
        }
        (probes.iface_stats(0).expect("read maps"), refused)
    })
}

#[test]
fn random_hostile_frames_match_the_host_parser_exactly() {
    use drop_common::{IfaceStats, parse::parse};
    let lab = Lab::new();
    let mut r = Rng(0xd20b_5c0e_0000_0007);
    let mut frames: Vec<Vec<u8>> = (0..20_000).map(|_| random_frame(&mut r)).collect();
    // The largest frames a test run takes, and frames too short for the
    // kernel to run XDP on at all.
    for n in [1514usize, 3000] {
        let mut f = random_frame(&mut r);
        f.resize(n, 0xa5);
        frames.push(f);
    }
    frames.push(Vec::new());
    frames.push(vec![0u8; 13]);
    let (got, refused) = run_frames(&lab, frames.clone());
    // Only what the kernel refused to run (shorter than Ethernet) is absent.
    for i in &refused {
        assert!(
            frames[*i].len() < 14,
            "frame {i} of {} bytes refused",
            frames[*i].len()
        );
    }
    assert_eq!(refused.len(), 2, "the empty and 13-byte frames are refused");
    let mut want = IfaceStats::default();
    for f in frames.iter().filter(|f| f.len() >= 14) {
        want.count(&parse(f.as_slice()), f.len() as u64);
    }
    assert_eq!(got.packets, want.packets);
    assert_eq!(got.bytes, want.bytes);
    assert_eq!(got.proto_packets, want.proto_packets);
    assert_eq!(got.proto_bytes, want.proto_bytes);
    for (name, g, w) in [
        ("ipv4", got.ipv4, want.ipv4),
        ("ipv6", got.ipv6, want.ipv6),
        ("vlan", got.vlan, want.vlan),
        ("fragments", got.fragments, want.fragments),
        ("tcp_syn", got.tcp_syn, want.tcp_syn),
        ("tcp_syn_ack", got.tcp_syn_ack, want.tcp_syn_ack),
        ("tcp_ack_only", got.tcp_ack_only, want.tcp_ack_only),
        ("tcp_rst", got.tcp_rst, want.tcp_rst),
        ("tcp_fin", got.tcp_fin, want.tcp_fin),
    ] {
        assert_eq!(g, w, "{name}");
    }
    assert_eq!(got.size_buckets, want.size_buckets);
    assert_eq!(got.ttl, want.ttl);
    // Every class was exercised, malformed ones most of all.
    for (i, n) in want.proto_packets.iter().enumerate() {
        assert!(*n > 100, "{} only {n}", drop_common::proto::NAMES[i]);
    }
}
