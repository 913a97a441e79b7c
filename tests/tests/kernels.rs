//! What runs on which kernel, proven on the kernel it runs on. `cargo xtask
//! test` runs this file on this machine's kernel and again inside each
//! kernel of the matrix (Debian's 5.10, 6.1 and 6.12 booted under qemu).
//! What a test expects comes from the kernel itself (its tracefs record of
//! skb:kfree_skb), never from a version number; the counts come from the
//! usual oracles (iptables rule counters, nstat, the packets sent).

use std::{thread, time::Duration};

use dropscope::schema::Report;
use integration_tests::{
    Dropscope, Lab, WATCH_VB, drop_port, drop_source, drops, dropscope_bin, frames::*,
    iptables_packets, sh, sockaddr as addr, source_packets,
};

/// The kernel's own description of the skb:kfree_skb record.
fn kfree_skb_format() -> String {
    let mounted = std::path::Path::new("/sys/kernel/tracing/events").exists();
    if !mounted {
        // As dropscope does: tracefs may simply not be mounted yet.
        let _ = std::process::Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
    for base in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(f) = std::fs::read_to_string(format!("{base}/events/skb/kfree_skb/format")) {
            return f;
        }
    }
    panic!("no tracefs with events/skb/kfree_skb: mount -t tracefs tracefs /sys/kernel/tracing");
}

/// Whether this kernel's kfree_skb carries a drop reason (5.17+).
fn kernel_has_reasons() -> bool {
    kfree_skb_format()
        .lines()
        .any(|l| l.contains("field:") && l.contains(" reason;"))
}

/// The (value, name) pairs of the reason field's `__print_symbolic` list.
fn tracefs_reasons() -> Vec<(u32, String)> {
    let f = kfree_skb_format();
    let mut out = Vec::new();
    let mut rest = f.as_str();
    while let Some(i) = rest.find('{') {
        rest = &rest[i + 1..];
        let Some(end) = rest.find('}') else { break };
        let pair = &rest[..end];
        if let Some((v, name)) = pair.split_once(',') {
            let name = name.trim().trim_matches('"');
            if let Ok(v) = v.trim().parse::<u32>() {
                out.push((v, name.to_string()));
            }
        }
        rest = &rest[end..];
    }
    out
}

/// The location row on `iface` in function `func`, total drops.
fn location_total(report: &Report, iface: &str, func: &str) -> u64 {
    report
        .locations
        .iter()
        .filter(|l| l.iface == iface && l.location.starts_with(&format!("{func}+0x")))
        .map(|l| l.total)
        .sum()
}

fn settle() {
    thread::sleep(Duration::from_millis(600));
}

#[test]
fn start_line_says_what_runs_on_this_kernel() {
    let lab = Lab::new();
    let ds = lab.dropscope(&WATCH_VB);
    let err = ds.stderr();
    ds.stop();
    let notes_517: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("note:") && l.contains("5.17"))
        .collect();
    if kernel_has_reasons() {
        assert!(
            err.contains("dropscope: drops via tp_btf/kfree_skb; XDP on vb (native)"),
            "{err}"
        );
        assert!(notes_517.is_empty(), "{err}");
    } else {
        assert!(
            err.contains(
                "dropscope: drops via tracepoint skb:kfree_skb (by kernel location); XDP on vb (native)"
            ),
            "{err}"
        );
        assert_eq!(notes_517.len(), 1, "one note says why: {err}");
        assert!(notes_517[0].contains("reasons need Linux 5.17+"), "{err}");
    }
    // Nothing else runs reduced on these kernels.
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), notes_517.len(), "unexpected notes: {err}");
}

#[test]
fn reasons_are_the_running_kernels_own() {
    let out = std::process::Command::new(dropscope_bin())
        .arg("reasons")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    if !kernel_has_reasons() {
        assert!(stdout.trim().is_empty(), "{stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("note:") && stderr.contains("5.17"),
            "{stderr}"
        );
        return;
    }
    // dropscope names reasons from BTF; the tracepoint's own list is the
    // oracle: same values, same names, for every drop reason.
    let listed: Vec<(u32, String)> = stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.to_string()))
        })
        .collect();
    // dropscope shows SKB_DROP_REASON_SKB_CSUM as CSUM.
    let kernel: Vec<(u32, String)> = tracefs_reasons()
        .into_iter()
        .filter(|(_, n)| !matches!(n.as_str(), "NOT_DROPPED_YET" | "CONSUMED" | "MAX"))
        .map(|(v, n)| (v, n.strip_prefix("SKB_").unwrap_or(&n).to_string()))
        .collect();
    assert!(kernel.len() > 20, "tracefs lists {} reasons", kernel.len());
    for (v, name) in &kernel {
        assert!(
            listed.iter().any(|(lv, ln)| lv == v && ln == name),
            "{name} = {v} missing from `dropscope reasons`:\n{stdout}"
        );
    }
    // BTF may name more (subsystem reasons the tracepoint does not list).
    assert!(listed.len() >= kernel.len(), "{stdout}");
}

/// NETFILTER_DROP where the kernel has reasons; elsewhere the drops are
/// found at nf_hook_slow on the interface. Either way: the rule's counter.
#[test]
fn netfilter_drops_equal_the_rule_counter_on_this_kernel() {
    let lab = Lab::new();
    lab.exec(
        &lab.b,
        &[
            "iptables", "-A", "INPUT", "-p", "udp", "--dport", "5301", "-j", "DROP",
        ],
    );
    let ds = lab.dropscope(&WATCH_VB);
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 5301), 700, 64);
    settle();
    let last = ds.stop().into_last();
    let rule = iptables_packets(&lab, "iptables", "dpt:5301");
    assert_eq!(rule, 700, "the rule saw every datagram");
    if kernel_has_reasons() {
        assert_eq!(drops(&last, "NETFILTER_DROP", "vb"), rule);
    } else {
        assert_eq!(
            location_total(&last, "vb", "nf_hook_slow"),
            rule,
            "{last:#?}"
        );
        assert!(drops(&last, "NOT_SPECIFIED", "vb") >= rule, "{last:#?}");
    }
}

/// NO_SOCKET = UdpNoPorts + Udp6NoPorts; without reasons, the drops at
/// __udp4_lib_rcv and __udp6_lib_rcv on the interface are those counters.
#[test]
fn closed_port_drops_equal_nstat_on_this_kernel() {
    let lab = Lab::new();
    let v4_before = lab.nstat(&lab.b, "UdpNoPorts");
    let v6_before = lab.nstat(&lab.b, "Udp6NoPorts");
    let ds = lab.dropscope(&WATCH_VB);
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 5399), 400, 32);
    lab.send_udp(&lab.a, addr(&lab.v6(1), 0), addr(&lab.v6(2), 5399), 250, 32);
    settle();
    let last = ds.stop().into_last();
    let v4 = lab.nstat(&lab.b, "UdpNoPorts") - v4_before;
    let v6 = lab.nstat(&lab.b, "Udp6NoPorts") - v6_before;
    assert_eq!((v4, v6), (400, 250), "nstat saw every datagram");
    let reason = if kernel_has_reasons() {
        assert_eq!(drops(&last, "NO_SOCKET", "vb"), v4 + v6);
        "NO_SOCKET"
    } else {
        assert_eq!(
            location_total(&last, "vb", "__udp4_lib_rcv"),
            v4,
            "{last:#?}"
        );
        assert_eq!(
            location_total(&last, "vb", "__udp6_lib_rcv"),
            v6,
            "{last:#?}"
        );
        "NOT_SPECIFIED"
    };
    // Attribution reads the dropped packet's headers on every kernel.
    assert_eq!(
        drop_source(&last, reason, &lab.v4(1)),
        v4,
        "{:#?}",
        last.drop_sources
    );
    assert_eq!(
        drop_source(&last, reason, &lab.v6(1)),
        v6,
        "{:#?}",
        last.drop_sources
    );
    assert_eq!(
        drop_port(&last, reason, "udp", 5399),
        v4 + v6,
        "{:#?}",
        last.drop_ports
    );
}

/// Doctor names the cause where the kernel gives reasons, and the kernel
/// function where it gives none.
#[test]
fn doctor_names_where_drops_happen_on_this_kernel() {
    let lab = Lab::new();
    lab.exec(
        &lab.b,
        &[
            "iptables", "-A", "INPUT", "-p", "udp", "--dport", "5302", "-j", "DROP",
        ],
    );
    let d = Dropscope::start(
        &lab.b,
        &[
            "doctor",
            "--iface",
            "vb",
            "--duration",
            "60s",
            "--format",
            "json",
        ],
    );
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 5302), 555, 64);
    settle();
    let run = d.stop();
    let dx = run
        .lines
        .iter()
        .find_map(|l| l.doctor())
        .expect("a diagnosis");
    let findings = &dx.findings;
    let evidence = |cause: &str| -> String {
        let f = findings
            .iter()
            .find(|f| f.cause == cause)
            .unwrap_or_else(|| panic!("no {cause} finding in {findings:#?}"));
        f.evidence.join("\n")
    };
    if kernel_has_reasons() {
        let e = evidence("netfilter");
        assert!(e.contains("matched 555 packets"), "{e}");
    } else {
        let e = evidence("unspecified");
        assert!(
            e.contains("at nf_hook_slow+0x") && e.contains(": 555"),
            "{e}"
        );
    }
}

/// XDP on every kernel: per-source counts equal what the source sent, and
/// a source above the threshold is an attack whose top source it is.
#[test]
fn a_flood_is_detected_and_its_source_counted_on_this_kernel() {
    let lab = Lab::new();
    let mut args = WATCH_VB.to_vec();
    args.extend_from_slice(&["--source-pps", "500"]);
    let ds = lab.dropscope(&args);
    // Quiet samples first, as a real host has.
    thread::sleep(Duration::from_millis(600));
    let src: std::net::Ipv4Addr = "198.51.100.7".parse().unwrap();
    let eth = Eth {
        dst: lab.mac_bytes(&lab.b, "vb"),
        src: lab.mac_bytes(&lab.a, "va"),
        tags: vec![],
    };
    let dst: std::net::Ipv4Addr = lab.v4(2).parse().unwrap();
    let frame = eth.frame(0x0800, &ipv4(src, dst, 17, (0, false), &udp(4444, 9, 64)));
    // Under 4000 (the exact budget per CPU in a 200 ms epoch): exact counts.
    lab.send_frames(&lab.a, "va", vec![frame; 3000]);
    settle();
    let lines = ds.stop();
    let start = *lines
        .starts()
        .first()
        .unwrap_or_else(|| panic!("no attack; last report: {:#?}", lines.last()));
    assert_eq!(start.top_sources[0].address, src.to_string(), "{start:#?}");
    let last = lines.last().unwrap();
    assert_eq!(source_packets(last, &src.to_string()), 3000, "{last:#?}");
}

/// The same programs can be loaded twice in a row (nothing is left
/// behind by the first run), and the XDP hook is free once it ends.
#[test]
fn nothing_stays_attached_after_a_run() {
    let lab = Lab::new();
    for _ in 0..2 {
        let ds = Dropscope::start(&lab.b, &WATCH_VB);
        ds.stop();
    }
    let link = sh(&["ip", "netns", "exec", &lab.b, "ip", "link", "show", "vb"]);
    assert!(!link.contains("xdp"), "{link}");
}
