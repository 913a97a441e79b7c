//! Test traffic generator: the `dropscope_gen` XDP program run through
//! BPF_PROG_TEST_RUN in live-frames mode, transmitting a template frame out
//! of a veth end that a [`crate::Lab`] created (about 1 Mpps on one core
//! here). Each frame gets a random source from a range and, optionally, a
//! random TTL. Counts are bounded by the caller; nothing else is targeted.

use std::net::Ipv4Addr;

use aya::{
    EbpfLoader,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use drop_common::{GenConfig, globals};

use crate::Lab;

pub struct Flood {
    /// The template: Ethernet + IPv4 (see [`crate::frames`]).
    pub frame: Vec<u8>,
    pub count: u32,
    /// Random sources from `base` .. `base + sources`; 1 keeps the frame's.
    pub sources: u32,
    pub base: Ipv4Addr,
    pub spoof_ttl: bool,
    /// UDP: random destination ports from 1024 .. 1024 + dports (0: keep).
    pub dports: u32,
}

impl Lab {
    /// Sends `flood` out of `dev` in namespace `ns` (a veth end of this lab).
    /// Returns when the first frame went out (after the program was loaded).
    pub fn generate(&self, ns: &str, dev: &str, flood: Flood) -> std::time::SystemTime {
        assert!(
            ns == self.a || ns == self.b,
            "the generator only sends inside its own lab"
        );
        let ifindex = self.ifindex(ns, dev);
        self.in_ns(ns, move || {
            let cfg = GenConfig {
                sources: flood.sources,
                base: u32::from(flood.base),
                spoof_ttl: flood.spoof_ttl as u32,
                ifindex: 0,
                dports: flood.dports,
            };
            let mut ebpf = EbpfLoader::new()
                .override_global(globals::GEN_CONFIG, &cfg, true)
                .load(dropscope::kernel::TEST_OBJECT)
                .expect("load the eBPF object");
            let prog: &mut Xdp = ebpf
                .program_mut(drop_common::programs::GENERATOR)
                .expect("generator program")
                .try_into()
                .unwrap();
            prog.load().expect("load the generator");
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(flood.frame.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let started = std::time::SystemTime::now();
            let mut left = flood.count;
            while left > 0 {
                let n = left.min(1_000_000);
                let opts = TestRunOptions {
                    data_in: Some(&flood.frame),
                    ctx_in: Some(&ctx),
                    repeat: n,
                    attrs: TestRunAttrs::new().xdp_live_frames(64),
                    ..Default::default()
                };
                prog.test_run(opts).expect("live-frames test run");
                left -= n;
            }
            started
        })
    }
}
