//! `--events FILE|-`: every interval's report and every attack event as
//! JSON lines (schemas `dropscope.watch/1` and `dropscope.attack/1`),
//! appended to a file or written to stdout.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use anyhow::{Context, Result};

use crate::report::{AttackEvent, Report};

pub(crate) struct EventStream {
    out: Box<dyn Write + Send>,
}

impl EventStream {
    /// "-" is stdout; anything else a file opened for appending.
    pub(crate) fn open(target: &str) -> Result<EventStream> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            let f = File::options()
                .create(true)
                .append(true)
                .open(Path::new(target))
                .with_context(|| format!("--events: cannot open {target}"))?;
            Box::new(BufWriter::new(f))
        };
        Ok(EventStream { out })
    }

    /// Writes the report, then the events; flushed so a tail sees them.
    pub(crate) fn write(&mut self, report: &Report, events: &[AttackEvent]) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, report)?;
        self.out.write_all(b"\n")?;
        for e in events {
            serde_json::to_writer(&mut self.out, e)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}
