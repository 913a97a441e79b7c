//! PCAP samples: the XDP program sends 1 in K packets (cut to the snap
//! length) through a ring buffer. The last `pre_attack` of them are kept in
//! memory; when an attack starts its file gets that onset, then up to
//! `attack_samples` packets of the attack itself. Files are classic pcap
//! (nanosecond timestamps, Ethernet), which tcpdump, tshark and Wireshark read.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use drop_common::PacketSample;

use crate::{config::PcapSpec, report::AttackEvent, taxonomy::Phase};

const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;

struct Sample {
    ts_ns: u64,
    ifindex: u32,
    len: u32,
    data: Vec<u8>,
}

struct Capture {
    path: PathBuf,
    ifindex: u32,
    out: BufWriter<File>,
    written: usize,
}

pub(crate) struct Recorder {
    dir: PathBuf,
    spec: PcapSpec,
    ring: VecDeque<Sample>,
    /// Open captures by attack id.
    captures: HashMap<u64, Capture>,
    /// Files of attacks whose capture is full or closed, by id.
    done: HashMap<u64, PathBuf>,
    /// Wall clock minus CLOCK_MONOTONIC, ns.
    offset_ns: i128,
}

impl Recorder {
    pub(crate) fn new(dir: &Path, spec: PcapSpec) -> Result<Recorder> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--pcap-dir: cannot create {}", dir.display()))?;
        let wall = crate::units::unix_now_ns();
        let mono = crate::units::monotonic_ns() as i128;
        Ok(Recorder {
            dir: dir.to_path_buf(),
            ring: VecDeque::with_capacity(spec.pre_attack.min(4096)),
            spec,
            captures: HashMap::new(),
            done: HashMap::new(),
            offset_ns: wall - mono,
        })
    }

    /// One sample from the ring buffer.
    pub(crate) fn push(&mut self, s: &PacketSample) {
        let n = (s.caplen as usize).min(s.data.len());
        let sample = Sample {
            ts_ns: s.ts_ns,
            ifindex: s.ifindex,
            len: s.len,
            data: s.data[..n].to_vec(),
        };
        let mut full = Vec::new();
        for (id, c) in self.captures.iter_mut() {
            if c.ifindex == sample.ifindex {
                if write_record(&mut c.out, &sample, self.offset_ns).is_ok() {
                    c.written += 1;
                }
                if c.written >= self.spec.pre_attack + self.spec.attack_samples {
                    full.push(*id);
                }
            }
        }
        for id in full {
            self.close(id);
        }
        if self.spec.pre_attack > 0 {
            if self.ring.len() >= self.spec.pre_attack {
                self.ring.pop_front();
            }
            self.ring.push_back(sample);
        }
    }

    /// Opens, continues or closes the capture of each event, and names the
    /// file in it.
    pub(crate) fn on_event(&mut self, e: &mut AttackEvent, ifindex: u32) {
        if e.phase == Phase::Start && !self.captures.contains_key(&e.id) {
            match self.open(e, ifindex) {
                Ok(path) => e.pcap = Some(path.display().to_string()),
                Err(err) => eprintln!("pcap: {err:#}"),
            }
            return;
        }
        let path = self
            .captures
            .get(&e.id)
            .map(|c| c.path.clone())
            .or_else(|| self.done.get(&e.id).cloned());
        e.pcap = path.map(|p| p.display().to_string());
        if e.phase == Phase::End {
            self.close(e.id);
            self.done.remove(&e.id);
        }
    }

    fn open(&mut self, e: &AttackEvent, ifindex: u32) -> Result<PathBuf> {
        let iface: String = e
            .iface
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = self.dir.join(format!(
            "dropscope-attack-{}-{}-{}.pcap",
            e.id, iface, e.started_at as u64
        ));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(f);
        let snap = self.spec.snaplen;
        let mut head = Vec::with_capacity(24);
        head.extend_from_slice(&PCAP_MAGIC_NS.to_le_bytes());
        head.extend_from_slice(&2u16.to_le_bytes());
        head.extend_from_slice(&4u16.to_le_bytes());
        head.extend_from_slice(&0i32.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&snap.to_le_bytes());
        head.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&head)?;
        let mut written = 0;
        for s in self.ring.iter().filter(|s| s.ifindex == ifindex) {
            write_record(&mut out, s, self.offset_ns)?;
            written += 1;
        }
        out.flush()?;
        self.captures.insert(
            e.id,
            Capture {
                path: path.clone(),
                ifindex,
                out,
                written,
            },
        );
        Ok(path)
    }

    fn close(&mut self, id: u64) {
        if let Some(mut c) = self.captures.remove(&id) {
            let _ = c.out.flush();
            self.done.insert(id, c.path);
        }
    }

    /// Flushes open files so readers see whole records.
    pub(crate) fn flush(&mut self) {
        for c in self.captures.values_mut() {
            let _ = c.out.flush();
        }
    }
}

fn write_record(out: &mut impl Write, s: &Sample, offset_ns: i128) -> std::io::Result<()> {
    let t = (s.ts_ns as i128 + offset_ns).max(0) as u128;
    let mut rec = Vec::with_capacity(16 + s.data.len());
    rec.extend_from_slice(&((t / 1_000_000_000) as u32).to_le_bytes());
    rec.extend_from_slice(&((t % 1_000_000_000) as u32).to_le_bytes());
    rec.extend_from_slice(&(s.data.len() as u32).to_le_bytes());
    rec.extend_from_slice(&s.len.max(s.data.len() as u32).to_le_bytes());
    rec.extend_from_slice(&s.data);
    out.write_all(&rec)
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}
