//! Test traffic generator: a template frame sent out of a veth end that a
//! [`crate::Lab`] created, each copy with a random source from a range and,
//! optionally, a random TTL and UDP destination port. Counts are bounded by
//! the caller; nothing else is targeted.
//!
//! Two engines, the same frames:
//! * the `dropscope_gen` XDP program run through BPF_PROG_TEST_RUN in
//!   live-frames mode (about 1 Mpps on one core here);
//! * where the kernel or a sandbox refuses live frames (EPERM: seen on CI
//!   machines whose bounding set lacks CAP_SYS_RESOURCE), the same rewrite
//!   in user space and `sendmmsg` on an AF_PACKET socket that bypasses the
//!   qdisc. `DROPSCOPE_GEN=packet` picks it on purpose.
//!
//! Either way the frames are real: they leave the sender's veth end and
//! arrive at its peer, through the driver, as any other frame.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

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

/// Set once live frames were refused: later floods go straight to AF_PACKET.
static LIVE_REFUSED: AtomicBool = AtomicBool::new(false);

fn packet_forced() -> bool {
    std::env::var("DROPSCOPE_GEN").is_ok_and(|v| v == "packet")
}

/// Which engine the floods so far went through, for reports.
pub fn engine() -> &'static str {
    if packet_forced() {
        "AF_PACKET sendmmsg (DROPSCOPE_GEN=packet)"
    } else if LIVE_REFUSED.load(Ordering::Relaxed) {
        "AF_PACKET sendmmsg (live-frames test runs refused on this machine)"
    } else {
        "the live-frames XDP generator"
    }
}

impl Lab {
    /// Sends `flood` out of `dev` in namespace `ns` (a veth end of this lab).
    /// Returns when the first frame went out (after the program was loaded).
    pub fn generate(&self, ns: &str, dev: &str, flood: Flood) -> SystemTime {
        assert!(
            ns == self.a || ns == self.b,
            "the generator only sends inside its own lab"
        );
        let ifindex = self.ifindex(ns, dev);
        self.in_ns(ns, move || {
            if packet_forced() || LIVE_REFUSED.load(Ordering::Relaxed) {
                return send_packets(ifindex, &flood);
            }
            match send_live(ifindex, &flood) {
                Ok(started) => started,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    if !LIVE_REFUSED.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "note: live-frames test runs refused ({e}): \
                             the generator sends through AF_PACKET"
                        );
                    }
                    send_packets(ifindex, &flood)
                }
                Err(e) => panic!("live-frames test run: {e}"),
            }
        })
    }
}

/// The XDP generator in live-frames mode. A refusal comes on the first run,
/// before any frame went out, so the caller may send them all another way.
fn send_live(ifindex: u32, flood: &Flood) -> io::Result<SystemTime> {
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
    let started = SystemTime::now();
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
        if let Err(e) = prog.test_run(opts) {
            let io = match e {
                aya::programs::ProgramError::SyscallError(s) => s.io_error,
                other => io::Error::other(other.to_string()),
            };
            if left == flood.count {
                return Err(io);
            }
            panic!(
                "live-frames test run after {} frames: {io}",
                flood.count - left
            );
        }
        left -= n;
    }
    Ok(started)
}

/// Frames per `sendmmsg`.
const BATCH: usize = 256;
/// A flood that takes longer than this is a broken lab, not a slow machine.
const SEND_BOUND: Duration = Duration::from_secs(300);

/// The AF_PACKET engine: the generator's rewrite in user space, `BATCH`
/// frames a system call, the qdisc bypassed as XDP_TX bypasses it.
fn send_packets(ifindex: u32, flood: &Flood) -> SystemTime {
    let len = flood.frame.len();
    // The socket closes when `sock` drops, at the end of this scope.
    let (sock, mut sll) = crate::packet_socket(ifindex);
    let fd = sock.as_raw_fd();
    let one: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0, "PACKET_QDISC_BYPASS: {}", io::Error::last_os_error());
    sll.sll_addr[..6].copy_from_slice(&flood.frame[..6]);

    let mut bufs = flood.frame.repeat(BATCH);
    // One message per buffer slot, built once: each batch rewrites the
    // frames in place and sends the first n messages.
    let base = bufs.as_mut_ptr();
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            iov_base: base.wrapping_add(i * len).cast(),
            iov_len: len,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero msghdr is a valid empty one.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut sll).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut rng = Rng::new(u64::from(flood.base.to_bits()) ^ u64::from(flood.count) << 32);
    let started = SystemTime::now();
    let deadline = Instant::now() + SEND_BOUND;
    let mut left = flood.count as usize;
    while left > 0 {
        let n = left.min(BATCH);
        for i in 0..n {
            // SAFETY: slot i of `bufs` (len bytes inside its BATCH * len);
            // no other reference to it lives while this one does.
            let b = unsafe { std::slice::from_raw_parts_mut(base.add(i * len), len) };
            rewrite(b, &flood.frame, flood, &mut rng);
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: msgs[sent..n] point at iovecs and buffers alive here.
            let r = unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            if r > 0 {
                sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            // A full device queue: give the receiving side a moment.
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => std::thread::yield_now(),
                _ => panic!("sendmmsg on AF_PACKET: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "the flood took longer than {SEND_BOUND:?}"
            );
        }
        left -= n;
        assert!(
            Instant::now() < deadline,
            "the flood took longer than {SEND_BOUND:?}"
        );
    }
    // The messages point into bufs: it lives until every frame went out.
    drop(bufs);
    started
}

/// What `dropscope_gen` does to a frame, on a copy of the template.
fn rewrite(b: &mut [u8], template: &[u8], flood: &Flood, rng: &mut Rng) {
    if b.len() < 34 || b[12] != 0x08 || b[13] != 0x00 {
        return;
    }
    let ip = 14;
    if flood.sources > 1 {
        let a = u32::from(flood.base).wrapping_add(rng.below(flood.sources));
        b[ip + 12..ip + 16].copy_from_slice(&a.to_be_bytes());
        // TCP's checksum covers the source (pseudo-header): keep a valid
        // template valid (RFC 1624), as the XDP generator does.
        let t = ip + 20;
        if b[ip + 9] == 6
            && b[ip] == 0x45
            && b[ip + 6] & 0x3f == 0
            && b[ip + 7] == 0
            && b.len() >= t + 18
        {
            let word = |x: &[u8], i: usize| u32::from(u16::from_be_bytes([x[i], x[i + 1]]));
            let mut sum = u32::from(!(word(template, t + 16) as u16));
            for i in [ip + 12, ip + 14] {
                sum += u32::from(!(word(template, i) as u16)) + word(b, i);
            }
            let c = !fold(sum);
            b[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        }
    }
    if flood.dports != 0 && b[ip + 9] == 17 && b[ip] == 0x45 && b.len() >= ip + 28 {
        let p = (1024 + rng.below(flood.dports)) as u16;
        b[ip + 22..ip + 24].copy_from_slice(&p.to_be_bytes());
    }
    if flood.spoof_ttl {
        b[ip + 8] = 16 + rng.below(224) as u8;
    }
    // Over the 20-byte header, as the XDP generator does.
    b[ip + 10] = 0;
    b[ip + 11] = 0;
    let c = crate::frames::checksum(&b[ip..ip + 20]);
    b[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// xorshift64*: fast, and plenty for spreading sources.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % u64::from(n.max(1))) as u32
    }
}
