//! The kernel matrix: Debian's own kernel images booted under qemu with
//! virtme-ng, each running the real-kernel tests that depend on the
//! kernel. The VM shares this machine's root read-only, so the binaries
//! built here run inside unchanged; results come back through a writable
//! shared directory (vng's own exit status is not reliable: with no script
//! I/O port it falls back to the console and exits 255 even on success).

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, run, succeeds, workspace_root};

/// How long a guest may take to start its script: TCG boots these kernels
/// in seconds to a minute.
const BOOT_BOUND: Duration = Duration::from_secs(240);

/// A kernel of the matrix: Debian's package, and the suite it is in when
/// that is not one the machine's own sources carry.
pub(crate) struct Kernel {
    pub(crate) name: &'static str,
    package: &'static str,
    /// `uname -r` of the image.
    release: &'static str,
    suite: Option<&'static str>,
    /// The real-kernel tests this kernel runs: (test binary, exact names;
    /// empty: all of it).
    tests: &'static [(&'static str, &'static [&'static str])],
}

/// What a kernel with drop reasons runs: everything whose result depends
/// on the kernel (loading, counting against oracles, attribution, XDP and
/// its triggers, the blocklist, PCAP, doctor, reasons, Prometheus, top).
const FULL: &[(&str, &[&str])] = &[
    ("host", &[]),
    ("observe", &[]),
    (
        "kernels",
        &[
            "start_line_says_what_runs_on_this_kernel",
            "reasons_are_the_running_kernels_own",
            "doctor_names_where_drops_happen_on_this_kernel",
            "nothing_stays_attached_after_a_run",
        ],
    ),
    ("drops", &[]),
    (
        "flood",
        &[
            "source_threshold_fires_in_kernel_with_few_sources",
            "syn_flood_from_random_sources",
            "udp_reflection_names_the_protocol",
        ],
    ),
    (
        "mitigation",
        &[
            "blocklist_drops_exactly_the_blocked_sources",
            "attack_pcap_has_the_onset_and_is_read_by_tshark",
        ],
    ),
    ("exporters", &["metrics_endpoint_is_exact_and_valid"]),
    ("top", &["top_fits_80x24_and_answers_keys"]),
    ("errors", &["reasons_lists_kernel_names_with_categories"]),
    ("reduced", &[]),
    ("lifecycle", &[]),
    ("faults", &[]),
    ("hostile", &["every_truncation_point_is_counted_exactly"]),
];

/// Before 5.17 there are no drop reasons: the tests that say what runs
/// there instead (drops by location, XDP shapes, sources, floods).
const NO_REASONS: &[(&str, &[&str])] = &[
    ("host", &[]),
    // Everything but the flood: the live-frames generator needs 5.18+.
    (
        "observe",
        &[
            "observes_xdp_filter_in_skb_mode",
            "observes_xdp_filter_in_native_mode",
            "dispatcher_components_are_counted_one_by_one",
            "doctor_says_which_xdp_program_drops_what",
            "follows_a_replaced_program",
            "takes_the_free_hook_when_the_observed_program_goes",
            "one_program_on_two_interfaces_counts_each_packet_once",
            "xdp_filter_survives_sigterm_and_sigkill",
            "taken_hook_refusals_are_one_line",
        ],
    ),
    ("kernels", &[]),
    (
        "drops",
        &[
            "per_source_counts_equal_what_each_source_sent",
            "packet_shapes_vlan_qinq_fragments_and_tcp_flags",
            "interfaces_past_the_fixed_slots_are_counted_exactly",
        ],
    ),
    (
        "mitigation",
        &["blocklist_drops_exactly_the_blocked_sources"],
    ),
    (
        "lifecycle",
        &[
            "sigkill_leaves_nothing_attached",
            "a_second_instance_on_the_same_interface_refuses_clearly",
        ],
    ),
    (
        "faults",
        &["driver_without_native_xdp_runs_generic_and_says_why"],
    ),
];

pub(crate) const MATRIX: &[Kernel] = &[
    Kernel {
        name: "5.10",
        package: "linux-image-5.10.0-32-amd64",
        release: "5.10.0-32-amd64",
        suite: Some("bullseye"),
        tests: NO_REASONS,
    },
    Kernel {
        name: "6.1",
        package: "linux-image-6.1.0-50-amd64",
        release: "6.1.0-50-amd64",
        suite: None,
        tests: FULL,
    },
    Kernel {
        name: "6.12",
        package: "linux-image-6.12.111+deb12-amd64",
        release: "6.12.111+deb12-amd64",
        suite: None,
        tests: FULL,
    },
];

/// `all`, or names from [`MATRIX`] separated by commas.
pub(crate) fn select(list: &str) -> Result<Vec<&'static Kernel>> {
    if list == "all" {
        return Ok(MATRIX.iter().collect());
    }
    list.split(',')
        .map(|n| {
            MATRIX.iter().find(|k| k.name == n.trim()).with_context(|| {
                let names: Vec<&str> = MATRIX.iter().map(|k| k.name).collect();
                format!(
                    "no kernel {n} in the matrix (have: {}, all)",
                    names.join(", ")
                )
            })
        })
        .collect()
}

fn cache_dir() -> PathBuf {
    // Not under /var/cache: the VM does not see it.
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/dropscope/kernels")
}

/// The kernel's unpacked image (vmlinuz and modules), fetched once.
fn image(k: &Kernel) -> Result<PathBuf> {
    let dir = cache_dir().join(k.release);
    let vmlinuz = dir.join(format!("boot/vmlinuz-{}", k.release));
    if vmlinuz.exists()
        && dir
            .join("lib/modules")
            .join(k.release)
            .join("modules.dep")
            .exists()
    {
        return Ok(vmlinuz);
    }
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    eprintln!("matrix: fetching {} (Debian package)", k.package);
    let mut get = Command::new("apt-get");
    get.current_dir(&debs);
    if let Some(suite) = k.suite {
        // A private sources list for the same archive the machine uses.
        let apt = cache_dir().join(format!("apt-{suite}"));
        std::fs::create_dir_all(apt.join("lists/partial"))?;
        std::fs::create_dir_all(apt.join("cache/archives/partial"))?;
        let uri = archive_uri();
        std::fs::write(
            apt.join("sources.list"),
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n"
            ),
        )?;
        let opts = [
            format!(
                "Dir::Etc::sourcelist={}",
                apt.join("sources.list").display()
            ),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={}", apt.join("lists").display()),
            format!("Dir::Cache={}", apt.join("cache").display()),
        ];
        let mut update = Command::new("apt-get");
        update.arg("-q");
        for o in &opts {
            update.args(["-o", o]);
        }
        run(update.arg("update")).with_context(|| format!("apt-get update for {suite}"))?;
        for o in &opts {
            get.args(["-o", o]);
        }
    }
    run(get.args(["-q", "download", k.package]))
        .with_context(|| format!("downloading {}", k.package))?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}_", k.package)) && n.ends_with(".deb"))
        })
        .with_context(|| {
            format!(
                "{} downloaded but not found in {}",
                k.package,
                debs.display()
            )
        })?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&dir))?;
    run(Command::new("depmod").arg("-b").arg(&dir).arg(k.release))?;
    let _ = std::fs::remove_file(&deb);
    if !vmlinuz.exists() {
        bail!("{} has no {}", k.package, vmlinuz.display());
    }
    Ok(vmlinuz)
}

/// The Debian archive the machine's own apt sources use for its release
/// (the entry whose suite is the machine's codename, not security or a
/// third-party repository).
fn archive_uri() -> String {
    let codename = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .unwrap_or_else(|| "bookworm".into());
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        // deb822 stanzas: "URIs:" and "Suites:" lines.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
                && suites.split_whitespace().any(|s| s == codename)
                && let Some(u) = uris.split_whitespace().next()
            {
                return u.to_string();
            }
        }
        // One-line entries: "deb [options] URI suite components".
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("deb") {
                continue;
            }
            let rest: Vec<&str> = w.skip_while(|t| !t.contains("://")).collect();
            if rest.len() >= 2 && rest[1] == codename {
                return rest[0].to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// The test binaries of the integration-tests package, by target name.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let out = cargo()
        .args([
            "test",
            "-p",
            "integration-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["target"]["kind"][0] != "test" {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            bins.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(bins)
}

/// The script the VM runs: modules, bpffs, then each test binary, its
/// output and status written to `out`.
fn guest_script(k: &Kernel, bins: &[(String, PathBuf)], bin: &Path, out: &Path) -> Result<String> {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!("out={}\n", out.display()));
    s.push_str("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    s.push_str("uname -r > $out/uname\n");
    // What the tests use that Debian's kernels build as modules.
    s.push_str(
        "modprobe -a veth nf_tables nft_compat nft_chain_nat xt_tcpudp iptable_filter ip6table_filter sch_tbf sch_ingress cls_bpf 2> $out/modprobe.log\n",
    );
    s.push_str("mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf\n");
    s.push_str(&format!("export DROPSCOPE_BIN={}\n", bin.display()));
    s.push_str("export DROPSCOPE_MATRIX=1\n");
    s.push_str(&format!("cd {}\n", workspace_root().display()));
    for (test, names) in k.tests {
        let exe = bins
            .iter()
            .find(|(n, _)| n == test)
            .map(|(_, p)| p)
            .with_context(|| format!("no test binary {test}"))?;
        let filter = if names.is_empty() {
            String::new()
        } else {
            format!(" --exact {}", names.join(" "))
        };
        s.push_str(&format!(
            "t=$SECONDS; timeout 900 {} --test-threads 1{filter} > $out/{test}.log 2>&1; echo \"{test} $? $((SECONDS - t))\" >> $out/status\n",
            exe.display()
        ));
    }
    s.push_str("echo done > $out/done\n");
    Ok(s)
}

/// The virtme-ng command: on PATH, or where python3 puts scripts (a
/// non-login shell may not have pyenv's shims on PATH).
pub(crate) fn vng() -> Option<PathBuf> {
    if succeeds(Command::new("vng").arg("--version")) {
        return Some(PathBuf::from("vng"));
    }
    let scripts = crate::output(Command::new("python3").args([
        "-c",
        "import sysconfig; print(sysconfig.get_path('scripts'))",
    ]));
    [scripts.trim(), "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join("vng"))
        .find(|p| succeeds(Command::new(p).arg("--version")))
}

/// Boots each kernel and runs its tests; fails if any kernel does not boot
/// or any test fails. Returns (passed, failed) summed over kernels.
///
/// VMs run side by side, one per three CPUs: under TCG one VM keeps about
/// 1.3 CPUs busy on average and both of its vCPUs in bursts. Two VMs on a
/// 2-CPU machine took 1.5x as long each and failed timing-bound tests
/// (a 1 s `--duration` ending 0.2 s late, `top`'s first frame after 15 s),
/// so a 2-CPU machine boots them one at a time.
pub(crate) fn run_matrix(kernels: &[&Kernel], bin: &Path) -> Result<(u64, u64)> {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    let Some(vng) = vng() else {
        bail!("virtme-ng is missing: cargo xtask setup installs it (pip install virtme-ng)");
    };
    // The VMs run copies: a rebuild while the matrix runs changes nothing.
    let stage = std::env::temp_dir().join("dropscope-matrix-bin");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let mut bins = Vec::new();
    for (name, exe) in test_binaries()? {
        if MATRIX
            .iter()
            .any(|k| k.tests.iter().any(|(t, _)| *t == name))
        {
            let copy = stage.join(&name);
            std::fs::copy(&exe, &copy).with_context(|| format!("copying {}", exe.display()))?;
            bins.push((name, copy));
        }
    }
    let bin_copy = stage.join("dropscope");
    std::fs::copy(bin, &bin_copy).with_context(|| format!("copying {}", bin.display()))?;
    // Images first, one at a time (apt and dpkg-deb share the cache).
    let images = kernels
        .iter()
        .map(|k| image(k))
        .collect::<Result<Vec<_>>>()?;
    let at_once = (std::thread::available_parallelism().map_or(1, |n| n.get()) / 3)
        .clamp(1, kernels.len().max(1));
    let next = AtomicUsize::new(0);
    let runs: Mutex<Vec<KernelRun>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..at_once {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(k) = kernels.get(i) else { break };
                    let try_boot = || {
                        boot(k, &vng, &images[i], &bins, &bin_copy).unwrap_or_else(|e| KernelRun {
                            broken: vec![format!("{}: {e:#}", k.name)],
                            ..KernelRun::default()
                        })
                    };
                    let mut run = try_boot();
                    // A TCG boot that hangs is the emulator's, not the
                    // kernel's (seen once in many runs): boot once more.
                    if run.not_booted {
                        eprintln!(
                            "matrix: Linux {} did not boot; booting it again\n{}",
                            k.name, run.report
                        );
                        run = try_boot();
                    }
                    // Each kernel's lines together, as it finishes.
                    print!("{}", run.report);
                    runs.lock().unwrap().push(run);
                }
            });
        }
    });
    let runs = runs.into_inner().unwrap();
    let passed = runs.iter().map(|r| r.passed).sum();
    let failed = runs.iter().map(|r| r.failed).sum();
    let broken: Vec<String> = runs.into_iter().flat_map(|r| r.broken).collect();
    if !broken.is_empty() {
        bail!("kernel matrix: {}", broken.join("; "));
    }
    Ok((passed, failed))
}

/// What one kernel's VM gave.
#[derive(Default)]
struct KernelRun {
    passed: u64,
    failed: u64,
    /// The guest never started its script.
    not_booted: bool,
    /// What failed, one entry each.
    broken: Vec<String>,
    /// The lines to print for this kernel.
    report: String,
}

/// Boots `k` and runs its tests in the VM.
fn boot(
    k: &Kernel,
    vng: &Path,
    vmlinuz: &Path,
    bins: &[(String, PathBuf)],
    bin: &Path,
) -> Result<KernelRun> {
    use std::fmt::Write;
    let mut r = KernelRun::default();
    let out = std::env::temp_dir().join(format!("dropscope-matrix-{}", k.name));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let script = std::env::temp_dir().join(format!("dropscope-matrix-{}.sh", k.name));
    std::fs::write(&script, guest_script(k, bins, bin, &out)?)?;
    eprintln!(
        "matrix: booting Linux {} ({}) under qemu (TCG)",
        k.name, k.release
    );
    let started = Instant::now();
    // KVM stalls on these machines (nested virtualisation): TCG. One VM
    // per three CPUs runs at its own speed (617-1059 s here): the bound of
    // a VM alone holds.
    let mut vm = Command::new("timeout")
        .arg("1500")
        .arg(vng)
        .arg("-r")
        .arg(vmlinuz)
        .args(["--disable-kvm", "--cpus", "2", "--memory", "4G"])
        .arg("--rwdir")
        .arg(&out)
        .arg("--exec")
        .arg(format!("bash {}", script.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out.join("console.log"))?)
        .stderr(std::fs::File::create(out.join("vng.log"))?)
        // Its own group: a VM that does not boot is killed whole.
        .process_group(0)
        .spawn()
        .context("running vng")?;
    let status = loop {
        if let Some(status) = vm.try_wait()? {
            break status.to_string();
        }
        // The script's first line writes uname: a guest that has not
        // within the bound (seconds, normally) hangs in its boot.
        if started.elapsed() > BOOT_BOUND && !out.join("uname").exists() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", vm.id())])
                .status();
            let _ = vm.wait();
            break format!("killed: no script after {} s", BOOT_BOUND.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let secs = started.elapsed().as_secs();
    let uname = std::fs::read_to_string(out.join("uname")).unwrap_or_default();
    if uname.trim() != k.release {
        r.not_booted = true;
        for f in ["vng.log", "console.log"] {
            let text = std::fs::read_to_string(out.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            writeln!(r.report, "---- Linux {}: {f} (last lines) ----", k.name)?;
            for l in tail.iter().rev() {
                writeln!(r.report, "{l}")?;
            }
        }
        r.broken
            .push(format!("{}: did not boot (vng: {status})", k.name));
        return Ok(r);
    }
    let statuses = std::fs::read_to_string(out.join("status")).unwrap_or_default();
    for (test, _) in k.tests {
        let log = std::fs::read_to_string(out.join(format!("{test}.log"))).unwrap_or_default();
        // "<test> <exit status> <seconds>", one line per test binary.
        let line = statuses
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{test} ")));
        let mut fields = line.unwrap_or("").split_whitespace();
        let rc = fields.next();
        let took = fields.next().unwrap_or("?");
        let (p, f) = crate::count_results(&log);
        r.passed += p;
        r.failed += f;
        if rc != Some("0") || p == 0 {
            writeln!(
                r.report,
                "---- Linux {}: {test} (exit {}) ----\n{log}",
                k.name,
                rc.unwrap_or("none")
            )?;
            r.broken.push(format!(
                "{}: {test} failed (exit {})",
                k.name,
                rc.unwrap_or("none")
            ));
        } else {
            for l in log
                .lines()
                .filter(|l| l.starts_with("test ") && l.contains(" ... "))
            {
                writeln!(r.report, "[{}] {l}", k.name)?;
            }
            // Where a VM's time goes, to keep the matrix within CI's budget.
            writeln!(r.report, "[{}] {test}: {p} passed in {took} s", k.name)?;
        }
    }
    if !out.join("done").exists() {
        r.broken.push(format!(
            "{}: the VM stopped before the tests finished",
            k.name
        ));
    }
    writeln!(
        r.report,
        "matrix: Linux {} ({}): {} passed, {} failed in {secs} s",
        k.name, k.release, r.passed, r.failed
    )?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_name_and_all() {
        assert_eq!(select("all").unwrap().len(), MATRIX.len());
        let two = select("6.1,6.12").unwrap();
        assert_eq!(
            two.iter().map(|k| k.name).collect::<Vec<_>>(),
            ["6.1", "6.12"]
        );
        let err = select("4.19").err().unwrap().to_string();
        assert!(err.contains("have: 5.10, 6.1, 6.12"), "{err}");
    }
}
