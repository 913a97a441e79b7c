//! Mitigation hooks: programs run on attack start/update/end and when a
//! drop reason passes a rate. A hook is an argv (never a shell); it gets the
//! event as JSON on stdin and key fields in `DROPSCOPE_*` variables.
//!
//! The sampler only ever `try_send`s into a bounded queue: a slow, hanging
//! or failing hook costs a queue slot, never a missed interval. A worker
//! runs at most `CONCURRENCY` hooks at once, kills each at its timeout and
//! logs its exit status and the start of its stderr.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::Command,
    sync::{Semaphore, mpsc},
};

use crate::{
    report::{AttackEvent, Report, taxonomy::Phase},
    units::parse_duration,
};

/// Hook runs waiting to start; more are dropped (and counted).
pub(crate) const QUEUE: usize = 64;
pub(crate) const CONCURRENCY: usize = 4;
/// Bytes of a hook's stdout/stderr kept for the log.
const OUTPUT_KEPT: usize = 2048;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookSpec {
    pub name: String,
    /// Any of "attack_start", "attack_update", "attack_end", "drop_rate".
    pub on: Vec<String>,
    /// Program and arguments, run without a shell. The program is an
    /// absolute path.
    pub argv: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Least time between two runs for the same target (interface, or
    /// reason and interface for drop_rate). End events always run when
    /// their start ran.
    #[serde(default = "default_cooldown")]
    pub cooldown: String,
    /// drop_rate: the reason name (as in `dropscope reasons`).
    #[serde(default)]
    pub reason: Option<String>,
    /// drop_rate: drops per second on one interface that fire the hook.
    #[serde(default)]
    pub rate: Option<f64>,
}

fn default_timeout() -> String {
    "10s".into()
}
fn default_cooldown() -> String {
    "30s".into()
}

const EVENTS: [&str; 4] = ["attack_start", "attack_update", "attack_end", "drop_rate"];

impl HookSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("hook name '{n}' must be letters, digits, '-', '_' or '.'");
        }
        if self.on.is_empty() {
            bail!(
                "hook '{n}': `on` lists no events (use {})",
                EVENTS.join(", ")
            );
        }
        for e in &self.on {
            if !EVENTS.contains(&e.as_str()) {
                bail!(
                    "hook '{n}': unknown event '{e}' (use {})",
                    EVENTS.join(", ")
                );
            }
        }
        match self.argv.first() {
            None => bail!("hook '{n}': argv is empty"),
            Some(p) if !p.starts_with('/') => {
                bail!("hook '{n}': the program '{p}' must be an absolute path")
            }
            _ => {}
        }
        parse_duration(&self.timeout).map_err(|e| anyhow::anyhow!("hook '{n}': timeout {e}"))?;
        if self.cooldown != "0" && self.cooldown != "0s" {
            parse_duration(&self.cooldown)
                .map_err(|e| anyhow::anyhow!("hook '{n}': cooldown {e}"))?;
        }
        if self.on.iter().any(|e| e == "drop_rate") {
            match (&self.reason, self.rate) {
                (Some(_), Some(r)) if r > 0.0 => {}
                _ => bail!("hook '{n}': drop_rate needs `reason` and a `rate` above 0"),
            }
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(Duration::from_secs(10))
    }

    fn cooldown(&self) -> Duration {
        parse_duration(&self.cooldown).unwrap_or(Duration::ZERO)
    }
}

/// A drop reason over its hook's rate on one interface.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct DropRateEvent {
    pub schema: &'static str,
    pub event: &'static str,
    pub ts: f64,
    pub reason: String,
    pub category: &'static str,
    pub iface: String,
    pub rate: f64,
    pub threshold: f64,
    pub total: u64,
}

struct Job {
    hook: Arc<HookSpec>,
    event: &'static str,
    json: String,
    env: Vec<(&'static str, String)>,
}

/// Decides which hooks an interval's events fire and queues them.
pub(crate) struct Hooks {
    specs: Vec<Arc<HookSpec>>,
    tx: mpsc::Sender<Job>,
    /// (hook, target) -> last run.
    last_run: HashMap<(String, String), Instant>,
    /// (hook, attack id) whose start ran: its end runs too.
    started: std::collections::HashSet<(String, u64)>,
    pub dropped: u64,
    dry_run: bool,
}

impl Hooks {
    /// Starts the worker (needs a tokio runtime).
    pub(crate) fn start(specs: Vec<HookSpec>, dry_run: bool) -> Hooks {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(worker(rx, dry_run));
        Hooks {
            specs: specs.into_iter().map(Arc::new).collect(),
            tx,
            last_run: HashMap::new(),
            started: Default::default(),
            dropped: 0,
            dry_run,
        }
    }

    /// Offers this interval's attack events and drop rows to the hooks.
    pub(crate) fn offer(&mut self, report: &Report, events: &[AttackEvent]) {
        if self.specs.is_empty() {
            return;
        }
        let now = Instant::now();
        for e in events {
            let kind = match e.phase {
                Phase::Start => "attack_start",
                Phase::End => "attack_end",
                Phase::Update => "attack_update",
            };
            let json = match serde_json::to_string(e) {
                Ok(j) => j,
                Err(_) => continue,
            };
            for h in self.specs.clone() {
                if !h.on.iter().any(|o| o == kind) {
                    continue;
                }
                let key = (h.name.clone(), e.iface.clone());
                let run = match kind {
                    "attack_end" => self.started.remove(&(h.name.clone(), e.id)),
                    _ => self.cooled(&key, &h, now),
                };
                if !run {
                    continue;
                }
                if kind == "attack_start" {
                    self.started.insert((h.name.clone(), e.id));
                }
                self.last_run.insert(key, now);
                self.queue(Job {
                    hook: h.clone(),
                    event: kind,
                    json: json.clone(),
                    env: attack_env(kind, e),
                });
            }
        }
        for h in self.specs.clone() {
            if !h.on.iter().any(|o| o == "drop_rate") {
                continue;
            }
            let (Some(reason), Some(rate)) = (&h.reason, h.rate) else {
                continue;
            };
            for row in report
                .drops
                .iter()
                .filter(|r| &r.reason == reason && r.rate >= rate)
            {
                let key = (h.name.clone(), format!("{}@{}", row.reason, row.iface));
                if !self.cooled(&key, &h, now) {
                    continue;
                }
                self.last_run.insert(key, now);
                let ev = DropRateEvent {
                    schema: "dropscope.drop_rate/1",
                    event: "drop_rate",
                    ts: report.ts,
                    reason: row.reason.clone(),
                    category: row.category.as_str(),
                    iface: row.iface.clone(),
                    rate: row.rate,
                    threshold: rate,
                    total: row.total,
                };
                let env = vec![
                    ("DROPSCOPE_EVENT", "drop_rate".to_string()),
                    ("DROPSCOPE_REASON", safe(&row.reason)),
                    ("DROPSCOPE_IFACE", safe(&row.iface)),
                    ("DROPSCOPE_RATE", format!("{:.0}", row.rate)),
                    ("DROPSCOPE_TRIGGER", "drop_rate".to_string()),
                ];
                if let Ok(json) = serde_json::to_string(&ev) {
                    self.queue(Job {
                        hook: h.clone(),
                        event: "drop_rate",
                        json,
                        env,
                    });
                }
            }
        }
        // Forget cooldowns long past, so the table stays small.
        self.last_run
            .retain(|_, t| now.duration_since(*t) < Duration::from_secs(86400));
    }

    fn cooled(&self, key: &(String, String), h: &HookSpec, now: Instant) -> bool {
        self.last_run
            .get(key)
            .is_none_or(|t| now.duration_since(*t) >= h.cooldown())
    }

    fn queue(&mut self, job: Job) {
        let name = job.hook.name.clone();
        if self.tx.try_send(job).is_err() {
            self.dropped += 1;
            eprintln!(
                "hook {name}: queue full ({QUEUE} waiting), run skipped{}",
                if self.dry_run { " (dry run)" } else { "" }
            );
        }
    }
}

/// Values from the network (interface names seen in events, addresses)
/// pass only if made of plain characters; anything else becomes empty.
fn safe(v: &str) -> String {
    if v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._:/-".contains(c))
    {
        v.to_string()
    } else {
        String::new()
    }
}

fn attack_env(kind: &'static str, e: &AttackEvent) -> Vec<(&'static str, String)> {
    // "threshold:iface_bps" -> "bps"; everything else counts packets.
    let trigger = if e.trigger.ends_with("bps") {
        "bps"
    } else {
        "pps"
    };
    let top = e.top_sources.first();
    vec![
        ("DROPSCOPE_EVENT", kind.to_string()),
        ("DROPSCOPE_ATTACK_ID", e.id.to_string()),
        ("DROPSCOPE_CLASS", safe(e.class.as_str())),
        ("DROPSCOPE_CONFIDENCE", e.confidence.to_string()),
        ("DROPSCOPE_IFACE", safe(&e.iface)),
        ("DROPSCOPE_TARGET", safe(&target_addr(&e.iface))),
        (
            "DROPSCOPE_TOP_SOURCE",
            top.map(|s| safe(&s.address)).unwrap_or_default(),
        ),
        ("DROPSCOPE_PPS", format!("{:.0}", e.pps)),
        ("DROPSCOPE_BPS", format!("{:.0}", e.bps)),
        ("DROPSCOPE_TRIGGER", trigger.to_string()),
        ("DROPSCOPE_TRIGGER_DETAIL", safe(&e.trigger)),
        ("DROPSCOPE_SOURCES", e.sources.to_string()),
    ]
}

/// The attacked interface's first address (IPv4 preferred): the target.
fn target_addr(iface: &str) -> String {
    let mut out = None;
    // SAFETY: getifaddrs/freeifaddrs pair; entries read while the list lives.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return String::new();
        }
        let mut p = head;
        while !p.is_null() {
            let a = &*p;
            if !a.ifa_addr.is_null()
                && std::ffi::CStr::from_ptr(a.ifa_name).to_bytes() == iface.as_bytes()
            {
                match (*a.ifa_addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a.ifa_addr as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        out = Some(ip.to_string());
                        break;
                    }
                    libc::AF_INET6 if out.is_none() => {
                        let sin6 = &*(a.ifa_addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if !ip.is_unicast_link_local() {
                            out = Some(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
            p = a.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.unwrap_or_default()
}

async fn worker(mut rx: mpsc::Receiver<Job>, dry_run: bool) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(job) = rx.recv().await {
        if dry_run {
            let env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!(
                "hook {} ({}): dry run, would run {:?} with {}",
                job.hook.name,
                job.event,
                job.hook.argv,
                env.join(" ")
            );
            continue;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            run_one(job).await;
            drop(permit);
        });
    }
}

async fn run_one(job: Job) {
    let h = &job.hook;
    let started = Instant::now();
    let mut cmd = Command::new(&h.argv[0]);
    cmd.args(&h.argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(job.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "hook {} ({}): cannot start {}: {e}",
                h.name, job.event, h.argv[0]
            );
            return;
        }
    };
    let pgid = child.id();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let json = job.json.clone();
    let io = async {
        if let Some(s) = stdin.as_mut() {
            // A hook that does not read its stdin is fine.
            let _ = s.write_all(json.as_bytes()).await;
            let _ = s.write_all(b"\n").await;
        }
        drop(stdin.take());
        let (out, err) = tokio::join!(read_bounded(stdout.as_mut()), read_bounded(stderr.as_mut()));
        let status = child.wait().await;
        (out, err, status)
    };
    match tokio::time::timeout(h.timeout(), io).await {
        Ok((out, err, status)) => {
            let ms = started.elapsed().as_millis();
            let code = match status {
                Ok(s) if s.success() => {
                    eprintln!(
                        "hook {} ({}): ok in {ms} ms{}",
                        h.name,
                        job.event,
                        if out.is_empty() {
                            String::new()
                        } else {
                            format!("; stdout: {}", one_line(&out))
                        }
                    );
                    return;
                }
                Ok(s) => s
                    .code()
                    .map(|c| format!("exit status {c}"))
                    .unwrap_or_else(|| format!("{s}")),
                Err(e) => format!("wait failed: {e}"),
            };
            eprintln!(
                "hook {} ({}): failed, {code} after {ms} ms; stderr: {}",
                h.name,
                job.event,
                one_line(&err)
            );
        }
        Err(_) => {
            if let Some(pid) = pgid {
                // SAFETY: signals the hook's own process group.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            eprintln!(
                "hook {} ({}): killed after its {} timeout",
                h.name, job.event, h.timeout
            );
        }
    }
}

/// Reads to the end, keeping the first OUTPUT_KEPT bytes.
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(r: Option<&mut R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(r) = r else {
        return kept;
    };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

fn one_line(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.trim();
    if s.is_empty() {
        "(empty)".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_values_are_emptied() {
        assert_eq!(safe("eth0"), "eth0");
        assert_eq!(safe("203.0.113.7"), "203.0.113.7");
        assert_eq!(safe("2001:db8::1"), "2001:db8::1");
        assert_eq!(safe("veth0@ns1"), "veth0@ns1");
        assert_eq!(safe("$(reboot)"), "");
        assert_eq!(safe("a b"), "");
        assert_eq!(safe(&"x".repeat(500)), "");
    }
}
