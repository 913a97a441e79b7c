//! `cargo xtask bench`: dropscope's costs measured side by side in one run,
//! as ratios (these machines are shared and noisy); absolute numbers are
//! reported with the machine description, never asserted. Writes
//! BENCHMARKS.md. `--full` runs more trials and longer windows.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::{
    EbpfLoader,
    programs::{Xdp, XdpMode, loaded_programs},
};
use dropscope::schema::Phase;
use integration_tests::{
    Dropscope, Lab, frames::*, generator::Flood, ip_link_rx_packets, nsenter, sh,
};

struct Row {
    section: &'static str,
    what: String,
    value: String,
    ratio: Option<f64>,
    target: &'static str,
    met: Option<bool>,
}

impl Row {
    /// A measurement without a target.
    fn info(
        section: &'static str,
        what: impl Into<String>,
        value: String,
        ratio: Option<f64>,
    ) -> Row {
        Row {
            section,
            what: what.into(),
            value,
            ratio,
            target: "",
            met: None,
        }
    }

    /// A measurement against a target, and whether it met it.
    fn goal(
        section: &'static str,
        what: impl Into<String>,
        value: String,
        ratio: f64,
        target: &'static str,
        met: bool,
    ) -> Row {
        Row {
            section,
            what: what.into(),
            value,
            ratio: Some(ratio),
            target,
            met: Some(met),
        }
    }
}

/// Turns kernel.bpf_stats_enabled on for the run and back off after.
struct BpfStats(String);
impl BpfStats {
    fn enable() -> Self {
        let p = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(p).unwrap_or_else(|_| "0".into());
        std::fs::write(p, "1").expect("enable kernel.bpf_stats_enabled (run as root)");
        BpfStats(old.trim().to_string())
    }
}
impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// (run_time_ns, run_count) of every loaded program with this name.
fn prog_stats(name: &str) -> (u64, u64) {
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .fold((0, 0), |(t, c), p| {
            (t + p.run_time().as_nanos() as u64, c + p.run_count())
        })
}

fn ns_per_run(name: &str, f: impl FnOnce()) -> f64 {
    let (t0, c0) = prog_stats(name);
    f();
    let (t1, c1) = prog_stats(name);
    (t1 - t0) as f64 / (c1 - c0).max(1) as f64
}

fn eth(lab: &Lab, tags: Vec<(u16, u16)>) -> Eth {
    Eth {
        dst: lab.mac_bytes(&lab.b, "vb"),
        src: lab.mac_bytes(&lab.a, "va"),
        tags,
    }
}

fn v4_frame(lab: &Lab, src: Ipv4Addr, tags: Vec<(u16, u16)>) -> Vec<u8> {
    let dst: Ipv4Addr = lab.v4(2).parse().unwrap();
    // 14 + 20 + 8 + 18 = 60 bytes: a 64-byte frame on the wire.
    eth(lab, tags).frame(0x0800, &ipv4(src, dst, 17, (0, false), &udp(4000, 9, 18)))
}

/// Sends and returns the time from the first frame to the last.
fn send(lab: &Lab, frame: Vec<u8>, count: u32, sources: u32, base: Ipv4Addr) -> Duration {
    let started = lab.generate(
        &lab.a,
        "va",
        Flood {
            frame,
            count,
            sources,
            base,
            spoof_ttl: false,
            dports: 0,
        },
    );
    started.elapsed().unwrap_or_default()
}

/// Attaches the empty XDP program to vb (native) for as long as it lives.
fn attach_floor(lab: &Lab) -> aya::Ebpf {
    attach_test_xdp(lab, drop_common::programs::PASS)
}

/// Attaches the test object's XDP program `name` to vb (native) for as
/// long as it lives.
fn attach_test_xdp(lab: &Lab, name: &'static str) -> aya::Ebpf {
    lab.in_ns(&lab.b, || {
        let mut ebpf = EbpfLoader::new()
            .load(dropscope::kernel::TEST_OBJECT)
            .expect("load object");
        let p: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
        p.attach("vb", XdpMode::Driver)
            .expect("attach the floor program");
        ebpf
    })
}

/// The classic alternative to XDP counting: a userspace AF_PACKET socket
/// on vb that counts every frame it is handed.
struct PacketCounter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: thread::JoinHandle<(u64, u64, f64)>,
}

impl PacketCounter {
    fn start(lab: &Lab, dev: &str) -> PacketCounter {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        };
        let ifindex = lab.ifindex(&lab.b, dev) as i32;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = lab.spawn_in_ns(&lab.b, move || unsafe {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex;
            let r = libc::bind(
                fd,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind AF_PACKET");
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let cpu = || {
                let mut ts: libc::timespec = std::mem::zeroed();
                libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
                ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
            };
            let _ = ready_tx.send(());
            let cpu0 = cpu();
            let mut buf = [0u8; 2048];
            let mut seen = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), 0) > 0 {
                    seen += 1;
                }
            }
            let mut st: libc::tpacket_stats = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
            libc::getsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                &mut st as *mut _ as *mut libc::c_void,
                &mut len,
            );
            libc::close(fd);
            (seen, st.tp_drops as u64, cpu() - cpu0)
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        PacketCounter { stop, thread }
    }

    /// (frames counted, frames the kernel dropped for it, CPU seconds).
    fn stop(self) -> (u64, u64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("counter thread")
    }
}

/// The peer: a bpftrace one-liner counting kfree_skb by reason.
fn bpftrace_by_reason() -> std::io::Result<std::process::Child> {
    Command::new("bpftrace")
        .args([
            "-e",
            "tracepoint:skb:kfree_skb { @[args->reason] = count(); }",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Best of two floods of `n` frames (the machine is shared): how fast
/// `counter` grew per second of generator time.
/// Packets a second `counter` saw per second of generator time: the median
/// of 5 runs of `n` frames, with the spread.
/// Packets per second of generator time: `counter` (received) over one
/// run of `n` frames from 1000 sources.
fn rate_once(lab: &Lab, n: u32, base: Ipv4Addr, counter: impl Fn() -> u64) -> f64 {
    let c0 = counter();
    let t = send(lab, v4_frame(lab, base, vec![]), n, 1000, base);
    thread::sleep(Duration::from_millis(200));
    (counter() - c0) as f64 / t.as_secs_f64()
}

fn rate(lab: &Lab, n: u32, base: Ipv4Addr, counter: impl Fn() -> u64) -> Spread {
    let mut v: Vec<f64> = (0..5).map(|_| rate_once(lab, n, base, &counter)).collect();
    Spread::of(&mut v)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// (CPU seconds, from the scheduler's nanosecond accounting, summed over
/// threads; peak RSS in KiB).
fn proc_cpu_rss(pid: u32) -> (f64, u64) {
    let mut cpu = 0.0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let ss = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            cpu += ss
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1e9;
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

fn dropscope_pid(lab: &Lab) -> u32 {
    let out = lab.exec(&lab.b, &["ip", "netns", "pids", &lab.b]);
    out.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == "dropscope")
                .unwrap_or(false)
        })
        .expect("dropscope pid")
}

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let run = |section: &str| only.as_deref().is_none_or(|o| section.starts_with(o));
    let _stats = BpfStats::enable();
    let mut rows = Vec::new();
    let n = if full { 5_000_000 } else { 1_000_000 };

    if run("xdp-test") {
        xdp_test(&mut rows, n, full);
    }

    if run("xdp-napi") {
        xdp_napi(&mut rows, n, full);
    }

    if run("throughput") {
        throughput(&mut rows, n, full);
    }

    if run("latency") {
        latency(&mut rows, n, full);
    }

    if run("kfree") {
        kfree(&mut rows, n, full);
    }

    if run("droppath") {
        droppath(&mut rows, n, full);
    }

    if run("user") {
        user(&mut rows, n, full);
    }

    if run("observe") {
        observe(&mut rows, n, full);
    }

    let machine = format!(
        "{} on Linux {}, {} CPUs",
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name\t: "))
            .unwrap_or("unknown CPU"),
        Command::new("uname")
            .arg("-r")
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let mut md = String::new();
    let _ = writeln!(md, "# dropscope benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench{}` on {machine}.",
        if full { " --full" } else { "" }
    );
    let _ = writeln!(
        md,
        "Every figure comes from one run; ratios compare things measured side by side in that run.\n"
    );
    let _ = writeln!(
        md,
        "Floods and drop storms: {}.\n",
        integration_tests::generator::engine()
    );
    let _ = writeln!(
        md,
        "| section | measurement | value | ratio | target | met |\n| --- | --- | --- | --- | --- | --- |"
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.section,
            r.what,
            r.value,
            r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default(),
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
    }
    md.push_str(METHODS);
    print!("{md}");
    // A partial run (--only) prints its rows but leaves BENCHMARKS.md alone.
    if only.is_some() {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md");
    std::fs::write(path, &md).expect("write BENCHMARKS.md");
    eprintln!("bench: wrote BENCHMARKS.md");
}

/// 1a. XDP per-packet cost with BPF_PROG_TEST_RUN (repeat), hot caches.
fn xdp_test(rows: &mut Vec<Row>, _n: u32, full: bool) {
    let lab = Lab::new();
    let repeat: u32 = if full { 20_000_000 } else { 5_000_000 };
    let base = Ipv4Addr::new(198, 18, 0, 1);
    let v4 = v4_frame(&lab, base, vec![]);
    let v6 = {
        let src = "fd99::1".parse().unwrap();
        let dst = lab.v6(2).parse().unwrap();
        eth(&lab, vec![]).frame(0x86dd, &ipv6(src, dst, 17, &[], &udp(4000, 9, 0)))
    };
    let vlan = v4_frame(&lab, base, vec![(TPID_8021Q, 100)]);
    let ifindex = lab.ifindex(&lab.b, "vb");
    // Stats accounting would add two clock reads to every run.
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let results = lab.in_ns(&lab.b, move || {
        use aya::programs::{TestRun, TestRunOptions};
        let mut ctx = [0u8; 24];
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let time = |prog: &mut Xdp, frame: &[u8]| {
            let mut c = ctx;
            c[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&c),
                    repeat,
                    ..Default::default()
                })
                .expect("test run");
            r.duration.as_nanos() as f64
        };
        let mut floor_obj = EbpfLoader::new()
            .load(dropscope::kernel::TEST_OBJECT)
            .unwrap();
        let floor: &mut Xdp = floor_obj
            .program_mut(drop_common::programs::PASS)
            .unwrap()
            .try_into()
            .unwrap();
        floor.load().unwrap();
        let load = || {
            let mut p = dropscope::kernel::load(&dropscope::kernel::LoadOptions {
                ifaces: vec![("vb".into(), ifindex)],
                xdp: dropscope::kernel::XdpChoice::None,
                kfree: dropscope::kernel::KfreeChoice::Auto,
                own_netns_only: true,
                xdp_config: dropscope::kernel::default_xdp_config(),
            })
            .expect("load dropscope");
            dropscope::kernel::prepare_xdp(&mut p.ebpf, &[("vb".into(), ifindex)])
                .expect("prepare XDP");
            p
        };
        let mut one = load();
        // What `watch` attaches to the first interface (slot 0), and the
        // generic program interfaces past the fourth get.
        {
            let x: &mut Xdp = one
                .ebpf
                .program_mut(drop_common::programs::XDP_SLOT[0])
                .unwrap()
                .try_into()
                .unwrap();
            x.load().expect("load the slot-0 XDP program");
        }
        let on = |p: &mut dropscope::kernel::Probes, name: &str, frame: &[u8]| {
            let x: &mut Xdp = p.ebpf.program_mut(name).unwrap().try_into().unwrap();
            time(x, frame)
        };
        let slot0 = drop_common::programs::XDP_SLOT[0];
        let generic = drop_common::programs::XDP;
        // Interleaved rounds, best of each: the machine is shared.
        let mut best = [f64::MAX; 5];
        for _ in 0..3 {
            best[0] = best[0].min(time(floor, &v4));
            best[1] = best[1].min(on(&mut one, slot0, &v4));
            best[2] = best[2].min(on(&mut one, slot0, &v6));
            best[3] = best[3].min(on(&mut one, slot0, &vlan));
            best[4] = best[4].min(on(&mut one, generic, &v4));
        }
        best
    });
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let floor = results[0];
    rows.push(Row::info(
        "XDP cost (test run)",
        "empty XDP_PASS program (floor)",
        format!("{floor:.1} ns"),
        Some(1.0),
    ));
    // One frame repeated: random sources are measured in NAPI below, on
    // live frames from the generator (the production object carries no
    // benchmark switch to fake them).
    // Reported with the ns added, not held to a ratio: a hot-cache loop
    // around one frame is not where a packet's cost is paid (the NAPI rows
    // below are the target), and its floor is a few ns on a fast CPU.
    for (i, what) in [
        (1, "dropscope, one source"),
        (2, "dropscope, IPv6"),
        (3, "dropscope, 802.1Q tagged"),
        (4, "dropscope, one source, generic program (5th+ interface)"),
    ] {
        rows.push(Row::info(
            "XDP cost (test run)",
            format!("{what} (+{:.1} ns)", results[i] - floor),
            format!("{:.1} ns", results[i]),
            Some(results[i] / floor),
        ));
    }
}

/// `dropscope watch` on vb with its own XDP program in native mode, JSON
/// lines: what the NAPI and throughput sections measure.
const WATCH_NATIVE: [&str; 7] = [
    "watch",
    "--iface",
    "vb",
    "--xdp-mode",
    "native",
    "--format",
    "json",
];

/// Polls `dev`'s NAPI in a kernel thread of its own, as a NIC's interrupt
/// polls on its own CPU: the sender only fills the veth ring, and NAPI
/// takes the frames in batches (up to 64 a poll) as it does under a flood.
/// Without it a frame sent through AF_PACKET is polled alone, on the
/// sender's CPU, right after the sender's system call and the stack's
/// last frame have pushed the program's maps out of the L1 cache: a cost
/// no busy NIC sees. Setting it needs the device's NAPI, which veth
/// creates with GRO; the setting outlives GRO and XDP changes.
fn threaded_napi(lab: &Lab, dev: &str) {
    lab.exec(&lab.b, &["ethtool", "-K", dev, "gro", "on"]);
    lab.exec(
        &lab.b,
        &[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{dev}/threaded"),
        ],
    );
    lab.exec(&lab.b, &["ethtool", "-K", dev, "gro", "off"]);
}

/// 1b. The same in NAPI on a veth, with the stack behind it (cold caches).
fn xdp_napi(rows: &mut Vec<Row>, n: u32, full: bool) {
    let lab = Lab::new();
    threaded_napi(&lab, "vb");
    let base = Ipv4Addr::new(198, 18, 0, 1);
    // More rounds than elsewhere: these rows sit near their target, and
    // a host's noise moves a median of 5 by several ns.
    let trials = if full { 15 } else { 9 };
    // ns per packet: [floor, one source, 1M random sources, IPv6, 802.1Q,
    // floor + one read of the frame], one value per round; each round
    // measures the floors and then dropscope on the same link, so drift
    // hits all alike.
    let mut per: [Vec<f64>; 6] = Default::default();
    for _ in 0..trials {
        for (i, prog) in [
            (0, drop_common::programs::PASS),
            (5, drop_common::programs::TOUCH),
        ] {
            let _floor = attach_test_xdp(&lab, prog);
            per[i].push(ns_per_run(prog, || {
                send(&lab, v4_frame(&lab, base, vec![]), n, 1, base);
            }));
        }
        let ds = lab.dropscope(&[&WATCH_NATIVE[..], &["--interval", "1s"]].concat());
        per[1].push(ns_per_run(drop_common::programs::XDP_SLOT[0], || {
            send(&lab, v4_frame(&lab, base, vec![]), n, 1, base);
        }));
        per[2].push(ns_per_run(drop_common::programs::XDP_SLOT[0], || {
            send(
                &lab,
                v4_frame(&lab, base, vec![]),
                n,
                1_000_000,
                Ipv4Addr::new(100, 64, 0, 0),
            );
        }));
        per[3].push(ns_per_run(drop_common::programs::XDP_SLOT[0], || {
            let src = "fd99::1".parse().unwrap();
            let dst = lab.v6(2).parse().unwrap();
            let f = eth(&lab, vec![]).frame(0x86dd, &ipv6(src, dst, 17, &[], &udp(4000, 9, 0)));
            send(&lab, f, n, 1, base);
        }));
        per[4].push(ns_per_run(drop_common::programs::XDP_SLOT[0], || {
            send(
                &lab,
                v4_frame(&lab, base, vec![(TPID_8021Q, 100)]),
                n,
                1,
                base,
            );
        }));
        drop(ds);
        // Each round's figures, for the spread the medians hide.
        eprintln!(
            "bench: xdp-napi round: floor {:.1} touch {:.1} one {:.1} random {:.1} v6 {:.1} vlan {:.1}",
            per[0].last().unwrap_or(&0.0),
            per[5].last().unwrap_or(&0.0),
            per[1].last().unwrap_or(&0.0),
            per[2].last().unwrap_or(&0.0),
            per[3].last().unwrap_or(&0.0),
            per[4].last().unwrap_or(&0.0),
        );
    }
    let [floor, one, random, v6, vlan, touch] = per.map(|mut v| Spread::of(&mut v));
    rows.push(Row::info(
        "XDP cost (NAPI)",
        "empty XDP_PASS program (floor)",
        floor.ns_packet(),
        Some(1.0),
    ));
    rows.push(Row::info(
        "XDP cost (NAPI)",
        format!(
            "empty program + one read of the frame ({:+.1} ns: its first cache line)",
            touch.median - floor.median
        ),
        touch.ns_packet(),
        Some(touch.median / floor.median),
    ));
    for (what, v, goal) in [
        ("dropscope, one source", &one, true),
        ("dropscope, 1M random sources", &random, true),
        ("dropscope, IPv6", &v6, false),
        ("dropscope, 802.1Q tagged", &vlan, false),
    ] {
        let r = v.median / floor.median;
        let what = format!("{what} (+{:.1} ns)", v.median - floor.median);
        rows.push(if goal {
            Row::goal(
                "XDP cost (NAPI)",
                what,
                v.ns_packet(),
                r,
                "<= 1.4x floor",
                r <= 1.4,
            )
        } else {
            Row::info("XDP cost (NAPI)", what, v.ns_packet(), Some(r))
        });
    }
    let r = random.median / one.median;
    rows.push(Row::goal(
        "XDP cost (NAPI)",
        "random sources vs one source",
        format!("{r:.2}x"),
        r,
        "<= 1.3x",
        r <= 1.3,
    ));
}

/// The name of the loaded program whose name starts with `prefix`.
fn program_named(prefix: &str) -> Option<String> {
    loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .find(|n| n.starts_with(prefix))
}

/// Section 8, beside an XDP firewall, side by side in one run: xdp-filter alone vs
/// observed by dropscope (fentry/fexit). Per-packet cost in NAPI from
/// bpf_stats (once observed, the program's run time includes the
/// trampolines and dropscope's programs) and veth throughput.
fn observe(rows: &mut Vec<Row>, n: u32, _full: bool) {
    const SECTION: &str = "beside xdp-filter";
    let lab = Lab::new();
    lab.exec(&lab.b, &["ethtool", "-K", "vb", "gro", "on"]);
    nsenter(&lab.b, &["xdp-filter", "load", "vb", "-m", "native"]);
    // A rule the traffic does not match: every packet is looked up, passed.
    nsenter(&lab.b, &["xdp-filter", "ip", "192.0.2.1", "-m", "src"]);
    let unload = || {
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.b))
            .args(["xdp-filter", "unload", "vb"])
            .output();
    };
    let base = Ipv4Addr::new(198, 18, 0, 1);
    // The program the hook runs: libxdp's dispatcher where the kernel
    // allows it (its run time includes the components), else xdp-filter's.
    let Some(filt) = program_named("xdp_dispatcher").or_else(|| program_named("xdpfilt_")) else {
        unload();
        panic!("xdp-filter's program is not loaded");
    };
    let rate = || rate(&lab, n, base, || ip_link_rx_packets(&lab, &lab.b, "vb")).median;
    let alone_rate = rate();
    let alone_ns = ns_per_run(&filt, || {
        send(&lab, v4_frame(&lab, base, vec![]), n, 1000, base);
    });
    let ds = Dropscope::start_nsenter(&lab.b, &["watch", "--iface", "vb", "--format", "json"]);
    if ds
        .stderr()
        .contains("refuses tracing programs on other BPF programs")
    {
        drop(ds);
        unload();
        rows.push(Row::info(
            SECTION,
            format!("{filt} alone (per packet, NAPI)"),
            format!("{alone_ns:.1} ns"),
            None,
        ));
        rows.push(Row::info(
            SECTION,
            "observed: not measurable, this kernel refuses fentry/fexit on BPF programs",
            "-".into(),
            None,
        ));
        return;
    }
    let observed_rate = rate();
    // The kernel keeps 15 bytes of a name: entry and exit programs are
    // both "dropscope_xdp_e" there, and are measured together.
    let ours = &drop_common::programs::XDP_ENTRY[..15];
    let (o0, _) = prog_stats(ours);
    let (_, r0) = prog_stats(&filt);
    let observed_ns = ns_per_run(&filt, || {
        send(&lab, v4_frame(&lab, base, vec![]), n, 1000, base);
    });
    let (o1, _) = prog_stats(ours);
    let (_, r1) = prog_stats(&filt);
    drop(ds);
    unload();
    let ours_ns = (o1 - o0) as f64 / (r1 - r0).max(1) as f64;
    rows.push(Row::info(
        SECTION,
        format!("{filt} alone (per packet, NAPI)"),
        format!("{alone_ns:.1} ns"),
        Some(1.0),
    ));
    rows.push(Row::info(
        SECTION,
        format!("{filt} observed (with trampolines and dropscope's programs)"),
        format!("{observed_ns:.1} ns"),
        Some(observed_ns / alone_ns),
    ));
    rows.push(Row::info(
        SECTION,
        "of which dropscope's entry + exit programs",
        format!("{ours_ns:.1} ns"),
        None,
    ));
    rows.push(Row::info(
        SECTION,
        "trampolines (observed - alone - dropscope's programs)",
        format!("{:.1} ns", observed_ns - alone_ns - ours_ns),
        None,
    ));
    let r = observed_rate / alone_rate;
    rows.push(Row::info(
        SECTION,
        "veth throughput, xdp-filter alone",
        format!("{:.0} pps", alone_rate),
        Some(1.0),
    ));
    rows.push(Row::goal(
        SECTION,
        "veth throughput, xdp-filter observed",
        format!("{observed_rate:.0} pps"),
        r,
        ">= 0.85x",
        r >= 0.85,
    ));
}

/// 2. Throughput on a veth pair: no program, empty program, dropscope.
fn throughput(rows: &mut Vec<Row>, n: u32, _full: bool) {
    let lab = Lab::new();
    lab.exec(&lab.b, &["ethtool", "-K", "vb", "gro", "on"]);
    let base = Ipv4Addr::new(198, 18, 0, 1);
    let once = || rate_once(&lab, n, base, || ip_link_rx_packets(&lab, &lab.b, "vb"));
    let pin_dir = format!("{}/bench-{}", integration_tests::shared_bpffs(), lab.a);
    // One value per round for each of: no program, the empty program,
    // dropscope (XDP + kfree_skb), XDP only, --enforce. Each round
    // measures the floors and then dropscope, so the host's drift hits
    // all alike (measured one after the other, a ratio is mostly drift).
    let mut per: [Vec<f64>; 5] = Default::default();
    for _ in 0..5 {
        per[0].push(once());
        {
            let _floor = attach_floor(&lab);
            per[1].push(once());
        }
        let ds = lab.dropscope(&WATCH_NATIVE);
        per[2].push(once());
        drop(ds);
        // The frames go to a closed port, so each is also a NO_SOCKET drop:
        // the row above pays the kfree_skb program too; XDP alone is this.
        let ds = lab.dropscope(&[&WATCH_NATIVE[..], &["--kfree-hook", "none"]].concat());
        per[3].push(once());
        drop(ds);
        // --enforce with a hundred prefixes that do not match the traffic:
        // the lookup is paid on every packet, nothing is dropped.
        let ds = lab.dropscope(&[
            "run",
            "--iface",
            "vb",
            "--xdp-mode",
            "native",
            "--enforce",
            "--kfree-hook",
            "none",
            "--pin-dir",
            &pin_dir,
        ]);
        for i in 0..100 {
            let prefix = format!("203.0.{i}.0/24");
            sh(&[
                "ip",
                "netns",
                "exec",
                &lab.b,
                &integration_tests::dropscope_bin(),
                "block",
                &prefix,
                "--pin-dir",
                &pin_dir,
            ]);
        }
        per[4].push(once());
        drop(ds);
        let _ = std::fs::remove_dir_all(&pin_dir);
    }
    let [none, empty, observing, xdp_only, enforcing] = per.map(|mut v| Spread::of(&mut v));
    // The classic userspace alternative, on the same traffic (no XDP).
    let counter = PacketCounter::start(&lab, "vb");
    let rx0 = ip_link_rx_packets(&lab, &lab.b, "vb");
    let t0 = Instant::now();
    let t = send(&lab, v4_frame(&lab, base, vec![]), n, 1000, base);
    thread::sleep(Duration::from_millis(200));
    let rx = ip_link_rx_packets(&lab, &lab.b, "vb") - rx0;
    let wall = t0.elapsed().as_secs_f64();
    let (seen, lost, cpu) = counter.stop();
    let af_packet = rx as f64 / t.as_secs_f64();
    let af_packet = Spread {
        median: af_packet,
        min: af_packet,
        max: af_packet,
        n: 1,
    };
    for (what, rate, goal) in [
        ("no XDP program", none, false),
        ("empty XDP program", empty, false),
        (
            "dropscope observing, XDP only (--kfree-hook none)",
            xdp_only,
            true,
        ),
        (
            "dropscope observing, XDP + kfree_skb (every frame is also a drop)",
            observing,
            false,
        ),
        (
            "dropscope --enforce, XDP only (100 prefixes, none matching)",
            enforcing,
            true,
        ),
        (
            "userspace AF_PACKET counter (peer, no XDP)",
            af_packet,
            false,
        ),
    ] {
        let r = rate.median / empty.median;
        let value = if rate.n > 1 {
            format!(
                "{:.0} kpps (median of {}, {:.0}-{:.0})",
                rate.median / 1e3,
                rate.n,
                rate.min / 1e3,
                rate.max / 1e3
            )
        } else {
            format!("{:.0} kpps", rate.median / 1e3)
        };
        rows.push(if goal {
            Row::goal("Throughput", what, value, r, ">= 0.9x empty", r >= 0.9)
        } else {
            Row::info("Throughput", what, value, Some(r))
        });
    }
    rows.push(Row::info(
        "Throughput",
        "AF_PACKET counter: frames counted / CPU",
        format!(
            "{:.1}% of {rx} received ({lost} dropped on its socket), {:.0}% of a core",
            seen as f64 * 100.0 / rx.max(1) as f64,
            cpu * 100.0 / wall
        ),
        None,
    ));
}

/// 3. Detection latency: flood start to attack event.
fn latency(rows: &mut Vec<Row>, _n: u32, full: bool) {
    let trials = if full { 20 } else { 10 };
    let classes: [(&str, &[&str], u8, u32); 4] = [
        ("SYN flood, adaptive (100 ms interval)", &[], 6, 60_000),
        ("ICMP flood, adaptive (100 ms interval)", &[], 1, 1000),
        ("UDP flood, adaptive (100 ms interval)", &[], 17, 60_000),
        (
            "one source over --source-pps (in-kernel trigger)",
            &["--source-pps", "20000"],
            17,
            1,
        ),
    ];
    for (what, extra, proto, sources) in classes {
        let lab = Lab::new();
        let cfg = std::env::temp_dir().join(format!("dropscope-bench-{}.toml", std::process::id()));
        std::fs::write(&cfg, "[detection]\nend_after_s = 0.3\n").unwrap();
        let mut args = integration_tests::WATCH_VB_FAST.to_vec();
        args.extend(["--config", cfg.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let ds = lab.dropscope(&args);
        thread::sleep(Duration::from_millis(600));
        let dst: Ipv4Addr = lab.v4(2).parse().unwrap();
        let base = Ipv4Addr::new(198, 18, 0, 1);
        let l4 = match proto {
            6 => tcp(40000, 80, SYN),
            1 => {
                let mut e = vec![8u8, 0, 0, 0, 0, 1, 0, 1];
                e.extend([0u8; 32]);
                e
            }
            _ => udp(5000, 9, 18),
        };
        let frame = eth(&lab, vec![]).frame(0x0800, &ipv4(base, dst, proto, (0, false), &l4));
        let kernel = what.contains("in-kernel");
        let mut lat = Vec::new();
        for _ in 0..trials {
            const FRAMES: u32 = 150_000;
            let sent = send(&lab, frame.clone(), FRAMES, sources, base);
            // The flood's first frame left this long ago; the in-kernel
            // trigger's crossing is the frame that takes the source over
            // --source-pps for one 100 ms epoch (2000 frames), at the
            // generator's mean rate. (Its first possible crossing: an
            // epoch closing mid-flood only moves it later.)
            let first = now_unix() - sent.as_secs_f64();
            let t0 = if kernel {
                first + sent.as_secs_f64() * 2000.0 / FRAMES as f64
            } else {
                first
            };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                let Some(v) = ds.next_line(Duration::from_millis(200)) else {
                    continue;
                };
                if let Some(e) = v.attack()
                    && e.phase == Phase::Start
                {
                    lat.push((e.ts - t0) * 1000.0);
                    break;
                }
            }
            // Let it end before the next trial.
            let quiet = Instant::now() + Duration::from_secs(6);
            while Instant::now() < quiet {
                if let Some(v) = ds.next_line(Duration::from_millis(100))
                    && v.attack().is_some_and(|e| e.phase == Phase::End)
                {
                    break;
                }
            }
        }
        drop(ds);
        let _ = std::fs::remove_file(&cfg);
        let detected = lat.len();
        let (p50, p95, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.95), pct(&mut lat, 1.0));
        rows.push(Row {
            section: "Detection latency",
            what: format!("{what}, {detected}/{trials} detected"),
            value: format!("p50 {p50:.0} ms, p95 {p95:.0} ms, max {max:.0} ms"),
            ratio: None,
            target: if kernel {
                "max <= 50 ms after crossing"
            } else {
                ""
            },
            met: if kernel {
                Some(detected == trials && max <= 50.0)
            } else {
                None
            },
        });
    }
}

/// 3b. kfree_skb path: cost per drop event, dropscope vs bpftrace, tp_btf
/// vs the classic tracepoint, all attached to the same drop flood.
fn kfree(rows: &mut Vec<Row>, n: u32, full: bool) {
    if !std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
    let lab = Lab::new();
    // No XDP on vb here: GRO gives it the NAPI that XDP_TX from va needs.
    lab.exec(&lab.b, &["ethtool", "-K", "vb", "gro", "on"]);
    let ids = || -> std::collections::HashSet<u32> {
        loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .collect()
    };
    let before = ids();
    let bt = bpftrace_by_reason();
    let mut bt = bt.ok().map(integration_tests::KillOnDrop);
    thread::sleep(Duration::from_secs(4));
    let bt_ids: Vec<u32> = ids().difference(&before).copied().collect();
    // The floor: an empty tp_btf/kfree_skb program, attached beside the
    // others, so every drop runs all of them and each trial measures all
    // of them on the same drops (interleaved, not one after the other).
    let mut floor_obj = EbpfLoader::new()
        .load(dropscope::kernel::TEST_OBJECT)
        .expect("load the test object");
    {
        let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
        let p: &mut aya::programs::BtfTracePoint = floor_obj
            .program_mut(drop_common::programs::KFREE_EMPTY)
            .unwrap()
            .try_into()
            .unwrap();
        p.load("kfree_skb", &btf)
            .expect("load the empty tp_btf program");
        p.attach().expect("attach the empty tp_btf program");
    }
    let watch = |hook: &str| {
        lab.dropscope(&[
            "watch",
            "--iface",
            "vb",
            "--xdp-mode",
            "none",
            "--format",
            "json",
            "--kfree-hook",
            hook,
        ])
    };
    let btf = watch("btf");
    let tp = watch("tracepoint");
    let stats_of = |want: &dyn Fn(&aya::programs::ProgramInfo) -> bool| {
        loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| want(p))
            .fold((0u64, 0u64), |(t, c), p| {
                (t + p.run_time().as_nanos() as u64, c + p.run_count())
            })
    };
    let is_bt = |p: &aya::programs::ProgramInfo| bt_ids.contains(&p.id());
    let named = |n: &'static str| move |p: &aya::programs::ProgramInfo| p.name_as_str() == Some(n);
    // The kernel keeps 15 bytes of a program's name.
    let floor_name = &drop_common::programs::KFREE_EMPTY[..15];
    let is_floor = |p: &aya::programs::ProgramInfo| p.name_as_str() == Some(floor_name);
    let all = || {
        [
            stats_of(&is_bt),
            stats_of(&named("kfree_skb_btf")),
            stats_of(&named("kfree_skb_tp")),
            stats_of(&is_floor),
        ]
    };
    let base = Ipv4Addr::new(198, 18, 0, 1);
    let trials = if full { 9 } else { 5 };
    // ns/event per program and trial: [bpftrace, tp_btf, tracepoint, floor].
    let mut per: [Vec<f64>; 4] = Default::default();
    let mut events = 0;
    for _ in 0..trials {
        let s0 = all();
        // Datagrams to a closed port: every one is a NO_SOCKET drop.
        send(&lab, v4_frame(&lab, base, vec![]), n, 1000, base);
        thread::sleep(Duration::from_millis(300));
        let s1 = all();
        for k in 0..4 {
            per[k].push((s1[k].0 - s0[k].0) as f64 / (s1[k].1 - s0[k].1).max(1) as f64);
        }
        events = s1[1].1 - s0[1].1;
    }
    drop(btf);
    drop(tp);
    drop(floor_obj);
    if let Some(b) = bt.as_mut() {
        let _ = b.0.kill();
    }
    let [bt_s, btf_s, tp_s, floor_s] = per.map(|mut v| Spread::of(&mut v));
    rows.push(Row::info(
        "kfree_skb path",
        format!("empty tp_btf/kfree_skb program (floor, {events} drops a trial)"),
        floor_s.ns(),
        Some(floor_s.median / bt_s.median),
    ));
    if bt_ids.is_empty() {
        rows.push(Row::info(
            "kfree_skb path",
            "bpftrace one-liner",
            "bpftrace did not start (apt-get install bpftrace; tracefs mounted?)".into(),
            None,
        ));
    } else {
        rows.push(Row::info(
            "kfree_skb path",
            "bpftrace count by reason",
            bt_s.ns(),
            Some(1.0),
        ));
    }
    let r = btf_s.median / bt_s.median;
    rows.push(Row {
        section: "kfree_skb path",
        what: "dropscope tp_btf/kfree_skb vs bpftrace".into(),
        value: btf_s.ns(),
        ratio: Some(r),
        target: "<= 0.5x bpftrace",
        met: (!bt_ids.is_empty()).then_some(r <= 0.5),
    });
    let f = btf_s.median / floor_s.median;
    rows.push(Row::goal(
        "kfree_skb path",
        format!(
            "dropscope tp_btf/kfree_skb vs the empty program (+{:.1} ns)",
            btf_s.median - floor_s.median
        ),
        format!("{f:.2}x"),
        f,
        "<= 2x empty",
        f <= 2.0,
    ));
    rows.push(Row::info(
        "kfree_skb path",
        "dropscope classic tracepoint",
        tp_s.ns(),
        Some(tp_s.median / bt_s.median),
    ));
}

/// The median of repeated trials and their min-max spread.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(v: &mut [f64]) -> Spread {
        let n = v.len();
        let median = pct(v, 0.5);
        Spread {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            n,
        }
    }

    /// "137.1 ns/event (median of 5, 130.2-145.0)".
    fn ns(&self) -> String {
        format!(
            "{:.1} ns/event (median of {}, {:.1}-{:.1})",
            self.median, self.n, self.min, self.max
        )
    }

    /// "88.2 ns (median of 5, 85.0-91.3)".
    fn ns_packet(&self) -> String {
        format!(
            "{:.1} ns (median of {}, {:.1}-{:.1})",
            self.median, self.n, self.min, self.max
        )
    }
}

/// 2b. The whole drop path with each observer alone: drops per second of
/// one flood of datagrams to a closed port (every one a NO_SOCKET drop,
/// counted by nstat), nothing attached vs dropscope, bpftrace, dropwatch.
fn droppath(rows: &mut Vec<Row>, n: u32, _full: bool) {
    let lab = Lab::new();
    lab.exec(&lab.b, &["ethtool", "-K", "vb", "gro", "on"]);
    let base = Ipv4Addr::new(198, 18, 0, 1);
    let measure = || rate(&lab, n, base, || lab.nstat(&lab.b, "UdpNoPorts")).median;
    let none = measure();
    let with_dropscope = {
        let _d = lab.dropscope(&[
            "watch",
            "--iface",
            "vb",
            "--xdp-mode",
            "none",
            "--format",
            "json",
        ]);
        measure()
    };
    let with_bpftrace = bpftrace_by_reason().ok().map(|c| {
        let _kill = integration_tests::KillOnDrop(c);
        thread::sleep(Duration::from_secs(4));
        measure()
    });
    // dropwatch needs the kernel's drop_monitor (CONFIG_NET_DROP_MONITOR).
    let with_dropwatch = Command::new("dropwatch")
        .args(["-l", "kas"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("dropwatch not installed ({e})"))
        .and_then(|mut c| {
            use std::io::Write;
            let mut stdin = c.stdin.take().unwrap();
            let _ = stdin.write_all(b"start\n");
            thread::sleep(Duration::from_secs(2));
            if let Ok(Some(_)) = c.try_wait() {
                let mut out = String::new();
                use std::io::Read;
                let _ = c.stdout.take().unwrap().read_to_string(&mut out);
                let _ = c.stderr.take().unwrap().read_to_string(&mut out);
                return Err(format!(
                    "dropwatch could not start: {}",
                    out.lines().next().unwrap_or("no output")
                ));
            }
            let _kill = integration_tests::KillOnDrop(c);
            let _stdin = stdin;
            Ok(measure())
        });
    rows.push(Row::info(
        "Drop path",
        "nothing attached",
        format!("{:.0} kdrops/s", none / 1e3),
        Some(1.0),
    ));
    rows.push(Row::info(
        "Drop path",
        "dropscope (tp_btf + XDP off)",
        format!("{:.0} kdrops/s", with_dropscope / 1e3),
        Some(with_dropscope / none),
    ));
    rows.push(Row::info(
        "Drop path",
        "bpftrace count by reason (peer)",
        with_bpftrace.map_or("bpftrace did not start".into(), |r| {
            format!("{:.0} kdrops/s", r / 1e3)
        }),
        with_bpftrace.map(|r| r / none),
    ));
    rows.push(Row::info(
        "Drop path",
        "dropwatch / drop_monitor (peer)",
        match &with_dropwatch {
            Ok(r) => format!("{:.0} kdrops/s", r / 1e3),
            Err(e) => e.clone(),
        },
        with_dropwatch.as_ref().ok().map(|r| r / none),
    ));
}

/// 4. User side: CPU share and peak RSS, idle and under a spoofed flood.
fn user(rows: &mut Vec<Row>, _n: u32, full: bool) {
    let secs = if full { 30 } else { 10 };
    for (what, interval, flood) in [
        ("idle, 1 s interval", "1s", false),
        ("spoofed flood (1M sources), 1 s interval", "1s", true),
        ("spoofed flood (1M sources), 100 ms interval", "100ms", true),
    ] {
        let lab = Lab::new();
        let ds = lab.dropscope(&[
            "watch",
            "--iface",
            "vb",
            "--interval",
            interval,
            "--format",
            "json",
        ]);
        let pid = dropscope_pid(&lab);
        // Steady state: skip start-up work (BTF, first samples).
        thread::sleep(Duration::from_secs(2));
        // Five consecutive windows of the run: the median and the spread.
        let window = Duration::from_secs_f64(secs as f64 / 5.0);
        let mut shares = Vec::new();
        let mut hwm = 0;
        for _ in 0..5 {
            let (c0, _) = proc_cpu_rss(pid);
            let t = Instant::now();
            if flood {
                let base = Ipv4Addr::new(100, 64, 0, 0);
                while t.elapsed() < window {
                    send(&lab, v4_frame(&lab, base, vec![]), 500_000, 1_000_000, base);
                }
            } else {
                thread::sleep(window);
            }
            let (c1, h) = proc_cpu_rss(pid);
            hwm = h;
            shares.push((c1 - c0) / t.elapsed().as_secs_f64() * 100.0);
        }
        let spread = Spread::of(&mut shares);
        let share = spread.median;
        let lines = ds.stop();
        let health = lines.last().map(|r| r.health.clone()).unwrap_or_default();
        let what = format!(
            "{what}: {} drop rows, {} sources tracked",
            health.drop_rows, health.sources_tracked
        );
        let (limit_cpu, limit_mem, target) = match (flood, interval) {
            (true, "1s") => (1.5, 64 * 1024, "< 1.5% of a core, < 64 MiB"),
            (true, _) => (3.0, 64 * 1024, "< 3% of a core, < 64 MiB"),
            (false, _) => (0.1, 30 * 1024, "< 0.1% of a core, < 30 MiB"),
        };
        rows.push(Row {
            section: "User side",
            what,
            value: format!(
                "{share:.2}% of a core (median of 5 windows, {:.2}-{:.2}), {:.1} MiB peak RSS",
                spread.min,
                spread.max,
                hwm as f64 / 1024.0
            ),
            ratio: None,
            target,
            met: Some(share < limit_cpu && hwm < limit_mem),
        });
    }
}

const METHODS: &str = r#"
## Methods

- **Beside xdp-filter**: xdp-filter (Debian's xdp-tools) in native mode on
  the receiving veth with a rule the traffic does not match, alone and then
  observed by dropscope in auto mode (fentry/fexit on it), measured in the
  same run with the same generator traffic. bpf_stats of xdp-filter's
  program include the trampolines and dropscope's entry and exit programs
  once observed. On a kernel that refuses tracing programs on other BPF
  programs (this project's 6.18 development kernel), only the first row is
  measured and the table says so.

- **Timed rows** are the median of at least 5 trials (rounds, runs or
  windows, as each section says) with the min-max spread beside it; each
  empty-program floor is measured in the same rounds as the programs it is
  the floor of, not once.
- **Generator**: the live-frames generator (BPF_PROG_TEST_RUN,
  `dropscope_gen`, batches of 64 frames out of one veth end) where the
  kernel allows it; where it refuses live frames (EPERM: a sandbox whose
  bounding set lacks CAP_SYS_RESOURCE, as some machines of this kind) the
  same frames go out through an AF_PACKET socket (`sendmmsg`, qdisc
  bypassed), slower per frame: the line above the table names the engine,
  and rates (throughput, drop path) are only comparable within one run.
- **XDP cost (NAPI)**: the generator
  transmits 64-byte UDP frames out of one end of a veth pair; the program
  under test runs in native mode on the other end, in NAPI, as in production.
  The receiving end polls in a NAPI thread of its own (`threaded` in sysfs),
  as a NIC's interrupt does on its CPU: frames come in batches of up to 64
  a poll, as under a flood. (Polled on the sender's CPU, an AF_PACKET frame
  is polled alone after the sender's system call and the stack have evicted
  the program's lines: +36 ns instead of +21 ns on the AMD EPYC,
  2026-12-07, a cost no busy NIC sees.)
  The per-packet cost is the kernel's own accounting (`kernel.bpf_stats_enabled`:
  run_time_ns / run_cnt of the program, which includes the statistics' own
  two clock reads). The floor is an XDP program that only
  returns XDP_PASS, attached to the same interface and fed the same frames;
  each of 9 rounds (15 with --full) measures the floor, the floor plus one
  read of the frame's Ethernet type (what touching the frame's first line
  costs), then dropscope (one source, a million random sources, IPv6,
  802.1Q, 1M frames each).
  "1M random sources" draws each frame's source from a million addresses.
- **XDP cost (test run)**: BPF_PROG_TEST_RUN repeating one frame (hot
  caches), best of 3 interleaved rounds; one frame means one source, so
  random sources are measured in NAPI only. "dropscope" is the program
  `watch` attaches to its first interfaces (slot fixed at build time); the
  generic program, which looks the slot up from the frame's ifindex, serves
  a fifth interface and beyond. Reported with the ns added, held to no
  ratio: the issue's target is the NAPI rows, and a hot-cache loop's
  floor (10 ns on a fast CPU) makes any ratio large.
- **Throughput**: packets received on the veth end (`ip -s link`) per second of
  generator time (median of 5 rounds, each measuring every row in turn,
  the floors first), with no program (GRO on, for NAPI), the
  empty program, dropscope with XDP only (`--kfree-hook none`), the same with
  `--enforce` holding 100 blocklist prefixes the traffic does not match, the
  full dropscope (the frames go to a closed port, so every one is also a
  kfree_skb drop), and a userspace AF_PACKET socket counting every frame on
  the interface (the classic alternative to XDP counting; its share of the
  frames, socket drops and CPU are shown).
- **Drop path**: drops per second (nstat `UdpNoPorts` over generator time,
  median of 5) of one closed-port flood with nothing attached, dropscope
  alone (tp_btf, XDP off), a bpftrace one-liner alone and dropwatch alone
  (drop_monitor; run only where the kernel has it).
- **Detection latency**: unix time of the attack `start` event minus the time
  the generator started, over 10 trials (20 with --full; the attack is let
  end between trials). Adaptive detection waits for the next sample (100 ms
  interval), so its rows include the time to the crossing. A configured
  threshold fires in the kernel and wakes the loop at once: its row is
  measured from the crossing, the frame that takes the source over
  --source-pps for one 100 ms epoch (the 2000th, at the generator's mean
  rate; an epoch closing mid-flood only moves the real crossing later, so
  this overstates the latency, never understates it).
- **User side**: CPU time of the dropscope process (utime + stime) over
  each of 5 consecutive 2 s windows (6 s with --full), and its peak RSS (VmHWM), with an idle lab and with a continuous
  spoofed flood of a million sources to a closed port (every packet is also
  a drop, so the drop tables fill: the row says how many drop rows and
  tracked sources the last report held).

- **kfree_skb path**: a drop flood (datagrams to a closed port, every one a
  NO_SOCKET drop, 1M per trial, 5 trials) with four programs attached at
  once, so each trial measures all of them on the same drops: an empty
  `tp_btf/kfree_skb` program (the floor: the dispatch and the statistics
  alone), a bpftrace one-liner counting kfree_skb by reason, dropscope with
  `tp_btf/kfree_skb` and a second dropscope with the classic tracepoint;
  the kernel's per-program statistics give the cost per event.

## Where the targets are missed, and what would close them

Figures move by several ns and percent between runs on this 2-CPU
virtual machine (the NAPI rows' spreads show it); the table above is one
run and the verdicts are its own. They move far more between machines of
this kind (each a 2-CPU virtual machine on Linux 6.18 whose host is not
ours to see): on the Intel Xeon of 2026-12-03 both hot paths added about
3x the nanoseconds they add on the AMD EPYC of 2026-12-04, and an AMD EPYC
of 2026-12-02 paid +53 ns on the kfree_skb path too, so the vendor alone
does not decide it:

| measurement (target) | Intel Xeon, 2026-12-03 | AMD EPYC, 2026-12-04 | AMD EPYC (family 25), 2026-12-07 | AMD EPYC 7002, 2026-12-08 |
| --- | --- | --- | --- | --- |
| XDP in NAPI, one source (<= 1.4x) | 2.25x, +57.5 ns | 1.39x, +16.5 ns | 1.69x, +41.7 ns | 1.68x, +18.1 ns |
| XDP in NAPI, 1M random sources (<= 1.4x) | 2.22x, +56.0 ns | 1.36x, +15.1 ns | 1.72x, +43.0 ns | 1.71x, +19.0 ns |
| kfree_skb vs bpftrace (<= 0.5x) | 0.74x | 0.42x | 0.43x | 0.51x |
| kfree_skb vs the empty program (<= 2x) | 2.21x, +54.2 ns | 1.37x, +18.6 ns | 1.71x, +46.1 ns | 1.99x, +29.1 ns |

The last two columns are full runs on two later fresh machines of
this kind: the first before this stop's per-frame walk, the second after
it (the table above). Their NAPI floors were 60 and 26.5 ns: the same
added ns is a larger ratio on a faster machine.

The AMD column is the full run of 2026-12-04 after both of this stop's
layout changes below; the Intel one is from before them, not measured
again. On the AMD machine the one-source NAPI row sits at the target's
edge: 1.38x to 1.43x over four runs of the day (1.43x before the first
change). Between runs minutes apart the kfree_skb row drifts by 3 to 7
ns on this machine, about as much as a change saves: the kfree_skb change
below was measured interleaved with the build before it; the NAPI one
only in runs minutes apart (the NAPI rows drifted less, about 1 ns).

- **Why it moves with the machine.** The added cost is not instructions
  but memory the empty program never touches: this CPU's counter lines,
  the interface slot, the device and netns behind the skb, the packet's
  headers. The stack runs between two frames (or two drops) and evicts
  them, so each line is a likely miss, and a miss costs that much more on
  some of these machines. The lever is mostly touching fewer lines; on
  the sampled path, instructions counted too (next item).
- **XDP in NAPI: met on the AMD machine since the address change
  below; not met on the Intel one when last measured, before it.** On
  2026-12-07 (AMD EPYC, the AF_PACKET generator since live frames
  were refused, receive side polled in its NAPI thread): one source 1.44x
  and 1.45x (+20.6 and +22.0 ns), 1M random sources 1.40x and 1.46x in
  two runs of the day; the week before, with the live-frames generator,
  1.39x / 1.36x (+16.5 / +15.1 ns). Later the same day, measured by
  changing only the sampler's budgets (`--only xdp-napi`, runs minutes
  apart): with almost no packet on the full per-source path (exact budget
  1000 an interval, 1 in 1024 after) the rows are 1.21x / 1.22x (+9.7 /
  +10.4 ns); with every packet on it, +115.5 ns one source, +74.2 ns random
  sources (which skip the source table past the budget). So the shape
  counters cost ~10 ns and the sampled full path (~9% of the frames at
  this rate: the first 20 000 a second per CPU, then 1 in ~32) the other
  ~10. In a test run the source table's LRU hash lookup was 52 of the full
  path's 99 ns; a per-CPU cache in front of it (`SRC_CACHE`, 64 slots,
  heavy sources only, flushed every 1024 packets) cut the NAPI full path
  for one source from +115.5 to +74.3 ns. The default rows did not move
  beyond the run-to-run noise (+20.0 and +20.6 ns after, +19.3 and +22.0
  before), and the random-source row cannot gain from it: its full path
  is the sketches' and the second parse's. Splitting the two budgets
  (same runs, after the cache): exact budget only (1 in 1024 after it)
  +16.3 / +16.5 ns, the 1-in-32 samples only +16.9 / +20.5 ns. So the
  exact budget's frames (hot: they come one after another) add ~6.5 ns a
  frame at this rate, and the 1-in-32 samples ~7 ns (one source) to ~10
  ns (random): about 230 and 330 ns per sample, because a sample comes
  after ~32 frames of stack work that evicted its ~12 lines (epoch state,
  two HLL registers, 4 + 2 sketch rows, port buckets, the cache slot).
  Read in the object (`llvm-objdump` of `dropscope_xdp_0`), the sampled
  path was also long for a bad reason: the source address travelled as
  16 one-byte values from the sampled parse on, so every parse branch
  zeroed and spilled 16-20 stack slots (three times on the IPv4 path) and
  each use copied 16 bytes one by one. Since then the address is four
  words (`parse::Addr`), read once after the parse's branches join, and
  the key is built from them (2899 -> 2513 instructions). The first full
  run after it gave one source 1.31x (+14.2 ns), 1M random sources 1.35x
  (+15.9 ns); later full runs with 9 rounds on a noisier host 1.33x /
  1.38x (+15.2 / +17.5 ns) and, the table above, 1.30x / 1.38x (+14.2 /
  +17.5 ns); `--only xdp-napi` runs on the
  day of the change gave +13.6 to +15.5 and +15.9 to +18.3 ns, later
  ones on the noisier host random +17 to +25 ns. What the random row
  pays beyond one source, and what it does not, measured. The frame's first
  line costs nothing here: the floor plus one read of the frame equals
  the floor, since veth copies the frame into a page-pool page just
  before XDP runs (a NIC's freshly written frame may be colder, for any
  program that reads it). And none of these moved the random row beyond
  the noise: the count-min sketch's four counters in one cache line,
  per-CPU LRU lists for the source table (`BPF_F_NO_COMMON_LRU`), one
  shared value per source added with BPF_XADD instead of per-CPU values,
  the receiving NAPI thread and dropscope pinned to different CPUs. With
  the new-source budget at 0 the random row was the one-source row (+13.9
  and +13.9 ns in one run, +13.2 vs +14.4 in another). So the difference
  is the budget's source-table inserts, about 330 ns
  each (an insert into a full LRU evicts: cold entries and buckets),
  4096 an interval per CPU: a cost per second that the packet rate
  divides, ~4.5 ns a frame at this veth's ~300 kpps, under 1 ns at 2
  Mpps. That keeps the random row at the target's edge here. Tried and dropped:
  a branchy leading-zeros for the HLL rank (its branches mispredict on
  random hashes), and counting a sampled frame from its own parse instead
  of parsing it again (+18.3 / +20.8 ns: the count code in two copies).
  On 2026-12-07 (evening) four more, each against the build before it in
  `--only xdp-napi` runs interleaved two by two, moved neither row beyond
  the drift between runs (about 2 ns): the source table as a plain per-CPU
  hash without LRU (random +19.4 / +19.5 vs +19.4 / +18.8 ns: the LRU's
  lists and evictions are not what an insert costs), the HLL rank by a de
  Bruijn multiply and a 32-byte table instead of LLVM's 45-instruction
  leading-zeros expansion (66 instructions fewer; one source +16.0 / +14.0
  vs +13.8 / +15.3 ns), the sampler taking runs of 4 packets after each
  gap (the same 1 in 32 share, so the rest of a run would find the full
  path's lines warm: one source +15.8 / +15.7 vs +14.7 / +14.2 ns, random
  +18.6 / +21.6 vs +19.1 / +18.3 ns), and an insert before any lookup for
  a source new in the epoch's sketch once an eighth of the budget was
  spent (skipping the lookup that misses: random +20.5 / +18.5 vs +18.4 /
  +18.1 ns). A profile of that day (`perf record -a` over `--only
  xdp-napi`, 3068 samples in the program and the helpers it called) put
  290 in the source table's helpers, the random trials' inserts: the walk
  of a cold bucket (`lookup_nulls_elem_raw`, 114: once in the lookup that
  misses, once in the insert), the update (55), the lookup (54), the LRU
  free-list pop (51). Eleven measurements of that day's build (ten `--only
  xdp-napi` runs and a full run) gave the random row 1.35x to
  1.49x (five at or over 1.40x, on a host noisier than the day before:
  floor up to 51 ns) and the one-source row 1.29x to 1.35x.
  On 2026-12-07 (night) a fresh machine of this kind (AMD EPYC, family 25
  model 1, 2 CPUs; a noisier and slower host: the NAPI floor 55-74 ns,
  single trials up to 134 ns, the kernel matrix under TCG twice as slow)
  missed rows the day's other machine met. The full run above (unchanged
  build): NAPI one source 1.69x (+41.7 ns), 1M random sources 1.72x
  (+43.0 ns), XDP-only throughput 0.85x and `--enforce` 0.83x (their
  spreads overlap the empty program's), kfree 0.43x bpftrace and 1.71x
  the empty program (met), user side 1.45% at 1 s and 1.97% at 100 ms
  (met). An `--only xdp-napi` run an hour before gave 1.50x / 1.58x
  (+27.3 / +31.8 ns). Where the NAPI cost goes there, from builds cut
  down step by step and measured interleaved in the same rounds (a
  throwaway harness: each round the floor, then every build's one-source
  and random trials, medians of 9; added ns, one source / random): entry,
  the slot's per-CPU value and one counter write +3.6 / +3.5; plus the
  parse +8.7 / +7.6 and, another run, +10.8 / +11.0; plus the shape
  counters and the sampler, with almost no frame on the full path (exact
  budget 1000, then 1 in 1024) +19.9 / +18.8 and +19.2 / +19.0; the
  default build +30.8 / +32.6. So on that host every frame's own work is
  already ~19 ns, 1.32x its floor, before any per-source accounting, and
  the sampled path adds ~11-13 ns at the veth's ~250-300 kpps. Tried there
  and not kept, none beyond the noise (trials moved by 10-30 ns between
  rounds): the class and TTL counts kept in a run accumulator beside the
  sampler, flushed when the shape changes (two counter lines fewer a frame
  in a uniform flood: +29.1 / +35.9 vs +29.5 / +35.2); the sampled path's
  code removed altogether, to see whether the program's size costs the
  counting frames (+20.1 / +14.3 vs +19.2 / +19.0: it does not); a CPU
  past its exact budget in one epoch sampling from the start of the next
  (the sustained flood's 20 000 exact frames a second, ~7% of the frames
  at this rate: one source -2.3, -5.2 and +8.6 ns, random +3.3, +0.2 and
  +6.4 ns over three interleaved runs); the NAPI thread pinned to its own
  CPU and the generator to the other (slower, not steadier: +30.5 /
  +37.5 ns pinned, against +26.7 to +30.8 / +28.5 to +35.2 ns unpinned in
  the runs around it). Two-byte header reads as one
  load instead of two byte loads take 44 of 2512 instructions off the
  program, few on the per-frame path, and need misaligned pointer reads;
  not tried in NAPI. On such a host the NAPI target needs the per-frame
  path itself to shrink (parse and counters), not the sampled path.
  On 2026-12-08 a third machine of this kind (AMD EPYC 7002: family 23
  model 49, 2 CPUs) was quiet (NAPI trials within about 1 ns of each
  other) and fast: NAPI floor 26.5 ns, test-run floor 10 ns, bpftrace
  117 ns a drop. Against floors that low the same program's ratios are
  worse: its first full run (the build of 2026-12-07) gave NAPI one
  source 1.78x (+20.9 ns), random 1.81x (+21.6 ns), kfree 0.53x bpftrace
  and 2.09x the empty program (+32.2 ns), every other row met. Builds
  cut down step by step, measured interleaved in the same rounds with
  the throwaway harness (medians of 5-7, ns added over the floor, one
  source; random within 1 ns of it): entry, the slot's value and one
  counter write +1.3; without the sampled path +10.4 (so that path, 5-7%
  of the frames here, +6.7: ~110 ns a sample); the counters without the
  counting parse +3.7 (so the parse +6.2). The change kept: the counting
  parse walks for the class only (`parse::Visit`, `Classify`: the class's
  two parts, the TTL, the source's offset) instead of building a whole
  `Shape` (ports, flags and source, each an `Opt` written on every
  branch): 47.7 / 48.5 -> 42.9 / 42.9 ns interleaved (-4.8 / -5.6 ns;
  2277 -> 2126 instructions as the verifier leaves them).
  Tried on that machine and not kept, each an interleaved A/B within
  0.7 ns of the build before it (one source): two-byte packet loads instead of byte
  pairs (64 instructions fewer, needs unaligned pointer reads:
  -0.7 ns), the HLL rank by a de Bruijn multiply (71 fewer: +0.2), no heavy-port hash on the sampled path (-0.4),
  a run accumulator that touches one line a frame in a uniform flood
  (+0.7), `Classify` packed into one register so nothing of it spills
  (-0.2); the eBPF built with 32-bit ALU instructions (bpf-linker
  `--cpu-features=+alu32`) grew the slot program from 2062 to 2761
  instructions and was not measured. Sampling 1 in 64 instead of 32
  after the exact budget saves 1.8 ns; not kept (it halves the samples
  the estimates stand on). A profile of that machine (`perf record -a
  -F 10000` over 15M frames) put only ~6 ns a frame in the program's
  own samples and 8381 in `pvclock_clocksource_read_nowd`: bpf_stats
  times each run with two clock reads, and under KVM the clock read is
  an ordered TSC read that waits for the program's outstanding loads,
  so what the NAPI rows measure is mostly memory latency, which
  instruction counts barely move. What is left there: +16.6 ns over a
  26.5 ns floor, where 1.4x allows +10.6: the parse ~6, entry and
  counters ~4, the sampled path ~6.7. On the kfree_skb path the
  attribution sampler's 1-in-32 drops are 10 ns of the +32 (a build
  without it: 50.8 and 51.4 ns against 59.5 and 63.2). The full run
  after the change (the table above): NAPI 1.68x / 1.71x (+18.1 / +19.0
  ns), kfree 0.51x bpftrace and 1.99x the empty program, every other
  row met; the throughput rows now interleaved with their floors (0.98x
  and 0.97x).
  Where the time went on the Intel machine, from a profile of `bench --only xdp-napi`
  (`perf record -a`, 893 samples in dropscope's XDP program, each mapped
  to its source line through the program's JIT line info with
  `tests/tools/bpf-lines.py`): the interface lookup 30% (the
  `ingress_ifindex` pointer chase through the receive queue to the
  device 8%, the slot array and per-CPU value lookups 22%), the frame's
  header reads and the parse 30%, the shape counters 18% (the class
  counter alone 6%, the TTL histogram 3%), the sampler 6%, the sampled
  per-source path 5% (its LRU hash lookups under 0.1% of all samples),
  entry 3%. The class counters cut the increments per frame from about
  fifteen to five (11-17 ns saved); since then a class's bytes sit beside
  its packets and the size buckets beside the sampler, so a frame touches
  one counter line fewer (one source +18.5 -> +16.3 ns on the AMD
  machine, runs minutes apart). The header reads are work the stack does next anyway (on the
  whole path they move a miss, they do not add one), which the
  throughput rows show: XDP-only dropscope runs at the empty program's
  packet rate. Since 2026-12-07 the first four watched interfaces
  run copies of the program with their slot a constant
  (`dropscope_xdp_0..3`, one object, shared maps): no per-frame ifindex
  read through the receive queue and device, no slot lookup. Measured
  only outside this table (the live-frames generator was refused to that
  session's shell): old and new builds interleaved on a veth fed by a
  UDP socket, 3 rounds, -3.5 to -4.7 ns a packet on the AMD EPYC; the
  Intel machine has not been measured since. What is left there: the TTL
  histogram on the sampled path (which changes what the spoofing
  evidence can claim).
- **kfree_skb path: met on the AMD machine; on the Intel one not met
  before this stop's change and not measured since.** The per-drop work:
  the skb -> device -> netns BTF loads (pointer chases, each a likely
  miss), the event count, the per-CPU slot row (no hash per drop) and the
  attribution sampler (exact for 2000 drops per CPU and interval, then 1
  in ~32 drops pays two LRU lookups and a header read). The event count,
  the sampler and the slot table were three per-CPU values (three lines
  and three lookups a drop); they are now one (`DropSlots`: the count and
  the sampler share its first line). Interleaved with the build before it
  on the AMD machine, three rounds each of `--only kfree`: +19.8 / +22.7
  / +16.8 ns -> +19.6 / +15.3 / +14.6 ns over the empty program (medians
  19.8 -> 15.3; the drift is as large). What is left: the
  device's netns behind two pointer loads (a per-CPU cache by device
  pointer would go stale when a device moves between namespaces), the
  config's line and the event-stream switch.
- **Beside xdp-filter (target: observed throughput >= 0.85x): not
  measurable here, not met where measured.** This host's kernel refuses
  observe mode. Inside the kernel matrix's 6.12 VM (QEMU TCG, `bench
  --only observe` in the guest; absolute figures are emulation's) the
  entry program's probe reads were the cost: one
  `bpf_probe_read_kernel` per xdp_buff field, device field and header.
  The xdp_buff fields now come in one read, the queue's ifindex and netns
  are cached for the epoch, and the source address is read only by an
  exit that counts a drop: dropscope's entry + exit programs 3422 ->
  2176 ns a packet there, trampolines 782-1088 ns, veth throughput 0.62x
  before and after (TCG's own cost per packet dominates the ratio).
  Tried on 2026-12-07 and not kept: the entry copying the frame's first
  128 bytes with one probe read and parsing from the copy (one helper
  call instead of one per header): old and new builds interleaved in the
  6.12 VM, entry + exit 1034 / 1043 ns vs 979 / 1121 ns, throughput
  0.68x / 0.67x vs 0.71x / 0.64x: no difference beyond the noise, so the
  extra map and verifier paths were not worth it. KVM, which would measure
  it at native speed, cannot run guests on these machines (with a CPU
  model the nested guest crawls and then faults on cmpxchg16b or xrstor:
  the outer hypervisor hides those features from KVM).
- **In-kernel trigger latency: met** (max under 50 ms over 10 trials from
  the crossing). Two causes of the old outliers are gone: a trigger within
  20 ms of the last sample was dropped (the crossing fires once per epoch,
  so the event waited for the next interval) and is now deferred to 20 ms
  after it; and the first reasonless drop made the loop read and sort
  /proc/kallsyms (about 80 ms) inside a tick, now done on a thread from the
  start.
- **User side: met** (under 1.5% of a core at 1 s, under 3% at 100 ms,
  under 30 MiB idle). The source table under a spoofed flood was full of
  one-packet sources (each interval's budget of new sources admits them):
  a read of 65 536 entries cost 36-55 ms. A table past 8192 entries now
  expires the sources under 1024 packets that sent nothing since the last
  read; the drop hashes are read only when a drop was counted in one
  (most count in the per-CPU slot table; `kfree_health::HASHED` says
  when); per-source drops are read with the source table, about once a
  second; per-reason totals only once a table was full. Idle memory: the
  per-drop event ring (4 MiB, mapped twice by the kernel: 8 MiB resident)
  and the PCAP ring are mapped only when read (doctor, --pcap-dir), and
  the kernel's symbol table keeps its names in one string. Idle CPU was at
  its target's edge (0.07-0.08% of a core, 2026-12-07): most of it was
  system calls around the interface counters, 85 an interval (ten files
  opened, statted and closed, three sockets made, a JSON line written in
  1 KiB pieces). The files and sockets are now opened once and the files
  read again from offset 0 (about 25 calls an interval): 0.04% idle, old
  and new builds interleaved; the 100 ms flood row 1.35% -> 1.2%. Under
  the flood, most of what is left is the kernel walking the source
  table's 65 536 buckets in the batch read, once a second.

dropwatch needs the kernel's drop_monitor (CONFIG_NET_DROP_MONITOR); where
the kernel lacks it, its row says so.
"#;
