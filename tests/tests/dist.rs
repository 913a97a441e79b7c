//! What users install, as `cargo xtask dist` builds it: the static binary
//! in a root file system with no libc at all, and the Debian package
//! installed, checked and removed with dpkg.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use integration_tests::{Dropscope, Lab, dist_dir, drops, dropscope_bin, sh, sockaddr as addr};

/// The package tests install into this machine's dpkg database: one at a time.
static DPKG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn static_bin() -> PathBuf {
    dist_dir().join("dropscope")
}

fn deb() -> PathBuf {
    let dir = dist_dir();
    let debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", dir.display());
    debs[0].clone()
}

/// True when the ELF file has a program interpreter (is dynamically linked).
fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "{} is not ELF", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == 3
    })
}

/// Every file under `dir` (relative paths).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A root file system holding the static dropscope and a static busybox,
/// nothing else: `reasons` prints what the development build prints, and
/// a short `watch` counts datagrams to a closed port exactly (UdpNoPorts).
#[test]
fn static_binary_runs_where_there_is_no_libc() {
    let bin = static_bin();
    assert!(
        !has_interpreter(&bin),
        "{} is dynamically linked",
        bin.display()
    );
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists() && !has_interpreter(busybox),
        "a static busybox is needed (Debian's busybox-static; cargo xtask setup installs it)"
    );
    let lab = Lab::new();
    let root = lab.temp_dir("rootfs");
    for d in ["bin", "usr/bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.0.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.0.join("bin/busybox")).unwrap();
    std::fs::copy(&bin, root.0.join("usr/bin/dropscope")).unwrap();
    assert_eq!(files(&root.0), ["bin/busybox", "usr/bin/dropscope"]);

    // Its own mount namespace (private: nothing mounted here shows
    // outside), chrooted, with only what the kernel provides mounted.
    let chrooted = |script: &str| {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &lab.b,
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ]);
        c.arg("chroot").arg(&root.0);
        c.args(["/bin/busybox", "sh", "-c"]);
        c.arg(format!(
            "/bin/busybox mount -t proc proc /proc && \
             /bin/busybox mount -t sysfs sysfs /sys && \
             /bin/busybox mount -t tracefs tracefs /sys/kernel/tracing && \
             {script}"
        ));
        c
    };
    let out = chrooted("exec /usr/bin/dropscope reasons")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dropscope reasons in the bare root: {err}"
    );
    let want = sh(&[&dropscope_bin(), "reasons"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    assert!(want.contains("NO_SOCKET") || err.contains("no enum skb_drop_reason"));

    let before = lab.nstat(&lab.b, "UdpNoPorts");
    let d = Dropscope::start_command(
        chrooted("exec /usr/bin/dropscope \"$@\""),
        &[
            "dropscope",
            "watch",
            "--iface",
            "vb",
            "--interval",
            "200ms",
            "--format",
            "json",
            "--own-netns",
        ],
    );
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 6300), 77, 40);
    thread::sleep(Duration::from_millis(600));
    let reports = d.stop();
    let delta = lab.nstat(&lab.b, "UdpNoPorts") - before;
    assert_eq!(delta, 77);
    let last = reports.last().expect("a report");
    assert_eq!(drops(last, "NO_SOCKET", "vb"), delta, "{:?}", last.drops);
}

/// `dropscope --version` names the release, the commit and the eBPF object.
#[test]
fn version_names_the_build() {
    let v = sh(&[static_bin().to_str().unwrap(), "--version"]);
    let head = sh(&[
        "git",
        "-C",
        env!("CARGO_MANIFEST_DIR"),
        "rev-parse",
        "--short=12",
        "HEAD",
    ]);
    assert!(
        v.starts_with(concat!(
            "dropscope ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        )),
        "{v}"
    );
    assert!(v.contains(head.trim()), "{v} does not name HEAD {head}");
    assert!(v.contains("x86_64-unknown-linux-musl"), "{v}");
    let digest = v
        .split("eBPF object sha256:")
        .nth(1)
        .expect("the object's digest");
    assert!(digest[..16].chars().all(|c| c.is_ascii_hexdigit()), "{v}");
}

/// Purges the package when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "dropscope"]).output();
    }
}

fn installed() -> bool {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "dropscope"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains("install ok installed")
}

/// The long flags `--help` lists for `sub` (or the top command).
fn help_flags(bin: &str, sub: Option<&str>) -> Vec<String> {
    let mut args: Vec<&str> = sub.into_iter().collect();
    args.push("--help");
    let mut v = vec![bin];
    v.extend(args);
    let help = sh(&v);
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// dpkg -i, then everything where it belongs: the static binary, the unit
/// (systemd-analyze verify passes), the conffile (parses, changes nothing),
/// man pages with every flag --help has, completions that complete, the
/// shared files; lintian finds no error; dpkg -r and --purge leave nothing.
#[test]
fn debian_package_installs_checks_and_removes() {
    let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let deb = deb();
    assert!(
        !installed(),
        "dropscope is already installed here (dpkg): the test would replace it; remove it first"
    );
    let lint = Command::new("lintian")
        .arg(&deb)
        .output()
        .expect("lintian (cargo xtask setup installs it)");
    let lint_out = String::from_utf8_lossy(&lint.stdout);
    assert!(
        !lint_out.lines().any(|l| l.starts_with("E:")),
        "lintian errors:\n{lint_out}"
    );

    let _purge = Purge;
    sh(&["dpkg", "-i", deb.to_str().unwrap()]);
    assert!(installed());
    let listed = sh(&["dpkg", "-L", "dropscope"]);
    let bin = "/usr/bin/dropscope";
    let subcommands = [
        "watch",
        "top",
        "run",
        "doctor",
        "reasons",
        "block",
        "unblock",
        "blocks",
        "completions",
    ];
    let mut want = vec![
        bin.to_string(),
        "/usr/lib/systemd/system/dropscope.service".into(),
        "/etc/dropscope/dropscope.toml".into(),
        "/usr/share/man/man1/dropscope.1.gz".into(),
        "/usr/share/bash-completion/completions/dropscope".into(),
        "/usr/share/zsh/vendor-completions/_dropscope".into(),
        "/usr/share/fish/vendor_completions.d/dropscope.fish".into(),
        "/usr/share/dropscope/dropscope-alerts.yml".into(),
        "/usr/share/dropscope/grafana-dashboard.json".into(),
        "/usr/share/doc/dropscope/copyright".into(),
    ];
    for s in subcommands {
        want.push(format!("/usr/share/man/man1/dropscope-{s}.1.gz"));
    }
    for h in [
        "dropscope-block",
        "exabgp-blackhole",
        "nft-blocklist",
        "webhook",
    ] {
        want.push(format!("/usr/share/dropscope/hooks/{h}"));
    }
    for w in &want {
        assert!(
            listed.lines().any(|l| l == w),
            "{w} not installed:\n{listed}"
        );
        assert!(Path::new(w).exists(), "{w} listed but missing");
    }
    // What is installed is the static build, byte for byte.
    assert_eq!(
        std::fs::read(bin).unwrap(),
        std::fs::read(static_bin()).unwrap()
    );
    let mode = |p: &str| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
    };
    assert_eq!(mode(bin) & 0o777, 0o755);
    assert_eq!(
        mode("/usr/share/dropscope/hooks/nft-blocklist") & 0o111,
        0o111
    );

    let conffiles = sh(&["dpkg-query", "-W", "-f=${Conffiles}", "dropscope"]);
    assert!(
        conffiles.contains("/etc/dropscope/dropscope.toml"),
        "{conffiles}"
    );

    // The unit names the installed paths and verifies.
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/dropscope.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/dropscope run --config /etc/dropscope/dropscope.toml"),
        "{unit}"
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/usr/lib/systemd/system/dropscope.service"])
        .output()
        .unwrap();
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {verify_err}"
    );
    assert!(
        !verify_err.contains("dropscope"),
        "systemd-analyze verify: {verify_err}"
    );

    // The installed binary runs with the installed config, as the unit
    // would (one second in a lab namespace).
    let lab = Lab::new();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.b,
            bin,
            "run",
            "--config",
            "/etc/dropscope/dropscope.toml",
        ])
        .args(["--iface", "vb", "--interval", "200ms", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Man pages from the clap definitions: every flag --help shows is there.
    for sub in std::iter::once(None).chain(subcommands.iter().map(|s| Some(*s))) {
        let page = match sub {
            Some(s) => format!("/usr/share/man/man1/dropscope-{s}.1.gz"),
            None => "/usr/share/man/man1/dropscope.1.gz".into(),
        };
        let text = sh(&["zcat", &page]);
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
        // roff escapes '-' as '\-'.
        let text = text.replace("\\-", "-");
        for flag in help_flags(bin, sub) {
            assert!(text.contains(&flag), "{page} lacks {flag}");
        }
    }
    // Completions complete: bash offers the subcommands and watch's flags.
    let complete = |words: &str| {
        sh(&[
            "bash",
            "-c",
            &format!(
                "source /usr/share/bash-completion/completions/dropscope; \
                 COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _dropscope dropscope \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ),
        ])
    };
    let subs = complete("dropscope ''");
    for s in subcommands {
        assert!(
            subs.lines().any(|l| l == s),
            "bash completion lacks {s}: {subs}"
        );
    }
    let flags = complete("dropscope watch --");
    for flag in help_flags(bin, Some("watch")) {
        assert!(
            flags.lines().any(|l| l == flag),
            "bash completion of watch lacks {flag}: {flags}"
        );
    }
    for (shell, file) in [
        ("zsh", "/usr/share/zsh/vendor-completions/_dropscope"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/dropscope.fish",
        ),
    ] {
        let text = std::fs::read_to_string(file).unwrap();
        for flag in help_flags(bin, Some("watch")) {
            let bare = flag.trim_start_matches("--");
            assert!(text.contains(bare), "{shell} completion lacks {flag}");
        }
    }

    // Removed: the files go, the edited conffile stays until purge.
    std::fs::write(
        "/etc/dropscope/dropscope.toml",
        std::fs::read_to_string("/etc/dropscope/dropscope.toml").unwrap() + "# edited\n",
    )
    .unwrap();
    sh(&["dpkg", "-r", "dropscope"]);
    assert!(!Path::new(bin).exists());
    assert!(!Path::new("/usr/lib/systemd/system/dropscope.service").exists());
    assert!(!Path::new("/usr/share/dropscope").exists());
    assert!(
        Path::new("/etc/dropscope/dropscope.toml").exists(),
        "a conffile stays after remove"
    );
    sh(&["dpkg", "--purge", "dropscope"]);
    assert!(!Path::new("/etc/dropscope").exists());
    assert!(!installed());
}
