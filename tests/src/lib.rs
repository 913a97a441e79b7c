//! Real-kernel test lab: network namespaces joined by veth pairs, traffic
//! sent from inside them, and the real `dropscope` binary watching.
//! Everything a lab creates is removed when it is dropped, even on panic.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use dropscope::schema::{IfaceReport, Line, Report};
use serde_json::Value;

pub mod frames;
pub mod generator;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Path of the dropscope binary under test (set by `cargo xtask test`).
/// `dropscope watch` on vb, 200 ms interval, JSON lines: what most tests run.
pub const WATCH_VB: [&str; 7] = [
    "watch",
    "--iface",
    "vb",
    "--interval",
    "200ms",
    "--format",
    "json",
];

/// `dropscope watch` on vb every 100 ms, JSON lines, its own namespace
/// only: what the flood, corpus and observe tests and the bench run.
pub const WATCH_VB_FAST: [&str; 8] = [
    "watch",
    "--iface",
    "vb",
    "--interval",
    "100ms",
    "--format",
    "json",
    "--own-netns",
];

/// What `cargo xtask dist` made (the static binary `dropscope` and the
/// Debian package), as `cargo xtask test` passes it.
pub fn dist_dir() -> std::path::PathBuf {
    let p = std::env::var("DROPSCOPE_DIST")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/dist").into());
    assert!(
        p.join("dropscope").exists(),
        "no static build in {}: run `cargo xtask dist` (cargo xtask test does)",
        p.display()
    );
    p
}

pub fn dropscope_bin() -> String {
    if let Ok(p) = std::env::var("DROPSCOPE_BIN") {
        return p;
    }
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/dropscope");
    assert!(
        std::path::Path::new(p).exists(),
        "dropscope binary not built: run `cargo xtask test`"
    );
    p.to_string()
}

/// Runs a command, panicking with its stderr if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces, `a` (sender) and `b` (receiver, where dropscope runs),
/// joined by veth `va` <-> `vb`, with IPv4 and IPv6 addresses and static
/// neighbour entries so no ARP/NDP traffic mixes into the counts.
pub struct Lab {
    pub a: String,
    pub b: String,
    /// Subnet number: addresses are 10.77.N.0/24 and fd77:N::/64.
    pub n: u32,
}

impl Lab {
    pub fn new() -> Lab {
        let id = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        let n = (std::process::id() % 200) + id;
        let tag = format!("{}-{}", std::process::id(), id);
        let lab = Lab {
            a: format!("dstest-{tag}-a"),
            b: format!("dstest-{tag}-b"),
            n: n % 250,
        };
        sh(&["ip", "netns", "add", &lab.a]);
        sh(&["ip", "netns", "add", &lab.b]);
        lab.wire();
        lab
    }

    /// (Re)creates the veth pair va <-> vb with addresses and neighbours.
    pub fn wire(&self) {
        let lab = self;
        sh(&[
            "ip", "link", "add", "va", "netns", &lab.a, "type", "veth", "peer", "name", "vb",
            "netns", &lab.b,
        ]);
        for (ns, dev, host) in [(&lab.a, "va", 1), (&lab.b, "vb", 2)] {
            // No router solicitations or RAs: the link stays quiet.
            lab.sysctl(ns, &format!("net.ipv6.conf.{dev}.accept_ra=0"));
            lab.sysctl(ns, &format!("net.ipv6.conf.{dev}.router_solicitations=0"));
            lab.ip(ns, &["link", "set", "lo", "up"]);
            lab.ip(
                ns,
                &["addr", "add", &format!("{}/24", lab.v4(host)), "dev", dev],
            );
            lab.ip(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/64", lab.v6(host)),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            lab.ip(ns, &["link", "set", dev, "up"]);
        }
        lab.pin_neighbours("va", "vb", &[1], &[2]);
    }

    pub fn v4(&self, host: u32) -> String {
        format!("10.77.{}.{}", self.n, host)
    }

    pub fn v6(&self, host: u32) -> String {
        format!("fd77:{:x}::{:x}", self.n, host)
    }

    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a command inside a namespace.
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn sysctl(&self, ns: &str, kv: &str) {
        self.exec(ns, &["sysctl", "-qw", kv]);
    }

    fn mac(&self, ns: &str, dev: &str) -> String {
        let out = self.ip(ns, &["-o", "link", "show", dev]);
        let i = out.find("link/ether ").expect("ether address") + 11;
        out[i..i + 17].to_string()
    }

    /// Static ARP/NDP entries both ways for the given host numbers.
    pub fn pin_neighbours(&self, dev_a: &str, dev_b: &str, a_hosts: &[u32], b_hosts: &[u32]) {
        let a: Vec<String> = a_hosts
            .iter()
            .flat_map(|h| [self.v4(*h), self.v6(*h)])
            .collect();
        let b: Vec<String> = b_hosts
            .iter()
            .flat_map(|h| [self.v4(*h), self.v6(*h)])
            .collect();
        self.pin_addrs(dev_a, dev_b, &a, &b);
    }

    /// Static neighbour entries: `a_addrs` live on dev_a (ns a), `b_addrs` on dev_b.
    pub fn pin_addrs(&self, dev_a: &str, dev_b: &str, a_addrs: &[String], b_addrs: &[String]) {
        let mac_a = self.mac(&self.a, dev_a);
        let mac_b = self.mac(&self.b, dev_b);
        for addr in a_addrs {
            self.ip(
                &self.b,
                &[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &mac_a,
                    "dev",
                    dev_b,
                    "nud",
                    "permanent",
                ],
            );
        }
        for addr in b_addrs {
            self.ip(
                &self.a,
                &[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &mac_b,
                    "dev",
                    dev_a,
                    "nud",
                    "permanent",
                ],
            );
        }
    }

    /// Runs `f` on a thread that lives in namespace `ns`: sockets it opens belong there.
    pub fn in_ns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in_ns(ns, f)
            .join()
            .expect("namespace thread panicked")
    }

    /// Starts `f` on a thread that lives in namespace `ns` and returns at once.
    pub fn spawn_in_ns<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{ns}");
        thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Sends `count` UDP datagrams of `size` bytes from `from` to `to`, paced so
    /// no queue on the way overflows: every datagram reaches `to`'s stack.
    pub fn send_udp(&self, ns: &str, from: SocketAddr, to: SocketAddr, count: u32, size: usize) {
        self.in_ns(ns, move || {
            let s = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
            let buf = vec![0x5au8; size];
            for i in 0..count {
                s.send_to(&buf, to)
                    .unwrap_or_else(|e| panic!("send to {to}: {e}"));
                if i % 32 == 31 {
                    thread::sleep(Duration::from_micros(500));
                }
            }
        });
    }

    /// Sends hand-built Ethernet frames out of `dev` in namespace `ns`
    /// through an AF_PACKET socket (VLAN tags, fragments, TCP flags...).
    pub fn send_frames(&self, ns: &str, dev: &str, frames: Vec<Vec<u8>>) {
        let ifindex = self.ifindex(ns, dev);
        self.in_ns(ns, move || {
            // The socket closes when `sock` drops, at the end of this scope.
            let (sock, mut sll) = packet_socket(ifindex);
            let fd = sock.as_raw_fd();
            for (i, f) in frames.iter().enumerate() {
                sll.sll_addr[..6].copy_from_slice(&f[..6]);
                let r = unsafe {
                    libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        &sll as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(
                    r,
                    f.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
                if i % 32 == 31 {
                    thread::sleep(Duration::from_micros(500));
                }
            }
        });
    }

    /// Interface index of a device in a namespace.
    pub fn ifindex(&self, ns: &str, dev: &str) -> u32 {
        self.ip(ns, &["-o", "link", "show", dev])
            .split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or_else(|| panic!("no interface {dev} in {ns}"))
    }

    /// MAC address of a device, as bytes.
    pub fn mac_bytes(&self, ns: &str, dev: &str) -> [u8; 6] {
        let m = self.mac(ns, dev);
        let mut out = [0u8; 6];
        for (i, p) in m.split(':').enumerate() {
            out[i] = u8::from_str_radix(p, 16).unwrap();
        }
        out
    }

    /// nstat's absolute value of a SNMP counter inside a namespace.
    pub fn nstat(&self, ns: &str, counter: &str) -> u64 {
        let out = self.exec(ns, &["nstat", "-asz", counter]);
        out.lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(counter)).then(|| it.next().unwrap().parse().unwrap())
            })
            .unwrap_or(0)
    }

    /// Starts dropscope inside namespace b.
    pub fn dropscope(&self, args: &[&str]) -> Dropscope {
        Dropscope::start(&self.b, args)
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A running `dropscope watch --format json`, killed if the test panics.
pub struct Dropscope {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Dropscope {
    pub fn start(ns: &str, args: &[&str]) -> Dropscope {
        Self::start_in(Some(ns), args)
    }

    /// Starts dropscope in namespace `ns`, or in the test's own with `None`.
    pub fn start_in(ns: Option<&str>, args: &[&str]) -> Dropscope {
        Self::start_with_env(ns, &[], args)
    }

    /// As `start_in`, with extra environment variables for dropscope.
    pub fn start_with_env(ns: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Dropscope {
        let cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &dropscope_bin()]);
                c
            }
            None => Command::new(dropscope_bin()),
        };
        Self::spawn(cmd, env, args)
    }

    /// Starts dropscope in namespace `ns`'s network only (nsenter): unlike
    /// `ip netns exec` it keeps the host's /sys, so bpffs pins (libxdp's
    /// dispatcher) and tracefs stay visible.
    pub fn start_nsenter(ns: &str, args: &[&str]) -> Dropscope {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg(dropscope_bin());
        Self::spawn(c, &[], args)
    }

    /// Starts `cmd` (which ends up exec'ing a dropscope) with `args`.
    pub fn start_command(cmd: Command, args: &[&str]) -> Dropscope {
        Self::spawn(cmd, &[], args)
    }

    fn spawn(mut cmd: Command, env: &[(&str, &str)], args: &[&str]) -> Dropscope {
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dropscope");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&l);
                    s.push('\n');
                }
                if l.starts_with("dropscope: ") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut d = Dropscope {
            child: Some(child),
            lines,
            stderr,
        };
        // Attached once it says so; a dropscope that can't load eBPF fails the test here.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "dropscope exited ({status}) before attaching:\n{}",
                    d.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dropscope did not attach in 60 s:\n{}",
                d.stderr()
            );
        }
        d
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Next JSON line (a report or an attack event), waiting up to
    /// `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<Line> {
        self.lines
            .recv_timeout(timeout)
            .ok()
            .map(|l| parse_line(&l))
    }

    /// The process id (`ip netns exec` execs dropscope in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGINT, waits for exit 0, and returns every line it printed.
    pub fn stop(mut self) -> Run {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().expect("wait dropscope");
        let mut out = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        assert!(
            status.success(),
            "dropscope exited with {status}:\n{}",
            self.stderr()
        );
        thread::sleep(Duration::from_millis(50));
        Run {
            lines: self.lines.try_iter().map(|l| parse_line(&l)).collect(),
        }
    }
}

impl Drop for Dropscope {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A line of dropscope's output as its typed schema. Every line must
/// parse, and the typed value must write back exactly the JSON it came
/// from: a field the types do not know would be lost, and fails here.
pub fn parse_line(l: &str) -> Line {
    let line = Line::parse(l).unwrap_or_else(|e| panic!("{e}"));
    let back = match &line {
        Line::Watch(r) => serde_json::to_value(r),
        Line::Attack(a) => serde_json::to_value(a),
        Line::Doctor(d) => serde_json::to_value(d),
    }
    .unwrap();
    let orig: Value = serde_json::from_str(l).unwrap();
    if let Some(d) = difference(&orig, &back, "") {
        panic!("the typed line does not write back what was read ({d}): {l}");
    }
    line
}

/// Where two JSON values first differ, as a path and the two values.
fn difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .find_map(|(k, v)| match y.get(k) {
                Some(w) => difference(v, w, &format!("{path}.{k}")),
                None => Some(format!("{path}.{k} lost")),
            })
            .or_else(|| {
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{path}.{k} added"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| difference(v, w, &format!("{path}[{i}]"))),
        _ => (a != b).then(|| format!("{path}: {a} became {b}")),
    }
}

/// Every line of a finished run's stdout, typed.
pub fn parse_stdout(stdout: &str) -> Run {
    Run {
        lines: stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_line)
            .collect(),
    }
}

/// Everything one dropscope run printed on stdout, in order.
pub struct Run {
    pub lines: Vec<Line>,
}

impl Run {
    /// The interval reports, in order.
    pub fn reports(&self) -> impl DoubleEndedIterator<Item = &Report> + Clone {
        self.lines.iter().filter_map(Line::watch)
    }

    /// The attack events, in order.
    pub fn attacks(
        &self,
    ) -> impl DoubleEndedIterator<Item = &dropscope::schema::AttackEvent> + Clone {
        self.lines.iter().filter_map(Line::attack)
    }

    /// The last interval report (every run prints one at exit).
    pub fn last(&self) -> Option<&Report> {
        self.reports().next_back()
    }

    /// The last interval report, owned.
    pub fn into_last(mut self) -> Report {
        while let Some(l) = self.lines.pop() {
            if let Line::Watch(r) = l {
                return *r;
            }
        }
        panic!("no report printed")
    }

    /// The attack start events.
    pub fn starts(&self) -> Vec<&dropscope::schema::AttackEvent> {
        self.attacks()
            .filter(|e| e.phase == dropscope::schema::Phase::Start)
            .collect()
    }
}

/// `ip:port` (IPv4 or IPv6) as a socket address.
pub fn sockaddr(ip: &str, port: u16) -> std::net::SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}").parse().unwrap()
    } else {
        format!("{ip}:{port}").parse().unwrap()
    }
}

/// A UDP socket bound to `bind` with an 8 MiB receive buffer (forced, as
/// root): native XDP on veth rebuilds each skb on a whole page, so the
/// default 208 KiB holds only ~48 datagrams and a reader slowed by an
/// emulated VM loses the rest to the buffer, not to what is under test.
pub fn roomy_udp_socket(bind: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on a live socket with an int option.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    s
}

/// Runs a command in namespace `ns`'s network only (nsenter --net): unlike
/// `ip netns exec` the host's /sys stays, so bpffs pins (libxdp's
/// dispatcher) are visible. Panics if it fails; returns its stdout.
pub fn nsenter(ns: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(args)
        .output()
        .expect("run nsenter (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

impl Lab {
    /// An iperf3 server in b on port 5201 (one client, then it exits),
    /// killed when dropped.
    pub fn iperf3_server(&self) -> KillOnDrop {
        let server = KillOnDrop(
            Command::new("ip")
                .args(["netns", "exec", &self.b, "iperf3", "-s", "-1", "-p", "5201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("iperf3 (cargo xtask setup installs it)"),
        );
        // Listening, not just started: a loaded runner took over 300 ms
        // and the client met a refused connection.
        let listening = wait_for(Duration::from_secs(10), || {
            let out = self.exec(&self.b, &["ss", "-Hltn", "sport = :5201"]);
            (!out.trim().is_empty()).then_some(())
        });
        assert!(listening.is_some(), "iperf3 -s did not listen within 10 s");
        server
    }

    /// An iperf3 client in a to that server for 3 s, with `extra`
    /// arguments; panics if it fails.
    pub fn iperf3_client(&self, extra: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.a, "iperf3", "-c", &self.v4(2)])
            .args(["-p", "5201", "-t", "3"])
            .args(extra)
            .output()
            .expect("iperf3 (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "iperf3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A child process killed (and reaped) when dropped, even on panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Total of drop rows with this reason on this interface in a report.
pub fn drops(report: &Report, reason: &str, iface: &str) -> u64 {
    report
        .drops
        .iter()
        .filter(|r| r.reason == reason && r.iface == iface)
        .map(|r| r.total)
        .sum()
}

/// Total packets seen by XDP from `addr` on `iface`, from the top-sources list.
pub fn source_packets(report: &Report, addr: &str) -> u64 {
    report
        .top_sources
        .iter()
        .filter(|r| r.address == addr)
        .map(|r| r.total_packets)
        .sum()
}

/// Packets the INPUT rule matching `needle` counted in namespace b
/// (`bin`: iptables or ip6tables).
pub fn iptables_packets(lab: &Lab, bin: &str, needle: &str) -> u64 {
    iptables_chain_packets(lab, bin, "filter", "INPUT", needle)
}

/// Packets the rule matching `needle` in `table`'s `chain` counted in
/// namespace b (`bin`: iptables or ip6tables).
pub fn iptables_chain_packets(lab: &Lab, bin: &str, table: &str, chain: &str, needle: &str) -> u64 {
    let out = lab.exec(&lab.b, &[bin, "-t", table, "-L", chain, "-v", "-x", "-n"]);
    out.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no rule with {needle} in:\n{out}"))
        .parse()
        .unwrap()
}

/// Attributed drops (total) of `reason` to destination `proto`/`port`.
pub fn drop_port(report: &Report, reason: &str, proto: &str, port: u16) -> u64 {
    report
        .drop_ports
        .iter()
        .filter(|r| r.reason == reason && r.proto == proto && r.port == port)
        .map(|r| r.total)
        .sum()
}

/// Attributed drops (total) of `reason` from source `address`.
pub fn drop_source(report: &Report, reason: &str, address: &str) -> u64 {
    report
        .drop_sources
        .iter()
        .filter(|r| r.reason == reason && r.address == address)
        .map(|r| r.total)
        .sum()
}

/// Interface block of a report.
pub fn iface<'a>(report: &'a Report, name: &str) -> &'a IfaceReport {
    report
        .interfaces
        .iter()
        .find(|i| i.iface == name)
        .unwrap_or_else(|| panic!("no interface {name} in report"))
}

/// The drop row of `reason` on `iface`, if the report has one.
pub fn drop_row<'a>(
    report: &'a Report,
    reason: &str,
    iface: &str,
) -> Option<&'a dropscope::schema::DropRow> {
    report
        .drops
        .iter()
        .find(|r| r.reason == reason && r.iface == iface)
}

/// The `rx_packets` of `ip -s link` for a device in a namespace.
pub fn ip_link_rx_packets(lab: &Lab, ns: &str, dev: &str) -> u64 {
    ip_link_stat(lab, ns, dev, "rx", "packets")
}

/// One counter of `ip -s link` for a device in a namespace: `dir` is "rx"
/// or "tx", `field` e.g. "packets" or "dropped".
pub fn ip_link_stat(lab: &Lab, ns: &str, dev: &str, dir: &str, field: &str) -> u64 {
    let out = lab.ip(ns, &["-s", "-j", "link", "show", dev]);
    let v: Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["stats64"][dir][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {dir} {field} for {dev} in: {out}"))
}

impl Lab {
    /// Sends raw `request` bytes to 127.0.0.1:`port` inside namespace `ns` and
    /// returns (status code, body). Status 0 when nothing listens or the
    /// server closed without a response.
    pub fn http(&self, ns: &str, port: u16, request: Vec<u8>) -> (u16, String) {
        self.in_ns(ns, move || {
            use std::io::Write;
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                return (0, String::new());
            };
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let _ = s.write_all(&request);
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            (status, body)
        })
    }

    /// GET `path` from 127.0.0.1:`port` inside `ns`.
    pub fn get(&self, ns: &str, port: u16, path: &str) -> (u16, String) {
        self.http(
            ns,
            port,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes(),
        )
    }

    /// A fresh directory for this lab's files, removed with the lab's
    /// namespaces by the caller's `TempDir`.
    pub fn temp_dir(&self, what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{}-{what}", self.a));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Floods take turns within a test binary: on two cores, parallel floods
/// would starve each other and make rates (and so verdicts) depend on
/// scheduling.
pub fn flood_turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_FLOOD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether a program is on PATH (or in /usr/sbin).
pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {bin} || test -x /usr/sbin/{bin}"),
        ])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Waits until `f` returns Some, polling every 100 ms, up to `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A bpffs mount shared by every test and every `ip netns exec` (which
/// gives each command a fresh /sys, so /sys/fs/bpf would not be shared).
pub fn shared_bpffs() -> String {
    let dir = "/run/dropscope-tests-bpffs";
    std::fs::create_dir_all(dir).unwrap();
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(dir));
    if !mounted {
        sh(&["mount", "-t", "bpf", "bpf", dir]);
    }
    dir.to_string()
}

/// A raw AF_PACKET socket in the calling thread's namespace and the
/// address that sends out of `ifindex` (its `sll_addr` is the caller's to
/// set). Closed when the descriptor drops, panic or not.
pub(crate) fn packet_socket(ifindex: u32) -> (std::os::fd::OwnedFd, libc::sockaddr_ll) {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain socket call; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a new descriptor nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is a valid value to fill in.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    (fd, sll)
}
