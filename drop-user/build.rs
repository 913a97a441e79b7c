//! Builds drop-ebpf for the bpf target (nightly + bpf-linker) so that
//! `include_bytes_aligned!` can embed it. `cargo xtask setup` installs the
//! toolchain this needs.
fn main() -> anyhow::Result<()> {
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
