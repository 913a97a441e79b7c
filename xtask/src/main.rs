//! Project tasks: `cargo xtask setup | build | run | test | bench | fuzz`.
//!
//! `setup` is idempotent and quick when everything is present: nightly
//! rust-src, Debian's LLVM 22 (bpf-linker links against it), bpf-linker built
//! with the llvm-22 feature, and the tools the integration tests drive
//! (iproute2, iptables). Where it can't install (not root, no apt) it prints
//! the exact command instead.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod dist;
mod kernels;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing needs (idempotent).
    Setup,
    /// Build dropscope (eBPF programs included).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run dropscope (default: `watch` on the default-route interface).
    Run {
        /// Arguments for dropscope; default `watch`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks side by side; prints the table and writes BENCHMARKS.md.
    Bench {
        /// More trials and longer windows (the default is a quick run).
        #[arg(long)]
        full: bool,
        /// Only the sections whose names start with this (xdp-test,
        /// xdp-napi, throughput, latency, kfree, droppath, user, observe);
        /// prints the rows and leaves BENCHMARKS.md alone.
        #[arg(long, value_name = "SECTION")]
        only: Option<String>,
    },
    /// What users install, under target/dist: the static binary (musl, eBPF
    /// embedded), its man pages, completions and default config, and the
    /// Debian package.
    Dist,
    /// Coverage-guided fuzzing (libFuzzer) of the frame parser XDP runs.
    Fuzz {
        /// How long to fuzz.
        #[arg(long, default_value = "60")]
        seconds: u64,
    },
    /// Set up, build, then run every test: unit and real-kernel integration
    /// on this kernel, the kernel matrix (Debian's 5.10, 6.1 and 6.12 booted
    /// under qemu), then a minute of coverage-guided fuzzing.
    Test {
        /// Run only the kernel matrix, on these kernels (e.g. `6.1,6.12`, or
        /// `all`).
        #[arg(long)]
        kernels: Option<String>,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const CARGO_DEB_VERSION: &str = "3.8.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const APT_BUILD: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Tools the integration tests run: ip/nstat/tc/ss, iptables, setpriv,
/// ethtool, the real flood and load tools, and the real consumers of
/// dropscope's output: Prometheus and promtool, tshark, tmux.
/// What the kernel matrix boots Debian's kernels with (virtme-ng runs
/// qemu; busybox and kmod build its initramfs and load modules).
const APT_MATRIX: [&str; 3] = ["qemu-system-x86", "busybox-static", "kmod"];
const VIRTME_NG_VERSION: &str = "1.42";
const APT_TEST: [(&str, &str); 17] = [
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("setpriv", "util-linux"),
    ("ethtool", "ethtool"),
    ("hping3", "hping3"),
    ("iperf3", "iperf3"),
    // The detection corpus' slow steady ping.
    ("ping", "iputils-ping"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("tshark", "tshark"),
    ("tmux", "tmux"),
    ("nft", "nftables"),
    // Observe mode's tests run beside a real XDP firewall (and libxdp's
    // dispatcher); nsenter enters only a namespace's network.
    ("xdp-filter", "xdp-tools"),
    ("nsenter", "util-linux"),
    // The package's checks: lintian on the .deb, systemd-analyze verify on
    // the installed unit.
    ("lintian", "lintian"),
    ("systemd-analyze", "systemd"),
    // libFuzzer (cargo xtask fuzz) is C++.
    ("g++", "g++"),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).trim() == "0"
}

fn have(bin: &str) -> bool {
    succeeds(Command::new("sh").args(["-c", &format!("command -v {bin}")]))
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .contains("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !(is_root() && have("apt-get")) {
        bail!(
            "missing packages; run: sudo apt-get update && sudo apt-get install -y {}",
            missing.join(" ")
        );
    }
    eprintln!("setup: apt-get install {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn setup() -> Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        eprintln!("setup: installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context(
            "the eBPF programs need a nightly toolchain: run `rustup toolchain install nightly`",
        )?;
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("run `rustup component add rust-src --toolchain nightly`")?;
    }
    let linker_ok =
        output(Command::new("bpf-linker").arg("--version")).contains(BPF_LINKER_VERSION);
    if !linker_ok {
        apt_install(&APT_BUILD)?;
        eprintln!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)"
        );
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))
        .with_context(|| {
            format!(
                "run: LLVM_PREFIX={LLVM_PREFIX} LLVM_SYS_221_PREFIX={LLVM_PREFIX} cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-22"
            )
        })?;
    }
    let missing: Vec<&str> = APT_TEST
        .iter()
        .filter(|(bin, _)| !have(bin) && !Path::new(&format!("/usr/sbin/{bin}")).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install(&missing)?;
    if !succeeds(Command::new("rustup").args(["run", "nightly", "cargo", "fuzz", "--version"])) {
        eprintln!("setup: installing cargo-fuzz (about a minute)");
        run(cargo().args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]))
        .context(format!(
            "run `cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked`"
        ))?;
    }
    // `cargo xtask dist`: the static binary and its Debian package.
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]));
    if !targets.lines().any(|l| l.trim() == dist::MUSL) {
        eprintln!("setup: adding the {} target", dist::MUSL);
        run(Command::new("rustup").args(["target", "add", dist::MUSL]))
            .with_context(|| format!("run `rustup target add {}`", dist::MUSL))?;
    }
    if !output(Command::new("cargo").args(["deb", "--version"])).contains(CARGO_DEB_VERSION) {
        eprintln!("setup: installing cargo-deb {CARGO_DEB_VERSION} (about a minute)");
        run(cargo().args([
            "install",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
            "--locked",
        ]))
        .context(format!(
            "run `cargo install cargo-deb --version {CARGO_DEB_VERSION} --locked`"
        ))?;
    }
    apt_install(&APT_MATRIX)?;
    if kernels::vng().is_none() {
        eprintln!("setup: installing virtme-ng {VIRTME_NG_VERSION} (PyPI)");
        let pkg = format!("virtme-ng=={VIRTME_NG_VERSION}");
        let pip = |extra: &[&str]| {
            succeeds(
                Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet"])
                    .args(extra)
                    .arg(&pkg),
            )
        };
        // Debian's own python3 refuses without the flag (PEP 668).
        if !pip(&[]) && !pip(&["--break-system-packages"]) {
            bail!("could not install virtme-ng: run `python3 -m pip install {pkg}`");
        }
        // pyenv puts new commands behind a shim it writes on rehash.
        let _ = succeeds(Command::new("pyenv").arg("rehash"));
        if kernels::vng().is_none() {
            bail!("virtme-ng installed but no `vng` found on PATH or in python3's scripts");
        }
    }
    if !Path::new("/usr/sbin/iptables").exists() && !have("iptables") {
        bail!("iptables is still missing after setup");
    }
    eprintln!("setup: ok");
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn build(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "drop-user"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("dropscope"))
}

/// Namespaces left by an earlier run that was killed before cleaning up.
fn remove_stale_test_namespaces() {
    for ns in output(Command::new("ip").args(["netns", "list"])).lines() {
        let name = ns.split_whitespace().next().unwrap_or("");
        if name.starts_with("dstest-") {
            let _ = succeeds(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

/// Fuzzes the frame parser for `seconds` from the committed seeds (new
/// inputs go to tests/fuzz/corpus, crashes to tests/fuzz/artifacts).
fn fuzz(seconds: u64) -> Result<()> {
    let dir = workspace_root().join("tests/fuzz");
    std::fs::create_dir_all(dir.join("corpus"))?;
    run(Command::new("rustup")
        .current_dir(&dir)
        .args(["run", "nightly", "cargo", "fuzz", "run", "--fuzz-dir", "."])
        .args(["frame_parser", "corpus", "seeds", "--"])
        .arg(format!("-max_total_time={seconds}")))
    .context("the frame parser fuzzer found a failing input (see tests/fuzz/artifacts)")
}

/// Runs `cargo test` on the workspace, echoing its output, and closes with
/// one summary line over every test binary.
fn test(bin: &Path, dist: &Path, args: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "drop-ebpf",
            "--no-fail-fast",
        ])
        .args(args)
        .env("DROPSCOPE_BIN", bin)
        .env("DROPSCOPE_DIST", dist)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        println!("{line}");
        let (p, f) = count_results(&line);
        passed += p;
        failed += f;
    }
    let status = child.wait()?;
    println!("{passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// (passed, failed) summed over libtest's `test result:` lines in `text`.
fn count_results(text: &str) -> (u64, u64) {
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(';') {
            let mut w = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (w.next(), w.next()) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            match kind {
                "passed" => passed += n,
                "failed" => failed += n,
                _ => {}
            }
        }
    }
    (passed, failed)
}

/// The kernel matrix with the static binary (what users install).
fn matrix(list: &str) -> Result<()> {
    let selected = kernels::select(list)?;
    let bin = dist::dist()?.binary;
    let (passed, failed) = kernels::run_matrix(&selected, &bin)?;
    println!("kernel matrix: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("the kernel matrix has failures");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.task {
        Task::Setup => setup(),
        Task::Build { release } => setup().and_then(|_| build(release).map(|_| ())),
        Task::Run { args } => (|| {
            setup()?;
            let bin = build(true)?;
            let args = if args.is_empty() {
                vec!["watch".to_string()]
            } else {
                args
            };
            let mut c = if is_root() {
                Command::new(&bin)
            } else {
                let mut s = Command::new("sudo");
                s.arg(&bin);
                s
            };
            run(c.args(&args))
        })(),
        Task::Bench { full, only } => (|| {
            setup()?;
            // The peer the kfree_skb path is compared with.
            if !have("bpftrace") {
                let _ = apt_install(&["bpftrace"]);
            }
            let bin = build(true)?;
            remove_stale_test_namespaces();
            let mut c = cargo();
            c.args([
                "run",
                "--release",
                "-p",
                "integration-tests",
                "--bin",
                "bench",
                "--",
            ]);
            if full {
                c.arg("--full");
            }
            if let Some(section) = &only {
                c.args(["--only", section]);
            }
            run(c.env("DROPSCOPE_BIN", &bin))
        })(),
        Task::Dist => setup().and_then(|_| dist::dist().map(|_| ())),
        Task::Fuzz { seconds } => setup().and_then(|_| fuzz(seconds)),
        Task::Test { kernels, args } => (|| {
            setup()?;
            if let Some(list) = kernels {
                return matrix(&list);
            }
            let bin = build(false)?;
            // The tests install the package and run the static binary.
            let dist = dist::dist()?;
            remove_stale_test_namespaces();
            test(&bin, &dist.dir, &args)?;
            // A filtered run is someone after one test; the full run also
            // boots the kernel matrix and fuzzes.
            if args.is_empty() {
                matrix("all")?;
                fuzz(60)?;
            }
            Ok(())
        })(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
