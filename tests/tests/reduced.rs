//! Reduced modes and least privilege: what a kernel or a service manager
//! takes away, dropscope says and works around.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use dropscope::schema::Report;
use integration_tests::{Lab, drops, dropscope_bin, sockaddr as addr};

/// Without BTF drops can't be told apart by namespace: the tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `wrapper... dropscope watch <args> --format json` inside namespace
/// b, sends `count` datagrams to a closed `port` once it says it is ready,
/// stops it with SIGTERM, and returns (stderr, last report, UdpNoPorts
/// delta).
fn watch_closed_port(
    lab: &Lab,
    wrapper: &[&str],
    args: &[&str],
    port: u16,
    count: u32,
) -> (String, Report, u64) {
    use std::io::{BufRead, BufReader, Read};
    let before = lab.nstat(&lab.b, "UdpNoPorts");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.b])
        .args(wrapper)
        .arg(dropscope_bin())
        .args(["watch", "--iface", "vb", "--interval", "300ms"])
        .args(["--format", "json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr: notes, then the ready line ("dropscope: ..."); the reader
    // keeps the whole text for the caller.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("dropscope:") {
                let _ = ready_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut stdout = child.stdout.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(20)).is_ok();
    if ready {
        lab.send_udp(
            &lab.a,
            addr(&lab.v4(1), 0),
            addr(&lab.v4(2), port),
            count,
            32,
        );
        // Two intervals: the last datagrams are in a report.
        thread::sleep(Duration::from_millis(700));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let err = err_reader.join().unwrap();
    let stdout = out_reader.join().unwrap();
    assert!(ready, "never ready: {err}");
    assert!(status.success(), "{err}");
    let last = integration_tests::parse_stdout(&stdout).into_last();
    (err, last, lab.nstat(&lab.b, "UdpNoPorts") - before)
}

/// Without BTF: the classic tracepoint (layout and reason names from
/// tracefs), no per-interface split, and a note that says so.
#[test]
fn without_btf_it_counts_through_the_classic_tracepoint() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let (err, last, delta) = watch_closed_port(
        &lab,
        &["env", "DROPSCOPE_VMLINUX_BTF=/nonexistent/vmlinux"],
        &["--xdp-mode", "none"],
        6200,
        88,
    );
    assert!(err.contains("kernel has no BTF"), "{err}");
    assert!(err.contains("drops via tracepoint skb:kfree_skb"), "{err}");
    assert_eq!(delta, 88);
    // No sk_buff offsets: rows have no interface, and every namespace counts.
    let counted = drops(&last, "NO_SOCKET", "-");
    // Other namespaces of the host count too; on a test machine they are quiet.
    assert!(
        counted >= delta && counted <= delta + 5,
        "{counted}: {:?}",
        last.drops
    );
}

/// With only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (what the systemd unit
/// grants), everything works.
#[test]
fn runs_with_only_bpf_perfmon_and_net_admin() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let (err, last, delta) = watch_closed_port(
        &lab,
        &[
            "setpriv",
            "--bounding-set=-all,+bpf,+perfmon,+net_admin",
            "--",
        ],
        &["--own-netns"],
        6201,
        66,
    );
    assert!(
        err.contains("drops via tp_btf/kfree_skb; XDP on vb"),
        "{err}"
    );
    assert_eq!(drops(&last, "NO_SOCKET", "vb"), delta);
    assert_eq!(delta, 66);
}

/// Kernels where the drop hook can't be had: no BTF and no tracefs, or a
/// kfree_skb tracepoint without the reason field (before 5.17). dropscope
/// runs XDP-only, says exactly what is missing, and XDP counts stay exact.
#[test]
fn without_a_drop_hook_it_runs_xdp_only_and_says_why() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let cases = [(
        "DROPSCOPE_TRACEFS=/nonexistent/tracefs".to_string(),
        "no tracefs at /nonexistent/tracefs",
    )];
    for (i, (tracefs, why)) in cases.iter().enumerate() {
        let (err, last, delta) = watch_closed_port(
            &lab,
            &["env", "DROPSCOPE_VMLINUX_BTF=/nonexistent/vmlinux", tracefs],
            &[],
            6300 + i as u16,
            50,
        );
        assert!(err.contains(why), "{err}");
        assert!(err.contains("running XDP-only"), "{err}");
        assert!(err.contains("drops via none; XDP on vb"), "{err}");
        assert_eq!(delta, 50, "the datagrams reached the closed port");
        // No drop rows without a hook, and XDP saw exactly the datagrams
        // the test sent (a stray neighbour packet may come and go around
        // start-up, so the oracle is the UDP count).
        assert_eq!(last.drops.len(), 0);
        assert_eq!(
            integration_tests::iface(&last, "vb").total.protocols["udp"],
            50,
            "XDP's UDP count vs the datagrams sent"
        );
    }
}

/// A kfree_skb record without a reason (Linux before 5.17, simulated with
/// a 5.10 kernel's format over this kernel's tracepoint, whose first
/// fields sit at the same offsets): every event is a drop, counted as
/// NOT_SPECIFIED by kernel location, and one note says why. The kernel
/// matrix proves the same on a real 5.10 (tests/kernels.rs).
#[test]
fn without_drop_reasons_drops_are_counted_by_kernel_location() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let fake = lab.temp_dir("tracefs");
    let format_dir = fake.0.join("events/skb/kfree_skb");
    std::fs::create_dir_all(&format_dir).unwrap();
    std::fs::write(
        format_dir.join("format"),
        "name: kfree_skb\nID: 1234\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\nprint fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n",
    )
    .unwrap();
    let tracefs = format!("DROPSCOPE_TRACEFS={}", fake.0.display());
    let (err, last, delta) = watch_closed_port(
        &lab,
        &[
            "env",
            "DROPSCOPE_VMLINUX_BTF=/nonexistent/vmlinux",
            &tracefs,
        ],
        &[],
        6305,
        50,
    );
    assert!(
        err.contains("drops via tracepoint skb:kfree_skb (by kernel location); XDP on vb"),
        "{err}"
    );
    let why: Vec<&str> = err.lines().filter(|l| l.contains("5.17")).collect();
    assert_eq!(why.len(), 1, "{err}");
    assert!(why[0].starts_with("note:"), "{err}");
    assert_eq!(delta, 50, "the datagrams reached the closed port");
    let at_udp: u64 = last
        .locations
        .iter()
        .filter(|l| l.reason == "NOT_SPECIFIED" && l.location.starts_with("__udp4_lib_rcv+0x"))
        .map(|l| l.total)
        .sum();
    assert_eq!(at_udp, delta, "{:#?}", last.locations);
    assert!(drops(&last, "NOT_SPECIFIED", "-") >= delta);
}

/// Kernels without batch lookups for a map type (5.10 for some) are read
/// one key at a time (simulated here; real in the 5.10 matrix run): the
/// same exact counts.
#[test]
fn without_batch_lookups_the_counts_are_the_same() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let (err, last, delta) = watch_closed_port(
        &lab,
        &["env", "DROPSCOPE_NO_BATCH=1"],
        &["--own-netns"],
        6320,
        60,
    );
    assert_eq!(delta, 60, "the datagrams reached the closed port");
    assert_eq!(drops(&last, "NO_SOCKET", "vb"), delta, "{err}");
    assert_eq!(
        integration_tests::drop_source(&last, "NO_SOCKET", &lab.v4(1)),
        delta
    );
    assert_eq!(
        integration_tests::source_packets(&last, &lab.v4(1)),
        delta,
        "per-source XDP count"
    );
    assert!(!err.contains("BATCH"), "nothing scary: {err}");
}

/// `--kfree-hook none` chooses the XDP-only mode: no drop program, XDP
/// exact; with no XDP interface either, one clear line.
#[test]
fn kfree_hook_none_is_xdp_only_by_choice() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let (err, last, delta) = watch_closed_port(&lab, &[], &["--kfree-hook", "none"], 6310, 40);
    assert!(err.contains("--kfree-hook none"), "{err}");
    assert_eq!(delta, 40, "the datagrams reached the closed port");
    assert_eq!(last.drops.len(), 0);
    assert_eq!(
        integration_tests::iface(&last, "vb").total.protocols["udp"],
        40
    );
    let out = Command::new(dropscope_bin())
        .args(["watch", "--xdp-mode", "none", "--kfree-hook", "none"])
        .args(["--duration", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nothing to observe"), "{err}");
}
