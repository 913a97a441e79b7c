//! `dropscope watch`: load, then one report per interval until the duration
//! ends or a signal arrives; dropping the probes detaches everything.

use std::{io::IsTerminal, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep_until},
};

use crate::{
    iface,
    loader::{self, DropHook, KfreeChoice, LoadOptions, XdpChoice},
    nic,
    output::{self, Format},
    table::Tracker,
};

pub struct WatchOptions {
    pub ifaces: Vec<String>,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub format: Format,
    pub xdp: XdpChoice,
    pub kfree: KfreeChoice,
    pub own_netns_only: bool,
    pub top: usize,
}

pub async fn run(opts: WatchOptions) -> Result<()> {
    let ifaces = iface::resolve(&opts.ifaces)?;
    let probes = loader::load(&LoadOptions {
        ifaces: ifaces.clone(),
        xdp: opts.xdp,
        kfree: opts.kfree,
        own_netns_only: opts.own_netns_only,
        xdp_config: loader::default_xdp_config(),
    })?;
    for n in &probes.notes {
        eprintln!("note: {n}");
    }
    let hook = match &probes.hook {
        DropHook::BtfTracepoint => "tp_btf/kfree_skb",
        DropHook::Tracepoint => "tracepoint skb:kfree_skb",
        DropHook::Unavailable(_) => "none",
    };
    let xdp: Vec<String> = probes
        .xdp_modes
        .iter()
        .map(|(i, m)| format!("{i} ({m})"))
        .collect();
    eprintln!(
        "dropscope: drops via {hook}; XDP on {}; interval {:?}",
        if xdp.is_empty() {
            "none".to_string()
        } else {
            xdp.join(", ")
        },
        opts.interval
    );

    let nic_start = nic::read_all(&ifaces).context("reading interface counters")?;
    let mut tracker = Tracker::new(
        probes.reasons.clone(),
        ifaces.clone(),
        &probes.xdp_modes,
        probes.netns,
        opts.top,
        nic_start,
    );
    let slots = if probes.xdp_modes.is_empty() {
        0
    } else {
        ifaces.len()
    };

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let mut next = start + opts.interval;
    let stdout = std::io::stdout();
    let clear = opts.format == Format::Table && stdout.is_terminal();

    loop {
        let mut last = false;
        if let Some(d) = deadline
            && next >= d
        {
            next = d;
            last = true;
        }
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = sigint.recv() => last = true,
            _ = sigterm.recv() => last = true,
        }
        let snap = probes.maps.read(slots)?;
        let counters = nic::read_all(&ifaces).unwrap_or_default();
        let report = tracker.update(snap, counters);
        let mut out = stdout.lock();
        if output::emit(&mut out, &report, opts.format, clear).is_err() {
            // The reader went away (closed pipe): nothing left to do.
            break;
        }
        if last {
            break;
        }
        next += opts.interval;
    }
    drop(probes);
    Ok(())
}
