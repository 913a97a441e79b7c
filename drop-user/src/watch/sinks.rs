//! Where each tick goes: Prometheus, the JSON event stream, the hooks, and
//! stdout (table or JSON lines), the full screen, or stderr (`run`). None
//! of them can hold the loop up.

use std::{io::IsTerminal, thread::JoinHandle};

use anyhow::{Context, Result};

use super::{Mode, WatchOptions, session::Tick};
use crate::{
    act::hooks::Hooks,
    export::{
        events::EventStream,
        pcap::Recorder,
        prometheus::{self, Exporter},
        terminal::{self, Format},
        top,
    },
    report::Report,
};

pub(super) struct Sinks {
    events: Option<EventStream>,
    exporter: Option<Exporter>,
    hooks: Hooks,
    mode: Mode,
    format: Format,
    /// Clear the terminal before each table.
    clear: bool,
    screen: Option<(std::sync::mpsc::Sender<Box<Report>>, JoinHandle<()>)>,
}

impl Sinks {
    /// Opens every output before anything is loaded, so a bad path or a
    /// taken port fails before anything is attached. Also opens the PCAP
    /// recorder (`--pcap-dir`), which the session feeds.
    pub(super) async fn open(opts: &WatchOptions) -> Result<(Sinks, Option<Recorder>)> {
        let events = match &opts.events {
            Some(t) => Some(EventStream::open(t)?),
            None => None,
        };
        let exporter = match opts.prometheus {
            Some(a) => Some(Exporter::start(a).await?),
            None => None,
        };
        let recorder = match &opts.pcap_dir {
            Some(d) => Some(Recorder::new(d, opts.pcap.clone())?),
            None => None,
        };
        let format = if opts.mode == Mode::Top {
            Format::Table
        } else {
            opts.format
        };
        let sinks = Sinks {
            events,
            exporter,
            hooks: Hooks::start(opts.hooks.clone(), opts.dry_run),
            mode: opts.mode,
            format,
            clear: format == Format::Table && std::io::stdout().is_terminal(),
            screen: None,
        };
        Ok((sinks, recorder))
    }

    /// Says where the metrics are and starts the full screen (`top` on a
    /// terminal); `quit` is sent when the user quits it.
    pub(super) fn start(&mut self, quit: tokio::sync::mpsc::UnboundedSender<()>) -> Result<()> {
        if let Some(e) = &self.exporter {
            eprintln!("note: Prometheus metrics at http://{}/metrics", e.addr);
        }
        if self.mode == Mode::Top && std::io::stdout().is_terminal() {
            self.screen = Some(top::spawn(quit).context("starting the full-screen view")?);
        }
        Ok(())
    }

    /// Publishes one tick everywhere; false once stdout's reader is gone.
    pub(super) fn publish(&mut self, tick: Tick) -> bool {
        let Tick {
            report,
            events,
            blocklist_entries,
        } = tick;
        if let Some(x) = &self.exporter {
            let extra = prometheus::Extra {
                hook_runs_dropped: self.hooks.dropped,
                blocklist_entries,
            };
            x.publish(prometheus::render(&report, &extra));
        }
        if let Some(ev) = self.events.as_mut()
            && let Err(e) = ev.write(&report, &events)
        {
            eprintln!("error: --events: {e}");
            self.events = None;
        }
        self.hooks.offer(&report, &events);
        let plain = match self.mode {
            Mode::Watch => true,
            Mode::Top => self.screen.is_none(),
            Mode::Run => false,
        };
        if plain {
            let mut out = std::io::stdout().lock();
            let mut ok = terminal::emit(&mut out, &report, self.format, self.clear).is_ok();
            for e in &events {
                ok &= terminal::emit_event(&mut out, e, self.format).is_ok();
            }
            return ok;
        }
        if let Some((tx, _)) = &self.screen {
            let _ = tx.send(Box::new(report));
        } else {
            let mut err = std::io::stderr().lock();
            for e in &events {
                let _ = terminal::emit_event(&mut err, e, Format::Table);
            }
        }
        true
    }

    /// Closes the full screen (restoring the terminal).
    pub(super) fn close(&mut self) {
        if let Some((tx, handle)) = self.screen.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}
