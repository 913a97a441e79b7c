//! Hostile and malformed frames through the real XDP program with
//! BPF_PROG_TEST_RUN: every truncation point of several frame shapes is
//! counted exactly, as its protocol when complete and as malformed when not.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use dropscope::loader::{self, KfreeChoice, LoadOptions, XdpChoice};
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
    // (frame, length from which it is complete, its protocol).
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
            14 + 40 + 8 + 8 + 8,
            "udp",
        ),
        (
            eth(vec![(TPID_8021AD, 10), (TPID_8021Q, 20)])
                .frame(0x0800, &ipv4(s4, d4, 17, (0, false), &udp(5, 6, 8))),
            14 + 8 + 20 + 8,
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
            // The fragment header is read once it is all there.
            if i == 1 && len >= 14 + 40 + 8 + 8 {
                want.fragments += 1;
            }
        }
    }
    let ifindex = lab.ifindex(&lab.b, "vb");
    let got = lab.in_ns(&lab.b, move || {
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
        for f in &frames {
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(f.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(f),
                    ctx_in: Some(&ctx),
                    repeat: 1,
                    ..Default::default()
                })
                .unwrap_or_else(|e| panic!("{} byte frame: {e}", f.len()));
            assert_eq!(r.return_value, 2, "XDP_PASS for every frame");
        }
        probes.maps.read(1, true).expect("read maps").ifaces[0]
    });
    use drop_common::proto;
    assert_eq!(got.packets, want.packets);
    assert_eq!(got.proto_packets[proto::MALFORMED], want.malformed);
    assert_eq!(got.proto_packets[proto::TCP], want.tcp);
    assert_eq!(got.proto_packets[proto::UDP], want.udp);
    assert_eq!(got.tcp_syn, want.syn);
    assert_eq!(got.vlan, want.vlan);
    assert_eq!(got.fragments, want.fragments);
}
