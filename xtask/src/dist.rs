//! `cargo xtask dist`: what users install. The static binary
//! (x86_64-unknown-linux-musl, eBPF object embedded, no dynamic
//! dependencies), the files generated from it (man pages, completions, the
//! commented default config) and the Debian package built with cargo-deb,
//! all under target/dist.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, output, run, workspace_root};

pub(crate) const MUSL: &str = "x86_64-unknown-linux-musl";

/// What `dist` made.
pub(crate) struct Dist {
    /// target/dist: the binary and the package.
    pub(crate) dir: PathBuf,
    /// The stripped static binary the package ships.
    pub(crate) binary: PathBuf,
}

/// Builds the static binary and checks that it is one.
pub(crate) fn static_binary() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "drop-user",
        "--target",
        MUSL,
    ]))?;
    let bin = workspace_root()
        .join("target")
        .join(MUSL)
        .join("release/dropscope");
    check_static(&bin)?;
    Ok(bin)
}

/// No program interpreter and no shared library: the binary starts where
/// there is no libc at all. `ldd` would say so too, but it is glibc's and
/// this reads the ELF itself.
fn check_static(bin: &Path) -> Result<()> {
    let ldd = Command::new("ldd").arg(bin).output();
    if let Ok(o) = ldd {
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        if !(text.contains("statically linked") || text.contains("not a dynamic executable")) {
            bail!("{} is not static; ldd says: {}", bin.display(), text.trim());
        }
    }
    let elf = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        bail!("{} is not a 64-bit ELF file", bin.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == PT_INTERP {
            bail!(
                "{} has a program interpreter (dynamically linked)",
                bin.display()
            );
        }
    }
    Ok(())
}

pub(crate) fn dist() -> Result<Dist> {
    let bin = static_binary()?;
    let out = workspace_root().join("target/dist");
    let gen_dir = out.join("gen");
    let _ = std::fs::remove_dir_all(&gen_dir);
    std::fs::create_dir_all(&gen_dir)?;
    run(Command::new(&bin)
        .args(["generate", "man"])
        .arg(gen_dir.join("man")))?;
    run(Command::new(&bin)
        .args(["generate", "completions"])
        .arg(gen_dir.join("completions")))?;
    let config = Command::new(&bin).args(["generate", "config"]).output()?;
    if !config.status.success() {
        bail!("dropscope generate config failed");
    }
    std::fs::write(gen_dir.join("dropscope.toml"), &config.stdout)?;
    // What users install is stripped (Debian policy; a third of the size):
    // the package ships this very file.
    let static_copy = out.join("dropscope");
    run(Command::new("strip").arg("-o").arg(&static_copy).arg(&bin))?;
    check_static(&static_copy)?;
    // Stale packages of other versions would confuse whoever picks one.
    for e in std::fs::read_dir(&out)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            std::fs::remove_file(&p)?;
        }
    }
    let deb_out = output(
        cargo()
            .args([
                "deb",
                "--no-build",
                "--no-strip",
                "--package",
                "drop-user",
                "--target",
                MUSL,
            ])
            .arg("--output")
            .arg(&out),
    );
    let deb = deb_out
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .with_context(|| {
            format!(
                "cargo deb made no package (is cargo-deb installed? `cargo xtask setup`): {deb_out}"
            )
        })?;
    for p in [&static_copy, &deb] {
        let size = std::fs::metadata(p)?.len();
        println!("{}  {:.1} MiB", p.display(), size as f64 / (1 << 20) as f64);
    }
    Ok(Dist {
        dir: out,
        binary: static_copy,
    })
}
