//! Bad input gets one clear line and a non-zero exit.

use std::process::{Command, Stdio};

use integration_tests::dropscope_bin;

fn run(prefix: &[&str], args: &[&str]) -> (i32, String) {
    let bin = dropscope_bin();
    let mut cmd = if prefix.is_empty() {
        Command::new(&bin)
    } else {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg(&bin);
        c
    };
    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_interface_is_one_line_naming_the_choices() {
    let (code, err) = run(&[], &["watch", "--iface", "nosuch0", "--duration", "1s"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: unknown interface 'nosuch0' (available: "),
        "{err}"
    );
    assert!(err.contains("lo"), "{err}");
}

#[test]
fn missing_capabilities_say_what_to_do() {
    // Root without any capability, as an unprivileged user would be.
    let (code, err) = run(
        &["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"],
        &["watch", "--iface", "lo", "--duration", "1s"],
    );
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"),
        "{err}"
    );
}

#[test]
fn bad_durations_are_rejected_by_the_parser() {
    let (code, err) = run(&[], &["watch", "--interval", "0s"]);
    assert_eq!(code, 2);
    assert!(err.contains("must be more than zero"), "{err}");
}

#[test]
fn reasons_lists_kernel_names_with_categories() {
    let out = Command::new(dropscope_bin())
        .arg("reasons")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("NO_SOCKET") && l.contains("no-socket"))
    );
    assert!(
        text.lines()
            .any(|l| l.contains("NETFILTER_DROP") && l.contains("netfilter"))
    );
    assert!(!text.contains("CONSUMED"), "not a drop");
}

/// Thresholds are validated the same way from a flag and from the config
/// file: one line that names where the bad value came from.
#[test]
fn bad_thresholds_are_refused_from_flags_and_files_alike() {
    let (code, err) = run(&[], &["watch", "--syn-pps=-1", "--duration", "1s"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: --syn-pps: thresholds are rates of 0 or more"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("dropscope-thresholds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[thresholds]\nsource_pps = nan\n").unwrap();
    let (code, err) = run(
        &[],
        &[
            "watch",
            "--config",
            file.to_str().unwrap(),
            "--duration",
            "1s",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("[thresholds] source_pps: thresholds are rates of 0 or more"),
        "{err}"
    );
}
