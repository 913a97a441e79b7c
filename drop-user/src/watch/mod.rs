//! The sampling loop behind `watch`, `top` and `run`: load, then one report
//! per interval until the duration ends or a signal arrives; dropping the
//! session detaches everything. In-kernel threshold triggers wake the loop
//! at once for an early sample, so an attack event does not wait for the
//! next interval. [`session`] makes each tick (read → measure → detect →
//! build), [`sinks`] publishes it (terminal, full screen, Prometheus, JSON
//! stream, hooks), none of which can hold the loop up.

mod session;
mod sinks;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep_until},
};

use crate::{
    act::hooks::HookSpec,
    analysis::detect::DetectConfig,
    config::PcapSpec,
    export::terminal::Format,
    kernel::{KfreeChoice, Maps, XdpChoice},
};
use session::Session;
use sinks::Sinks;

/// Where reports go on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A table or JSON lines (`watch`).
    Watch,
    /// Full screen (`top`); the plain table when stdout is not a terminal.
    Top,
    /// Nothing on stdout; attack events as lines on stderr (`run`).
    Run,
}

pub(crate) struct WatchOptions {
    pub mode: Mode,
    pub ifaces: Vec<String>,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub format: Format,
    pub xdp: XdpChoice,
    pub kfree: KfreeChoice,
    pub own_netns_only: bool,
    pub top: usize,
    pub detect: DetectConfig,
    pub prometheus: Option<SocketAddr>,
    pub events: Option<String>,
    pub hooks: Vec<HookSpec>,
    pub dry_run: bool,
    pub enforce: bool,
    pub pin_dir: PathBuf,
    pub pcap_dir: Option<PathBuf>,
    pub pcap: PcapSpec,
}

/// The shortest gap between two samples that a trigger may force: a rate
/// over less is mostly noise.
const EARLY_GAP: Duration = Duration::from_millis(20);

pub(crate) async fn run(opts: WatchOptions) -> Result<()> {
    // First: a signal during loading must still end in a clean exit.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let (ifaces, xdp_config) = session::settings(&opts)?;
    let (mut sinks, recorder) = Sinks::open(&opts).await?;
    let mut s = Session::start(&opts, ifaces, xdp_config, recorder)?;
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    sinks.start(quit_tx)?;

    // The reports' clock: a deadline counted from later would end the run
    // past `--duration` by the time loading took after the tracker began.
    let start = s.started_at();
    let deadline = opts.duration.map(|d| start + d);
    let mut next = start + opts.interval;
    // A trigger that came too soon after the last sample: its early sample
    // is due then (not dropped: the crossing fires once per epoch).
    let mut early_at: Option<Instant> = None;
    loop {
        let mut last = false;
        if let Some(d) = deadline
            && next >= d
        {
            next = d;
            last = true;
        }
        let mut early = false;
        let wake = early_at.map_or(next, |e| e.min(next));
        tokio::select! {
            _ = sleep_until(wake) => {
                // The deferred early sample, unless the interval's own is due.
                if early_at.is_some() && wake < next {
                    early = true;
                    last = false;
                }
            }
            _ = sigint.recv() => last = true,
            _ = sigterm.recv() => last = true,
            Some(()) = quit_rx.recv() => last = true,
            guard = async { s.packet_samples.as_mut().unwrap().readable_mut().await }, if s.packet_samples.is_some() => {
                let mut guard = guard?;
                if let Some(rec) = s.recorder.as_mut() {
                    Maps::drain_packet_samples(guard.get_inner_mut(), |x| rec.push(x));
                }
                guard.clear_ready();
                continue;
            }
            guard = async { s.logger.as_mut().unwrap().readable_mut().await }, if s.logger.is_some() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
                continue;
            }
            guard = s.triggers.readable_mut() => {
                let mut guard = guard?;
                let mut fired = false;
                let detector = &mut s.detector;
                Maps::drain_triggers(guard.get_inner_mut(), |t| {
                    detector.kernel_trigger(t.ifindex, t.kind);
                    fired = true;
                });
                guard.clear_ready();
                let busy = s.ifaces.iter().all(|(n, _)| s.detector.active_on(n));
                // An early sample, at most every 20 ms, only for news.
                if !fired || busy {
                    continue;
                }
                let due = s.last_sample + EARLY_GAP;
                if Instant::now() < due {
                    early_at = Some(early_at.map_or(due, |e| e.min(due)));
                    continue;
                }
                early = true;
            }
        }
        early_at = None;
        s.follow_links();
        let tick = s.tick(last || early)?;
        if !sinks.publish(tick) {
            // The reader went away (closed pipe): nothing left to do.
            break;
        }
        if last {
            break;
        }
        if !early {
            next += opts.interval;
        }
    }
    sinks.close();
    drop(s);
    Ok(())
}
