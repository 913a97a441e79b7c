//! Start, stream, stop: reports are flushed line by line, --duration and
//! signals end with exit 0, and nothing stays attached afterwards. Its own
//! test binary, so no other dropscope runs while it counts programs.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{Lab, dropscope_bin};

fn our_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|n| {
            n.starts_with("kfree_skb_btf")
                || n.starts_with("dropscope_xdp")
                || n.starts_with("kfree_skb_tp")
        })
        .collect()
}

/// Program teardown is deferred (RCU) in the kernel: wait a little for it.
fn programs_gone() -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !our_programs().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    our_programs().is_empty()
}

/// The two tests count loaded programs, so they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn has_xdp(lab: &Lab) -> bool {
    lab.ip(&lab.b, &["-d", "link", "show", "vb"])
        .contains("xdp")
}

#[test]
fn streams_json_lines_and_detaches_on_sigterm() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    assert!(
        programs_gone(),
        "programs left by someone else: {:?}",
        our_programs()
    );
    let ds = lab.dropscope(&[
        "watch",
        "--iface",
        "vb",
        "--interval",
        "100ms",
        "--format",
        "json",
    ]);
    assert!(has_xdp(&lab), "XDP attached while running");
    assert!(!our_programs().is_empty(), "programs loaded while running");
    // Each line arrives while dropscope is still running: flushed per interval.
    let t = Instant::now();
    for _ in 0..3 {
        let r = ds
            .next_line(Duration::from_secs(5))
            .expect("a report each interval");
        assert_eq!(
            r.watch().expect("a watch report").schema,
            "dropscope.watch/1"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    let pid = ds_pid(&lab);
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(programs_gone(), "left attached: {:?}", our_programs());
    assert!(!has_xdp(&lab), "XDP left on vb");
    drop(ds);
}

/// dropscope's pid inside namespace b (the child we spawned is `ip netns exec`,
/// which execs dropscope in place, so they are the same process).
fn ds_pid(lab: &Lab) -> i32 {
    let out = lab.exec(&lab.b, &["ip", "netns", "pids", &lab.b]);
    out.split_whitespace()
        .next()
        .expect("a pid")
        .parse()
        .unwrap()
}

#[test]
fn duration_ends_with_exit_zero_after_the_last_line() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.b, &dropscope_bin()])
        .args([
            "watch",
            "--iface",
            "vb",
            "--interval",
            "250ms",
            "--duration",
            "1s",
            "--format",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let run = integration_tests::parse_stdout(&text);
    assert_eq!(run.reports().count(), 4, "{text}");
    assert_eq!(run.lines.len(), 4, "{text}");
    // The last line is the one due at the deadline: not before it, and the
    // count above (4 at 250 ms) says the run did not go on past it. No
    // upper bound in seconds: a slow VM may wake late, which is no defect.
    let elapsed: Vec<f64> = run.reports().map(|r| r.elapsed_s).collect();
    assert!(elapsed.windows(2).all(|w| w[0] < w[1]), "{elapsed:?}");
    assert!(
        elapsed[3] >= 1.0,
        "last line before --duration: {elapsed:?}"
    );
    assert!(programs_gone(), "left attached: {:?}", our_programs());
}

#[test]
fn sigkill_leaves_nothing_attached() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let ds = lab.dropscope(&["watch", "--iface", "vb", "--format", "json"]);
    assert!(has_xdp(&lab));
    unsafe { libc::kill(ds_pid(&lab), libc::SIGKILL) };
    // Links are file descriptors: the kernel detaches when the process dies.
    assert!(programs_gone(), "left loaded: {:?}", our_programs());
    assert!(!has_xdp(&lab), "XDP left on vb");
    drop(ds);
}

#[test]
fn a_second_instance_on_the_same_interface_refuses_clearly() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new();
    let first = lab.dropscope(&[
        "watch",
        "--iface",
        "vb",
        "--format",
        "json",
        "--interval",
        "200ms",
    ]);
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.b, &dropscope_bin()])
        // Its own program asked for: the hook is taken (auto would
        // observe the first instance's program instead).
        .args([
            "watch",
            "--iface",
            "vb",
            "--duration",
            "1s",
            "--xdp-mode",
            "generic",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("interface vb already has an XDP program attached"),
        "{err}"
    );
    // The first one is untouched and still reporting.
    assert!(has_xdp(&lab));
    assert!(first.next_line(Duration::from_secs(3)).is_some());
    first.stop();
}
