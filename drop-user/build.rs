//! Builds drop-ebpf for the bpf target (nightly + bpf-linker) so that
//! `include_bytes_aligned!` can embed it, and names the build for
//! `dropscope --version`: the git commit and the embedded object's digest.
//! `cargo xtask setup` installs the toolchain this needs.
use std::{path::Path, process::Command};

use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    // The eBPF programs compile drop-common too (the parser, the counters):
    // a change there must rebuild them, not only drop-ebpf's own files.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../drop-common/src")
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../drop-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "drop-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    let out = std::env::var("OUT_DIR")?;
    let object = std::fs::read(Path::new(&out).join("drop-ebpf"))?;
    let digest = Sha256::digest(&object);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=DROPSCOPE_EBPF_SHA256={hex}");
    println!("cargo:rustc-env=DROPSCOPE_EBPF_BYTES={}", object.len());
    println!("cargo:rustc-env=DROPSCOPE_COMMIT={}", commit());
    println!(
        "cargo:rustc-env=DROPSCOPE_TARGET={}",
        std::env::var("TARGET")?
    );
    Ok(())
}

/// The commit the binary was built from: DROPSCOPE_COMMIT if set (a build
/// from a source tarball), else git's, with "-dirty" for uncommitted
/// changes to tracked files, else "unknown".
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=DROPSCOPE_COMMIT");
    if let Ok(c) = std::env::var("DROPSCOPE_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Rebuild when HEAD moves or the index changes (a commit, a checkout).
    for p in ["HEAD", "index", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &r])
    {
        println!("cargo:rerun-if-changed={path}");
    }
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}
