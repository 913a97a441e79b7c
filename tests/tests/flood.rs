//! Floods from the live-frames generator and from real tools: each attack
//! class is detected and classified; benign traffic of a similar rate raises
//! no attack; heavy-hitter estimates stay within the sketch's stated error.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use dropscope::schema::{
    AttackClass, AttackEvent, KernelTrigger, Line, LossKind, Metric, Phase, Report, SourceSpread,
    SpoofVerdict, Threshold, Trigger,
};
use integration_tests::{Dropscope, Lab, flood_turn, frames::*, generator::Flood, have};

fn watch(lab: &Lab, extra: &[&str]) -> Dropscope {
    let mut args = integration_tests::WATCH_VB_FAST.to_vec();
    args.extend(["--top", "20"]);
    args.extend_from_slice(extra);
    let d = lab.dropscope(&args);
    // Quiet samples first: the adaptive baselines learn the idle link.
    thread::sleep(Duration::from_millis(600));
    d
}

fn events(lines: &[Line]) -> Vec<&AttackEvent> {
    lines.iter().filter_map(Line::attack).collect()
}

fn started(lines: &[Line]) -> Vec<&AttackEvent> {
    events(lines)
        .into_iter()
        .filter(|e| e.phase == Phase::Start)
        .collect()
}

fn reports(lines: &[Line]) -> Vec<&Report> {
    lines.iter().filter_map(Line::watch).collect()
}

fn eth(lab: &Lab) -> Eth {
    Eth {
        dst: lab.mac_bytes(&lab.b, "vb"),
        src: lab.mac_bytes(&lab.a, "va"),
        tags: vec![],
    }
}

fn dst(lab: &Lab) -> Ipv4Addr {
    lab.v4(2).parse().unwrap()
}

fn spoofed_base(lab: &Lab) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, lab.n as u8, 0)
}

fn flood(lab: &Lab, l4proto: u8, l4: Vec<u8>, count: u32, sources: u32) {
    let frame = eth(lab).frame(
        0x0800,
        &ipv4(spoofed_base(lab), dst(lab), l4proto, (0, false), &l4),
    );
    lab.generate(
        &lab.a,
        "va",
        Flood {
            frame,
            count,
            sources,
            base: spoofed_base(lab),
            spoof_ttl: sources > 1,
            dports: 0,
        },
    );
}

/// Every event of each attack carries the class its start did: updates
/// and the end (the wind-down after the traffic stops) never reclassify.
fn assert_class_holds(lines: &[Line]) {
    for start in started(lines) {
        for e in events(lines).iter().filter(|e| e.id == start.id) {
            assert_eq!(
                e.class, start.class,
                "attack {} changed class at {}: {e:#?}",
                start.id, e.phase
            );
        }
    }
}

fn assert_class(lines: &[Line], class: AttackClass) -> AttackEvent {
    let s = started(lines);
    assert!(!s.is_empty(), "no attack started");
    let e = s[0];
    assert_class_holds(lines);
    let classes: Vec<AttackClass> = e.vectors.iter().map(|v| v.class).collect();
    assert_eq!(e.class, class, "vectors {classes:?} in {e:#?}");
    e.clone()
}

#[test]
fn syn_flood_from_random_sources() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    flood(&lab, 6, tcp(40000, 80, SYN), 200_000, 60_000);
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    let e = assert_class(&lines, AttackClass::SynFlood);
    eprintln!("{e:?}");
    assert!(e.confidence >= 80, "{e:#?}");
    assert_eq!(e.sources, SourceSpread::Many, "{e:#?}");
    assert_eq!(e.spoofing.verdict, SpoofVerdict::Spoofed, "{e:#?}");
    // The start may come within milliseconds of the first packets (or, in
    // an emulated VM of the kernel matrix, of a slow trickle): the attack's
    // later updates must see the thousands of sources.
    let distinct = events(&lines)
        .iter()
        .map(|v| v.distinct_sources)
        .fold(0.0, f64::max);
    assert!(distinct > 1000.0, "{distinct}: {e:#?}");
    assert_eq!(e.trigger, Trigger::Spike(Metric::Syn), "{e:#?}");
    // It ends once the flood stops (hysteresis: 3 s by default) - or is still
    // running when we stopped; either way it never flaps into two attacks.
    assert_eq!(started(&lines).len(), 1);
}

#[test]
fn udp_reflection_names_the_protocol() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    // NTP monlist-style answers: source port 123, large, plus fragments.
    flood(&lab, 17, udp(123, 41000, 1400), 60_000, 200);
    let frag = eth(&lab).frame(
        0x0800,
        &ipv4(spoofed_base(&lab), dst(&lab), 17, (185, false), &[0u8; 600]),
    );
    lab.generate(
        &lab.a,
        "va",
        Flood {
            frame: frag,
            count: 20_000,
            sources: 200,
            base: spoofed_base(&lab),
            spoof_ttl: false,
            dports: 0,
        },
    );
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    let e = assert_class(&lines, AttackClass::UdpReflection);
    assert_eq!(e.vectors[0].protocol.as_deref(), Some("NTP"), "{e:#?}");
    // The kernel's word: the answers landed on a closed port, from
    // spoofed sources; so the confidence may be high. The start may come
    // before the stack dropped the first answers (drops lag the XDP count;
    // in an emulated VM of the kernel matrix by a whole sample): the
    // attack's events, start or update, must show them.
    assert!(e.confidence >= 80, "{e:#?}");
    let all = events(&lines);
    assert!(
        all.iter().any(|v| {
            let evidence = v.evidence.join("; ");
            v.id == e.id && evidence.contains("NO_SOCKET") && evidence.contains("dropped")
        }),
        "{all:#?}"
    );
}

#[test]
fn icmp_flood() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    let mut echo = vec![8u8, 0, 0, 0, 0, 1, 0, 1];
    echo.extend([0u8; 56]);
    flood(&lab, 1, echo, 150_000, 1000);
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    assert_class(&lines, AttackClass::IcmpFlood);
}

#[test]
fn source_threshold_fires_in_kernel_with_few_sources() {
    let _turn = flood_turn();
    let lab = Lab::new();
    // 20 000 pps from one source is the threshold; the flood sends far more.
    let d = watch(&lab, &["--source-pps", "20000"]);
    flood(&lab, 17, udp(5000, 9999, 100), 100_000, 1);
    // Then quiet: the attack must end (end_after_s is 3 s), and a second
    // flood must start a second one.
    let ended = |d: &Dropscope| {
        let deadline = std::time::Instant::now() + Duration::from_secs(8);
        let mut lines = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Some(v) = d.next_line(Duration::from_millis(200)) {
                let end = v.attack().is_some_and(|e| e.phase == Phase::End);
                lines.push(v);
                if end {
                    return (true, lines);
                }
            }
        }
        (false, lines)
    };
    let (first_ended, mut lines) = ended(&d);
    assert!(first_ended, "the attack never ended once the flood stopped");
    flood(&lab, 17, udp(5000, 9999, 100), 100_000, 1);
    thread::sleep(Duration::from_millis(400));
    lines.extend(d.stop().lines);
    assert_eq!(started(&lines).len(), 2, "a second flood, a second attack");
    let s = started(&lines);
    assert!(!s.is_empty(), "no attack");
    let e = s[0];
    eprintln!("{e:?}");
    assert!(
        matches!(
            e.trigger,
            Trigger::Kernel(KernelTrigger::Source) | Trigger::Threshold(Threshold::SourcePps)
        ),
        "{e:#?}"
    );
    assert_eq!(e.sources, SourceSpread::Few, "{e:#?}");
    assert_eq!(
        e.top_sources[0].address,
        spoofed_base(&lab).to_string(),
        "{e:#?}"
    );
}

/// Heavy hitters hidden in a spoofed flood: their per-source counts are
/// within the sketch's stated bound of what the generator sent.
#[test]
fn heavy_hitters_within_the_stated_error() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    let heavy = [
        (Ipv4Addr::new(203, 0, lab.n as u8, 1), 40_000u32),
        (Ipv4Addr::new(203, 0, lab.n as u8, 2), 25_000),
    ];
    // Background: 100 000 packets from 200 000 possible sources (budget
    // exhausted: flood mode), interleaved with the heavy hitters.
    // In chunks with a breath between them: one burst of 100 000 can
    // overflow the veth ring when the receiving CPU is busy elsewhere, and
    // the counts below need the frames to arrive.
    const CHUNKS: u32 = 10;
    for _ in 0..CHUNKS {
        flood(&lab, 17, udp(7, 9, 32), 100_000 / CHUNKS, 200_000);
        for (addr, n) in heavy {
            let frame = eth(&lab).frame(
                0x0800,
                &ipv4(addr, dst(&lab), 17, (0, false), &udp(7, 9, 32)),
            );
            lab.generate(
                &lab.a,
                "va",
                Flood {
                    frame,
                    count: n / CHUNKS,
                    sources: 1,
                    base: addr,
                    spoof_ttl: false,
                    dports: 0,
                },
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    let reports = reports(&lines);
    let last = reports.last().unwrap();
    let total: u64 = reports.iter().map(|r| r.interfaces[0].delta.packets).sum();
    assert!(total >= 165_000, "frames lost on the way: {total}");
    // Count-min bound: e / 1024 of the packets in an interval; sampling
    // (past 20 000 packets a second per CPU) adds 4 * sqrt(2 n K) as stated.
    let every = reports
        .iter()
        .filter_map(|r| r.sources_estimate.as_ref().map(|e| e.sample_every))
        .fold(1.0f64, f64::max);
    let cm = (std::f64::consts::E / 1024.0 * total as f64).ceil() as u64;
    for (addr, n) in heavy {
        let bound = cm + (4.0 * (2.0 * n as f64 * every).sqrt()).ceil() as u64;
        let got = integration_tests::source_packets(last, &addr.to_string());
        eprintln!("{addr}: sent {n}, estimated {got}, bound {bound}, total {total}, every {every}");
        assert!(
            got + bound >= n as u64 && got <= n as u64 + bound,
            "{addr}: sent {n}, estimated {got}, bound {bound}"
        );
    }
}

#[test]
fn hping3_syn_flood_with_random_sources() {
    let _turn = flood_turn();
    assert!(have("hping3"), "hping3 missing: run cargo xtask setup");
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    let target = lab.v4(2);
    // Bounded: hping3 floods for two seconds, then timeout stops it.
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.a,
            "timeout",
            "2",
            "hping3",
            "--flood",
            "--rand-source",
            "-S",
            "-p",
            "80",
            "-q",
            &target,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    let e = assert_class(&lines, AttackClass::SynFlood);
    assert_eq!(e.sources, SourceSpread::Many, "{e:#?}");
}

#[test]
fn iperf3_tcp_between_namespaces_raises_no_attack() {
    let _turn = flood_turn();
    assert!(have("iperf3"), "iperf3 missing: run cargo xtask setup");
    let lab = Lab::new();
    let mut server = lab.iperf3_server();
    let d = watch(&lab, &[]);
    lab.iperf3_client(&[]);
    thread::sleep(Duration::from_millis(300));
    let lines = d.stop().lines;
    let peak = reports(&lines)
        .iter()
        .map(|r| r.interfaces[0].pps)
        .fold(0.0, f64::max);
    eprintln!("iperf3 peak {peak} pps");
    assert!(peak > 20_000.0, "iperf3 reached only {peak} pps");
    assert!(
        started(&lines).is_empty(),
        "benign traffic raised {:#?}",
        started(&lines)
    );
    let _ = server.0.wait();
}

/// UDP bulk delivered to a socket that asked for it, from the ports a
/// reflection comes from (443: a QUIC-like download; 53: a resolver's
/// answers): a spike in rate and shape, but the kernel delivered the
/// datagrams (a reader that falls behind loses some to its full buffer:
/// overflow, not a refusal), so no attack starts and `loss` is never
/// `ddos`.
#[test]
fn udp_bulk_to_a_listening_socket_from_443_and_53_raises_no_attack() {
    let _turn = flood_turn();
    assert!(have("iperf3"), "iperf3 missing: run cargo xtask setup");
    for cport in ["443", "53"] {
        let lab = Lab::new();
        let mut server = lab.iperf3_server();
        let rcvbuf_before = lab.nstat(&lab.b, "UdpRcvbufErrors");
        let noports_before = lab.nstat(&lab.b, "UdpNoPorts");
        let d = watch(&lab, &[]);
        lab.iperf3_client(&["-u", "--cport", cport, "-l", "1200", "-b", "150M"]);
        thread::sleep(Duration::from_millis(300));
        let lines = d.stop().lines;
        // The precondition: the socket asked for every datagram; a reader
        // starved of CPU lets some overflow (CI runs lost 167 and 502 of
        // ~46 900). Overflow is benign too: the checks below hold with it,
        // as long as most of the download was delivered.
        let rcvbuf_drops = lab.nstat(&lab.b, "UdpRcvbufErrors") - rcvbuf_before;
        assert_eq!(lab.nstat(&lab.b, "UdpNoPorts"), noports_before);
        let reports = reports(&lines);
        let peak = reports
            .iter()
            .map(|r| r.interfaces[0].pps)
            .fold(0.0, f64::max);
        let from_port: u64 = reports
            .iter()
            .flat_map(|r| &r.interfaces[0].udp_src_ports)
            .filter(|p| p.port == cport)
            .map(|p| p.packets)
            .sum();
        eprintln!("udp from {cport}: peak {peak} pps, {from_port} datagrams from the port");
        assert!(peak > 5_000.0, "iperf3 reached only {peak} pps");
        assert!(
            from_port > 10_000,
            "{from_port} datagrams from port {cport}"
        );
        assert!(
            rcvbuf_drops * 10 <= from_port,
            "the reader lost {rcvbuf_drops} of {from_port}: not the bulk download this test is"
        );
        assert!(
            started(&lines).is_empty(),
            "benign bulk from port {cport} raised {:#?}",
            started(&lines)
        );
        for r in &reports {
            let loss = r.loss.as_ref().map(|l| l.verdict);
            assert_ne!(loss, Some(LossKind::Ddos), "{:?}", r.loss);
        }
        let _ = server.0.wait();
    }
}

#[test]
fn ack_flood_without_handshakes() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    flood(&lab, 6, tcp(40000, 443, ACK), 200_000, 60_000);
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    assert_class(&lines, AttackClass::AckRstFlood);
}

#[test]
fn small_udp_flood() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    // 60-byte datagrams from a high source port to one service.
    flood(&lab, 17, udp(50000, 27015, 18), 200_000, 60_000);
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    assert_class(&lines, AttackClass::UdpFlood);
}

#[test]
fn fragment_flood() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    // Later fragments only: nothing to reassemble them with.
    let frame = eth(&lab).frame(
        0x0800,
        &ipv4(spoofed_base(&lab), dst(&lab), 17, (100, true), &[0u8; 200]),
    );
    lab.generate(
        &lab.a,
        "va",
        Flood {
            frame,
            count: 150_000,
            sources: 60_000,
            base: spoofed_base(&lab),
            spoof_ttl: true,
            dports: 0,
        },
    );
    thread::sleep(Duration::from_millis(400));
    let lines = d.stop().lines;
    assert_class(&lines, AttackClass::FragmentFlood);
}

/// A bounded soak: 24 to 48 million packets from as many random spoofed
/// sources. The kernel's tables stay within their bounds, inserts stay
/// within the budget, evictions (and expiries) are counted, and once the
/// source table has settled at its size (its bound, or where expiring idle
/// junk holds it) dropscope's memory stays flat (it follows the bounded
/// tables, not the sources), under 64 MiB.
#[test]
fn twenty_four_million_spoofed_sources_keep_maps_bounded_and_memory_flat() {
    let _turn = flood_turn();
    let lab = Lab::new();
    let d = watch(&lab, &[]);
    // (RSS KiB, sources evicted so far, sources tracked) after each round
    // of 3M packets.
    let mut rounds: Vec<(u64, u64, usize)> = Vec::new();
    let mut last_report = None;
    let began = std::time::Instant::now();
    // At least 24M packets; more (up to 48M) if the table settles late on
    // a fast machine (inserts are budgeted per second), so that four rounds
    // follow the one where it settled.
    for round in 0..16 {
        if round >= 8 && settled(&rounds).is_some_and(|f| rounds.len() >= f + 5) {
            break;
        }
        flood(&lab, 6, tcp(40000, 80, SYN), 3_000_000, 48_000_000);
        thread::sleep(Duration::from_millis(1200));
        while let Some(l) = d.next_line(Duration::from_millis(50)) {
            if let Line::Watch(r) = l {
                last_report = Some(*r);
            }
        }
        let (evicted, tracked) = last_report.as_ref().map_or((0, 0), |r| {
            (r.health.sources_evicted, r.health.sources_tracked)
        });
        rounds.push((d.rss_kib(), evicted, tracked));
    }
    let run = d.stop();
    let secs = began.elapsed().as_secs_f64();
    let last = run.last().or(last_report.as_ref()).unwrap();
    let h = &last.health;
    eprintln!(
        "(RSS KiB, sources evicted, tracked) per 3M packets: {rounds:?}; health {h:?}; {secs:.1} s"
    );
    let tracked = h.sources_tracked as u64;
    let inserted = h.sources_inserted;
    let evicted = h.sources_evicted;
    assert!(tracked <= 65536, "{tracked} sources in a 65536-entry table");
    // The budget (4096 new sources a second on each CPU, the default)
    // bounds inserts by time, whatever the rate: far below one per packet
    // at any generator's speed. Whatever the LRU pushed out is counted.
    // SAFETY: sysconf reads a number.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as f64;
    let budget = 4096.0 * cpus * (secs + 2.0);
    assert!(
        (inserted as f64) <= budget,
        "{inserted} inserts in {secs:.1} s on {cpus} CPUs (budget {budget})"
    );
    assert_eq!(inserted, tracked + evicted, "{h:?}");
    assert!(
        evicted > 0,
        "the soak should push sources out (LRU or expiry): {h:?}"
    );
    // Drop attribution under the same flood: new rows are budgeted, and
    // the drops that found none are counted, not silently lost.
    assert!(h.unattributed > 0, "{h:?}");
    let packets = integration_tests::iface(last, "vb").total.packets;
    // The soak happened (a busy machine may lose some frames at the veth
    // ring before XDP sees them; the bounds above must hold regardless).
    assert!(packets >= 20_000_000, "{packets}");
    assert!(
        inserted * 20 < packets,
        "{inserted} inserts for {packets} packets"
    );
    let peak = rounds.iter().map(|r| r.0).max().unwrap();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    // Flat once settled: from the round where the table reached the size
    // class it keeps (the user-side copies' capacity follows it), memory
    // grows by at most 2 MiB however many more sources come.
    let full = settled(&rounds).expect("no round was recorded");
    assert!(
        full + 3 <= rounds.len(),
        "settled too late to judge: {rounds:?}"
    );
    let at_full = rounds[full].0;
    let after = rounds[full..].iter().map(|r| r.0).max().unwrap();
    assert!(
        after <= at_full + 2048,
        "RSS grew {at_full} -> {after} KiB after the table settled: {rounds:?}"
    );
}

/// The first round whose source table had reached the largest size class
/// (a hash table's capacity: the next power of two above 8/7 of its rows)
/// of all rounds: from there on the user-side copies stop growing.
fn settled(rounds: &[(u64, u64, usize)]) -> Option<usize> {
    let class = |t: usize| (t * 8 / 7).max(1).next_power_of_two();
    let top = rounds.iter().map(|r| class(r.2)).max()?;
    rounds.iter().position(|r| class(r.2) == top)
}
