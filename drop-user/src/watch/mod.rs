//! The sampling loop behind `watch`, `top` and `run`: load, then one report
//! per interval until the duration ends or a signal arrives; dropping the
//! probes detaches everything. In-kernel threshold triggers wake the loop
//! at once for an early sample, so an attack event does not wait for the
//! next interval. Each report then goes to the exporters (terminal, full
//! screen, Prometheus, JSON stream) and to the hooks, none of which can
//! hold the loop up.

use std::{collections::HashMap, io::IsTerminal, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use drop_common::PortKey;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep_until},
};

use crate::{
    act::blocklist::{self, Blocklist},
    act::hooks::{HookSpec, Hooks},
    analysis::{
        detect::{DetectConfig, Detector},
        doctor,
    },
    config::PcapSpec,
    export::events::EventStream,
    export::pcap::Recorder,
    export::prometheus::{self, Exporter},
    export::terminal::{self, Format},
    export::top,
    kernel::Maps,
    kernel::{self, DropHook, KfreeChoice, LoadOptions, XdpChoice},
    report::{Analysis, Report, Tracker, taxonomy::Phase},
    sys::iface,
    sys::nic,
};

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

/// Rates of the heavy destination ports since the last sample.
fn port_deltas(prev: &mut HashMap<PortKey, u64>, now: Vec<(PortKey, u64)>) -> Vec<(PortKey, u64)> {
    let out = now
        .iter()
        .map(|(k, v)| (*k, v.saturating_sub(prev.get(k).copied().unwrap_or(0))))
        .filter(|(_, d)| *d > 0)
        .collect();
    *prev = now.into_iter().collect();
    out
}

pub(crate) async fn run(opts: WatchOptions) -> Result<()> {
    // First: a signal during loading must still end in a clean exit.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // Said before looking for a default interface: no interface would help
    // (and resolve never returns an empty list, so this is the only case).
    if opts.xdp == XdpChoice::None && opts.kfree == kernel::KfreeChoice::None {
        anyhow::bail!(
            "--kfree-hook none with no XDP interface leaves nothing to observe: pass --iface, or drop --kfree-hook none"
        );
    }
    let ifaces = iface::resolve(&opts.ifaces)?;
    let secs = opts.interval.as_secs_f64();
    let mut base = kernel::default_xdp_config();
    // The budget of exactly tracked new sources is per second, per CPU.
    base.source_budget = ((base.source_budget as f64 * secs) as u32).max(256);
    base.exact_packets = ((base.exact_packets as f64 * secs) as u32).max(1000);
    let mut xdp_config = opts.detect.kernel_triggers(secs, base);
    let no_xdp = opts.xdp == XdpChoice::None || ifaces.is_empty();
    if opts.enforce {
        if no_xdp {
            anyhow::bail!("--enforce drops in XDP: it needs at least one interface with XDP");
        }
        xdp_config.enforce = 1;
    }
    if opts.pcap_dir.is_some() {
        if no_xdp {
            anyhow::bail!(
                "--pcap-dir samples packets in XDP: it needs at least one interface with XDP"
            );
        }
        if kernel::xdp_can_copy_packets() {
            xdp_config.sample_every = opts.pcap.every.max(1);
            xdp_config.snaplen = opts.pcap.snaplen;
        } else {
            // The copy is gated by this load-time constant: left at 0, the
            // verifier never sees the helper call, and XDP still loads.
            eprintln!(
                "note: --pcap-dir needs bpf_xdp_load_bytes (Linux 5.18+), which this kernel lacks: no packet samples are recorded"
            );
        }
    }
    if opts.mode == Mode::Top && opts.events.as_deref() == Some("-") {
        anyhow::bail!("top owns the terminal: give --events a file, not -");
    }
    // Open every output before loading, so a bad path or a taken port
    // fails before anything is attached.
    let mut events_out = match &opts.events {
        Some(t) => Some(EventStream::open(t)?),
        None => None,
    };
    let exporter = match opts.prometheus {
        Some(a) => Some(Exporter::start(a).await?),
        None => None,
    };
    let mut recorder = match &opts.pcap_dir {
        Some(d) => Some(Recorder::new(d, opts.pcap.clone())?),
        None => None,
    };
    let mut probes = kernel::load(&LoadOptions {
        ifaces: ifaces.clone(),
        xdp: opts.xdp,
        kfree: opts.kfree,
        own_netns_only: opts.own_netns_only,
        xdp_config,
    })?;
    for n in &probes.notes {
        eprintln!("note: {n}");
    }
    let _pins = if opts.enforce {
        let (pins, carried) = blocklist::pin(&mut probes.ebpf, &opts.pin_dir)?;
        eprintln!(
            "note: --enforce: blocklist pinned at {}{}",
            opts.pin_dir.display(),
            if carried > 0 {
                format!(" ({carried} entries carried over from the last run)")
            } else {
                String::new()
            }
        );
        Some(pins)
    } else {
        None
    };
    if let Some(e) = &exporter {
        eprintln!("note: Prometheus metrics at http://{}/metrics", e.addr);
    }
    let mut hooks = Hooks::start(opts.hooks.clone(), opts.dry_run);
    let mut extra = prometheus::Extra::default();
    let hook = match &probes.hook {
        DropHook::BtfTracepoint => "tp_btf/kfree_skb",
        DropHook::Tracepoint => "tracepoint skb:kfree_skb",
        DropHook::TracepointByLocation => "tracepoint skb:kfree_skb (by kernel location)",
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

    let mut ifaces = ifaces;
    let mut gone = vec![false; ifaces.len()];
    let mut link: Vec<Option<(bool, bool)>> =
        ifaces.iter().map(|(n, _)| iface::link_state(n)).collect();
    let nic_start = nic::read_all(&ifaces).context("reading interface counters")?;
    let mut tracker = Tracker::new(
        probes.reasons.clone(),
        ifaces.clone(),
        &probes.xdp_modes,
        probes.netns,
        opts.top,
        nic_start,
    );
    let mut detector = Detector::new(opts.detect.clone());
    let slots = if probes.xdp_modes.is_empty() {
        0
    } else {
        ifaces.len()
    };
    let triggers = probes
        .maps
        .triggers
        .take()
        .context("trigger ring missing")?;
    // SAFETY: the AsyncFd owns the ring buffer, so the fd stays open for as
    // long as it is registered.
    let mut triggers =
        unsafe { AsyncFd::register_with_interest(triggers, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("polling the trigger ring: {}", e.into_parts().1))?;
    let mut samples = match (&recorder, probes.maps.samples.take()) {
        (Some(_), Some(rb)) => Some(
            // SAFETY: as for the trigger ring.
            unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("polling the sample ring: {}", e.into_parts().1))?,
        ),
        _ => None,
    };
    // Start the first epoch clean.
    probes.maps.sample_epoch(xdp_config.source_budget)?;
    let mut prev_ports = HashMap::new();

    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let mut next = start + opts.interval;
    let mut last_sample = start;
    let mut last_sources: Option<Instant> = None;
    let stdout = std::io::stdout();
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let screen = if opts.mode == Mode::Top && stdout.is_terminal() {
        Some(top::spawn(quit_tx).context("starting the full-screen view")?)
    } else {
        drop(quit_tx);
        None
    };
    let plain = match opts.mode {
        Mode::Watch => true,
        Mode::Top => screen.is_none(),
        Mode::Run => false,
    };
    let format = if opts.mode == Mode::Top {
        Format::Table
    } else {
        opts.format
    };
    let clear = format == Format::Table && stdout.is_terminal();

    loop {
        let mut last = false;
        if let Some(d) = deadline
            && next >= d
        {
            next = d;
            last = true;
        }
        let mut early = false;
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = sigint.recv() => last = true,
            _ = sigterm.recv() => last = true,
            Some(()) = quit_rx.recv() => last = true,
            guard = async { samples.as_mut().unwrap().readable_mut().await }, if samples.is_some() => {
                let mut guard = guard?;
                if let Some(rec) = recorder.as_mut() {
                    Maps::drain_samples(guard.get_inner_mut(), |s| rec.push(s));
                }
                guard.clear_ready();
                continue;
            }
            guard = triggers.readable_mut() => {
                let mut guard = guard?;
                let mut fired = false;
                Maps::drain_triggers(guard.get_inner_mut(), |t| {
                    detector.kernel_trigger(t.ifindex, t.kind);
                    fired = true;
                });
                guard.clear_ready();
                let busy = ifaces.iter().all(|(n, _)| detector.active_on(n));
                // An early sample, at most every 20 ms, only for news.
                early = fired && !busy && last_sample.elapsed() >= Duration::from_millis(20);
                if !early {
                    continue;
                }
            }
        }
        // Links that go down or lose carrier keep their XDP program: say so,
        // and say when they are back.
        for (slot, (name, _)) in ifaces.iter().enumerate() {
            let state = iface::link_state(name);
            if state != link[slot] {
                match state {
                    Some((false, _)) => {
                        eprintln!("note: interface {name} is down (administratively)")
                    }
                    Some((true, false)) => eprintln!("note: interface {name} has no carrier"),
                    Some((true, true)) if link[slot].is_some() => {
                        eprintln!("note: interface {name} is up again")
                    }
                    _ => {}
                }
                link[slot] = state;
            }
        }
        // Interfaces deleted and recreated: follow them to their new index.
        if !probes.xdp_modes.is_empty() {
            for (slot, (name, ifindex)) in ifaces.iter_mut().enumerate() {
                match iface::index_of(name) {
                    None if !gone[slot] => {
                        gone[slot] = true;
                        eprintln!(
                            "note: interface {name} is gone; dropscope keeps running and re-attaches when it returns"
                        );
                    }
                    Some(now) if now != *ifindex => {
                        match kernel::reattach(
                            &mut probes.ebpf,
                            slot,
                            name,
                            *ifindex,
                            now,
                            opts.xdp,
                        ) {
                            Ok(mode) => eprintln!(
                                "note: interface {name} is back (ifindex {now}): XDP re-attached ({mode})"
                            ),
                            Err(e) => eprintln!(
                                "note: interface {name} is back but XDP could not re-attach: {e:#}"
                            ),
                        }
                        *ifindex = now;
                        gone[slot] = false;
                        tracker.set_ifindex(slot, now);
                    }
                    Some(_) if gone[slot] => gone[slot] = false,
                    _ => {}
                }
            }
        }
        // The source table is read every interval, but at most ~once a
        // second: at 100 ms intervals it would cost a core under a flood.
        let with_sources =
            last || early || last_sources.is_none_or(|t| t.elapsed() >= Duration::from_millis(950));
        if with_sources {
            last_sources = Some(Instant::now());
        }
        let snap = probes.maps.read(slots, with_sources)?;
        let sample = probes.maps.sample_epoch(xdp_config.source_budget)?;
        let ports = port_deltas(&mut prev_ports, probes.maps.heavy_ports());
        let counters = nic::read_all(&ifaces).unwrap_or_default();
        let mut measured = tracker.measure(snap, counters, Some((&sample, &ports)));
        last_sample = Instant::now();
        let (mut events, loss) = detector.update(&measured, &sample, &ports);
        // An attack starting on stale source rates: read the table now so
        // its start event names the sources it has now.
        if !with_sources && events.iter().any(|e| e.phase == Phase::Start) {
            let fresh = probes.maps.read_sources()?;
            measured.top_sources = tracker.refresh_sources(fresh, std::time::Instant::now());
            measured.top_sources_fresh = true;
            last_sources = Some(Instant::now());
            for e in events.iter_mut().filter(|e| e.phase == Phase::Start) {
                detector.restate(e, &measured);
            }
        }
        if let Some(rec) = recorder.as_mut() {
            if let Some(rb) = samples.as_mut() {
                Maps::drain_samples(rb.get_mut(), |s| rec.push(s));
            }
            for e in events.iter_mut() {
                let ifindex = ifaces
                    .iter()
                    .find(|(n, _)| *n == e.iface)
                    .map_or(0, |(_, i)| *i);
                rec.on_event(e, ifindex);
            }
            rec.flush();
        }
        let diagnosis = doctor::hints(&measured.drops);
        let report = Report::build(
            measured,
            Analysis {
                attacks: events
                    .iter()
                    .filter(|e| e.phase != Phase::End)
                    .cloned()
                    .collect(),
                loss: Some(loss),
                diagnosis,
            },
        );
        if opts.enforce {
            let (expired, kept) = Blocklist::of(&mut probes.ebpf, &opts.pin_dir)?.sweep()?;
            for (p, _) in expired {
                eprintln!("blocklist: {p} expired and was removed");
            }
            extra.blocklist_entries = Some(kept);
        }
        extra.hook_runs_dropped = hooks.dropped;
        if let Some(x) = &exporter {
            x.publish(prometheus::render(&report, &extra));
        }
        if let Some(ev) = events_out.as_mut()
            && let Err(e) = ev.write(&report, &events)
        {
            eprintln!("error: --events: {e}");
            events_out = None;
        }
        hooks.offer(&report, &events);
        let mut ok = true;
        if plain {
            let mut out = stdout.lock();
            ok &= terminal::emit(&mut out, &report, format, clear).is_ok();
            for e in &events {
                ok &= terminal::emit_event(&mut out, e, format).is_ok();
            }
        } else if let Some((tx, _)) = &screen {
            let _ = tx.send(Box::new(report));
        } else {
            let mut err = std::io::stderr().lock();
            for e in &events {
                let _ = terminal::emit_event(&mut err, e, Format::Table);
            }
        }
        if !ok {
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
    if let Some((tx, handle)) = screen {
        drop(tx);
        let _ = handle.join();
    }
    drop(recorder);
    drop(samples);
    drop(triggers);
    drop(probes);
    Ok(())
}
