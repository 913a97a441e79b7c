//! Builds drop-ebpf for the bpf target (nightly + bpf-linker) so that
//! `include_bytes_aligned!` can embed it. `cargo xtask setup` installs the
//! toolchain this needs.
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
    )
}
