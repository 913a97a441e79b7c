//! Mitigation hooks: programs run on attack start/update/end and when a
//! drop reason passes a rate. A hook is an argv (never a shell); it gets the
//! event as JSON on stdin and key fields in `DROPSCOPE_*` variables.
//!
//! The sampler only ever `try_send`s into a bounded queue: a slow, hanging
//! or failing hook costs a queue slot, never a missed interval. A worker
//! runs at most `CONCURRENCY` hooks at once, kills each at its timeout and
//! logs its exit status and the start of its stderr.

mod env;
mod runner;
mod spec;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub(crate) use spec::HookSpec;

use crate::{
    report::{AttackEvent, Report},
    sys::reasons::Category,
    taxonomy::Phase,
};
use env::{attack_env, safe};
use runner::{QUEUE, worker};

const DROP_RATE_SCHEMA: &str = "dropscope.drop_rate/1";
crate::report::constant_field!(drop_rate_schema, DROP_RATE_SCHEMA);
crate::report::constant_field!(drop_rate_event, "drop_rate");

/// A drop reason over its hook's rate on one interface: a `drop_rate`
/// hook's stdin (schema `dropscope.drop_rate/1`).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct DropRateEvent {
    /// `dropscope.drop_rate/1`.
    #[serde(deserialize_with = "drop_rate_schema")]
    pub schema: std::borrow::Cow<'static, str>,
    /// Always `drop_rate`.
    #[serde(deserialize_with = "drop_rate_event")]
    pub event: std::borrow::Cow<'static, str>,
    pub ts: f64,
    pub reason: String,
    pub category: Category,
    pub iface: String,
    pub rate: f64,
    pub threshold: f64,
    pub total: u64,
}

pub(super) struct Job {
    pub(super) hook: Arc<HookSpec>,
    pub(super) event: &'static str,
    pub(super) json: String,
    pub(super) env: Vec<(&'static str, String)>,
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
                    schema: DROP_RATE_SCHEMA.into(),
                    event: "drop_rate".into(),
                    ts: report.ts,
                    reason: row.reason.clone(),
                    category: row.category,
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
