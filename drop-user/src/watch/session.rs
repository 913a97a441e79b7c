//! One watch session: the loaded programs and everything read from them.
//! A tick reads the kernel's maps and the interfaces' counters, measures
//! the interval, detects, records PCAP samples, and builds the report.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use drop_common::{PortKey, XdpConfig};
use tokio::{io::unix::AsyncFd, time::Instant};

use super::{Mode, WatchOptions};
/// The programs' aya-log records, forwarded to the `log` facade.
pub(super) type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

use crate::{
    act::blocklist::{self, Blocklist, Pins},
    analysis::{detect::Detector, doctor},
    export::pcap::Recorder,
    kernel::{self, DropHook, LoadOptions, Maps, Probes, XdpChoice},
    report::{Analysis, AttackEvent, Report, Tracker},
    sys::{iface, nic},
    taxonomy::Phase,
};

/// What one tick produced, for the sinks.
pub(super) struct Tick {
    pub(super) report: Report,
    pub(super) events: Vec<AttackEvent>,
    /// Entries left in the blocklist after expiring the old (`--enforce`).
    pub(super) blocklist_entries: Option<usize>,
}

/// Fields drop in order: the PCAP recorder and the rings before the
/// programs are detached, the blocklist pins last.
pub(super) struct Session {
    pub(super) recorder: Option<Recorder>,
    pub(super) packet_samples: Option<AsyncFd<RingBuf<MapData>>>,
    pub(super) triggers: AsyncFd<RingBuf<MapData>>,
    /// The programs' aya-log ring (rare conditions only).
    pub(super) logger: Option<AsyncFd<KernelLogger>>,
    probes: Probes,
    _pins: Option<Pins>,
    xdp: XdpChoice,
    enforce: bool,
    pin_dir: std::path::PathBuf,
    source_budget: u32,
    pub(super) ifaces: Vec<(String, u32)>,
    gone: Vec<bool>,
    link: Vec<Option<(bool, bool)>>,
    slots: usize,
    tracker: Tracker,
    pub(super) detector: Detector,
    prev_ports: HashMap<PortKey, u64>,
    pub(super) last_sample: Instant,
    last_sources: Option<Instant>,
    nic: nic::Reader,
}

/// Validates the options that need no kernel and works out the XDP
/// program's settings: the interfaces to watch and the load-time config.
pub(super) fn settings(opts: &WatchOptions) -> Result<(Vec<(String, u32)>, XdpConfig)> {
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
    Ok((ifaces, xdp_config))
}

/// A ring buffer the loop can await.
fn pollable(ring: RingBuf<MapData>, what: &str) -> Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the AsyncFd owns the ring buffer, so the fd stays open for as
    // long as it is registered.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the {what} ring: {}", e.into_parts().1))
}

impl Session {
    /// Loads and attaches the programs, pins the blocklist (`--enforce`),
    /// and says on stderr what runs where.
    pub(super) fn start(
        opts: &WatchOptions,
        ifaces: Vec<(String, u32)>,
        xdp_config: XdpConfig,
        recorder: Option<Recorder>,
    ) -> Result<Session> {
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
        let pins = if opts.enforce {
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
        let hook = match &probes.hook {
            DropHook::BtfTracepoint => "tp_btf/kfree_skb",
            DropHook::Tracepoint => "tracepoint skb:kfree_skb",
            DropHook::TracepointByLocation => "tracepoint skb:kfree_skb (by kernel location)",
            DropHook::Unavailable(_) => "none",
        };
        let xdp: Vec<String> = probes
            .xdp_lines
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
        let mut nic = nic::Reader::default();
        let nic_start = nic.read(&ifaces).context("reading interface counters")?;
        let tracker = Tracker::new(
            probes.reasons.clone(),
            ifaces.clone(),
            &probes.xdp_modes,
            probes.netns,
            opts.top,
            nic_start,
        )
        .with_observed(&probes.observer.progs);
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
        let triggers = pollable(triggers, "trigger")?;
        // Without a recorder the ring stays in the maps, never mapped: the
        // programs' instructions name its fd, and observe mode loads them
        // again when it follows a replaced program.
        let packet_samples = match &recorder {
            Some(_) => Some(pollable(probes.maps.take_samples()?, "sample")?),
            None => None,
        };
        let logger = match probes.logger.take() {
            // SAFETY: the AsyncFd owns the logger and with it the ring's fd.
            Some(l) => {
                match unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) } {
                    Ok(fd) => Some(fd),
                    Err(e) => {
                        eprintln!(
                            "note: the eBPF programs' log cannot be polled ({}): their warnings are not shown",
                            e.into_parts().1
                        );
                        None
                    }
                }
            }
            None => None,
        };
        // Start the first epoch clean.
        probes.maps.close_epoch(xdp_config.source_budget)?;
        let now = Instant::now();
        Ok(Session {
            probes,
            _pins: pins,
            xdp: opts.xdp,
            enforce: opts.enforce,
            pin_dir: opts.pin_dir.clone(),
            source_budget: xdp_config.source_budget,
            gone: vec![false; ifaces.len()],
            link: ifaces.iter().map(|(n, _)| iface::link_state(n)).collect(),
            ifaces,
            slots,
            tracker,
            detector: Detector::new(opts.detect.clone()),
            triggers,
            logger,
            packet_samples,
            recorder,
            prev_ports: HashMap::new(),
            last_sample: now,
            last_sources: None,
            nic,
        })
    }

    /// When the reports' clock started (see `Tracker::started_at`).
    pub(super) fn started_at(&self) -> Instant {
        Instant::from_std(self.tracker.started_at())
    }

    /// Links that go down or lose carrier keep their XDP program: say so,
    /// and say when they are back. Interfaces deleted and recreated are
    /// followed to their new index.
    pub(super) fn follow_links(&mut self) {
        for (slot, (name, _)) in self.ifaces.iter().enumerate() {
            let state = iface::link_state(name);
            if state != self.link[slot] {
                match state {
                    Some((false, _)) => {
                        eprintln!("note: interface {name} is down (administratively)")
                    }
                    Some((true, false)) => eprintln!("note: interface {name} has no carrier"),
                    Some((true, true)) if self.link[slot].is_some() => {
                        eprintln!("note: interface {name} is up again")
                    }
                    _ => {}
                }
                self.link[slot] = state;
            }
        }
        if self.probes.xdp_modes.is_empty() {
            return;
        }
        // Observed programs replaced or removed: followed.
        let mut followed = false;
        for (name, ifindex) in &self.ifaces {
            if let Some(note) = kernel::follow_observed(&mut self.probes, name, *ifindex, self.xdp)
            {
                eprintln!("note: {note}");
                followed = true;
            }
        }
        if followed {
            self.tracker
                .set_observed(&self.probes.observer.progs, &self.probes.xdp_modes);
        }
        for (slot, (name, ifindex)) in self.ifaces.iter_mut().enumerate() {
            match iface::index_of(name) {
                None if !self.gone[slot] => {
                    self.gone[slot] = true;
                    eprintln!(
                        "note: interface {name} is gone; dropscope keeps running and re-attaches when it returns"
                    );
                }
                Some(now) if now != *ifindex => {
                    match kernel::reattach(
                        &mut self.probes.ebpf,
                        slot,
                        name,
                        *ifindex,
                        now,
                        self.xdp,
                    ) {
                        Ok(mode) => eprintln!(
                            "note: interface {name} is back (ifindex {now}): XDP re-attached ({mode})"
                        ),
                        Err(e) => eprintln!(
                            "note: interface {name} is back but XDP could not re-attach: {e:#}"
                        ),
                    }
                    *ifindex = now;
                    self.gone[slot] = false;
                    self.tracker.set_ifindex(slot, now);
                }
                Some(_) if self.gone[slot] => self.gone[slot] = false,
                _ => {}
            }
        }
    }

    /// One interval: read → measure → detect → record → build. `now_sources`
    /// forces a read of the source table (last or early ticks).
    pub(super) fn tick(&mut self, now_sources: bool) -> Result<Tick> {
        // The source table is read every interval, but at most ~once a
        // second: at 100 ms intervals it would cost a core under a flood.
        let with_sources = now_sources
            || self
                .last_sources
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(950));
        if with_sources {
            self.last_sources = Some(Instant::now());
        }
        let maps = &mut self.probes.maps;
        let snap = maps.read(self.slots, with_sources)?;
        let sample = maps.close_epoch(self.source_budget)?;
        let ports = port_deltas(&mut self.prev_ports, maps.heavy_ports());
        let counters = self.nic.read(&self.ifaces).unwrap_or_default();
        let mut measured = self
            .tracker
            .measure(snap, counters, Some((&sample, &ports)));
        self.last_sample = Instant::now();
        let (mut events, loss) = self.detector.update(&measured, &sample, &ports);
        // An attack starting on stale source rates: read the table now so
        // its start event names the sources it has now.
        if !with_sources && events.iter().any(|e| e.phase == Phase::Start) {
            let fresh = self.probes.maps.read_sources()?;
            measured.top_sources = self
                .tracker
                .refresh_sources(fresh, std::time::Instant::now());
            measured.top_sources_fresh = true;
            self.last_sources = Some(Instant::now());
            for e in events.iter_mut().filter(|e| e.phase == Phase::Start) {
                self.detector.restate(e, &measured);
            }
        }
        let expired = self.tracker.take_expired();
        if let Err(e) = self.probes.maps.delete_sources(&expired) {
            // Not fatal: the LRU still bounds the table.
            eprintln!("note: expiring idle sources: {e:#}");
        }
        if let Some(rec) = self.recorder.as_mut() {
            if let Some(rb) = self.packet_samples.as_mut() {
                Maps::drain_packet_samples(rb.get_mut(), |s| rec.push(s));
            }
            for e in events.iter_mut() {
                let ifindex = self
                    .ifaces
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
        let blocklist_entries = if self.enforce {
            let (expired, kept) = Blocklist::of(&mut self.probes.ebpf, &self.pin_dir)?.sweep()?;
            for (p, _) in expired {
                eprintln!("blocklist: {p} expired and was removed");
            }
            Some(kept)
        } else {
            None
        };
        // Also drained here: a record that came with the last events is
        // printed before the session ends.
        if let Some(l) = self.logger.as_mut() {
            l.get_mut().flush();
        }
        Ok(Tick {
            report,
            events,
            blocklist_entries,
        })
    }
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
