//! The `--enforce` blocklist: IPv4 and IPv6 LPM tries the XDP program
//! consults. The running instance pins them under a bpffs directory so that
//! `dropscope block/unblock/blocks` (and hook scripts) can edit them; it
//! removes expired entries each interval, and the XDP program already
//! ignores them once their deadline passes.

use std::{
    borrow::{Borrow, BorrowMut},
    fmt,
    fs::File,
    net::IpAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, LpmTrie, Map, MapData, lpm_trie::Key},
};
use drop_common::{BlockEntry, MAX_BLOCKS};
use serde::{Deserialize, Serialize};

use crate::units::monotonic_ns;

pub(crate) const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/dropscope";
const V4: &str = drop_common::flood_maps::BLOCK_V4;
const V6: &str = drop_common::flood_maps::BLOCK_V6;
const FILTER: &str = drop_common::flood_maps::BLOCK_FILTER;

/// An address prefix with its host bits cleared: `203.0.113.0/24`,
/// `2001:db8::/32`, or a plain address (a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or prefix (e.g. 203.0.113.0/24)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Prefix {
            addr: mask(addr, len),
            len,
        })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// One entry as `dropscope blocks` shows it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BlockRow {
    pub prefix: String,
    /// Seconds left; None never expires.
    pub expires_in_s: Option<f64>,
    pub expired: bool,
    pub added_unix: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// The two tries and their prefilter, owned (opened from pins) or
/// borrowed from the loader. Every edit holds the edit lock, so the
/// filter, rebuilt from the tries, never misses an entry another process
/// is adding.
pub(crate) struct Blocklist<T> {
    v4: LpmTrie<T, [u8; 4], BlockEntry>,
    v6: LpmTrie<T, [u8; 16], BlockEntry>,
    filter: Array<T, u64>,
    dir: PathBuf,
}

/// The prefilter's words (see `drop_common::BLOCK_FILTER_WORDS`) with the
/// bits of every given prefix set: one bit per first 16 address bits.
fn filter_words(prefixes: impl IntoIterator<Item = Prefix>) -> Vec<u64> {
    let half = drop_common::BLOCK_FILTER_WORDS as usize / 2;
    let mut words = vec![0u64; 2 * half];
    for p in prefixes {
        let (base, top) = match p.addr {
            IpAddr::V4(a) => (0, u16::from_be_bytes([a.octets()[0], a.octets()[1]])),
            IpAddr::V6(a) => (half, u16::from_be_bytes([a.octets()[0], a.octets()[1]])),
        };
        let span = 1u32 << (16 - p.len.min(16));
        let first = top as u32 & !(span - 1);
        for v in first..first + span {
            words[base + (v >> 6) as usize] |= 1 << (v & 63);
        }
    }
    words
}

impl Blocklist<MapData> {
    /// Opens the running instance's pinned tries.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        if !instance_running(dir) {
            bail!(
                "no dropscope with --enforce is running (nothing holds {}): start one with `dropscope run --enforce`",
                lock_path(dir).display()
            );
        }
        let open = |name: &str| -> Result<Map> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening {} (is bpffs mounted?)", path.display()))?;
            Ok(Map::from_map_data(data)?)
        };
        Ok(Blocklist {
            v4: LpmTrie::try_from(open(V4)?)?,
            v6: LpmTrie::try_from(open(V6)?)?,
            filter: Array::try_from(open(FILTER)?)?,
            dir: dir.to_path_buf(),
        })
    }
}

impl<'a> Blocklist<&'a mut MapData> {
    /// The loaded program's tries, pinned (or to be pinned) under `dir`.
    pub(crate) fn of(ebpf: &'a mut Ebpf, dir: &Path) -> Result<Self> {
        let mut v4 = None;
        let mut v6 = None;
        let mut filter = None;
        for (name, map) in ebpf.maps_mut() {
            match name {
                V4 => v4 = Some(map),
                V6 => v6 = Some(map),
                FILTER => filter = Some(map),
                _ => {}
            }
        }
        Ok(Blocklist {
            v4: LpmTrie::try_from(v4.ok_or_else(|| anyhow!("map {V4} missing"))?)?,
            v6: LpmTrie::try_from(v6.ok_or_else(|| anyhow!("map {V6} missing"))?)?,
            filter: Array::try_from(filter.ok_or_else(|| anyhow!("map {FILTER} missing"))?)?,
            dir: dir.to_path_buf(),
        })
    }
}

impl<T: Borrow<MapData> + BorrowMut<MapData>> Blocklist<T> {
    /// Adds (or renews) a prefix; `ttl` None never expires.
    pub(crate) fn add(&mut self, p: Prefix, ttl: Option<Duration>) -> Result<()> {
        let entry = BlockEntry {
            expires_ns: ttl.map_or(0, |t| monotonic_ns() + t.as_nanos() as u64),
            added_unix: crate::units::unix_now() as u64,
            ..Default::default()
        };
        let _edit = self.edit_lock()?;
        self.put(p, entry)
    }

    /// Held while the tries and filter change.
    fn edit_lock(&self) -> Result<File> {
        let path = lock_path(&self.dir).with_extension("edit");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock on an open fd; edits take milliseconds.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(f)
    }

    /// Makes the prefilter exactly what the tries hold.
    fn rebuild_filter(&mut self) -> Result<()> {
        let want = filter_words(self.list().into_iter().map(|(p, _)| p));
        for (i, w) in want.into_iter().enumerate() {
            if self.filter.get(&(i as u32), 0).ok() != Some(w) {
                self.filter
                    .set(i as u32, w, 0)
                    .with_context(|| format!("updating {FILTER}"))?;
            }
        }
        Ok(())
    }

    /// Inserts `p`, its filter bits first (the XDP program must never
    /// see an entry its filter hides). Callers hold the edit lock.
    fn put(&mut self, p: Prefix, entry: BlockEntry) -> Result<()> {
        for (i, w) in filter_words([p]).into_iter().enumerate() {
            if w != 0 {
                let old = self.filter.get(&(i as u32), 0).unwrap_or(0);
                if old | w != old {
                    self.filter
                        .set(i as u32, old | w, 0)
                        .with_context(|| format!("updating {FILTER}"))?;
                }
            }
        }
        let r = match p.addr {
            IpAddr::V4(a) => self
                .v4
                .insert(&Key::new(p.len as u32, a.octets()), entry, 0),
            IpAddr::V6(a) => self
                .v6
                .insert(&Key::new(p.len as u32, a.octets()), entry, 0),
        };
        r.map_err(|e| match e {
            aya::maps::MapError::SyscallError(ref s)
                if s.io_error.raw_os_error() == Some(libc::ENOSPC) =>
            {
                anyhow!("the blocklist is full ({MAX_BLOCKS} prefixes per family)")
            }
            e => anyhow!("adding {p}: {e}"),
        })
    }

    /// Removes a prefix; false when it was not there.
    pub(crate) fn remove(&mut self, p: Prefix) -> Result<bool> {
        let _edit = self.edit_lock()?;
        let removed = self.delete(p)?;
        if removed {
            self.rebuild_filter()?;
        }
        Ok(removed)
    }

    fn delete(&mut self, p: Prefix) -> Result<bool> {
        let r = match p.addr {
            IpAddr::V4(a) => self.v4.remove(&Key::new(p.len as u32, a.octets())),
            IpAddr::V6(a) => self.v6.remove(&Key::new(p.len as u32, a.octets())),
        };
        match r {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(anyhow!("removing {p}: {e}")),
        }
    }

    /// Every entry, most packets first.
    pub(crate) fn list(&self) -> Vec<(Prefix, BlockEntry)> {
        entries(&self.v4, &self.v6)
    }

    pub(crate) fn rows(&self) -> Vec<BlockRow> {
        let now = monotonic_ns();
        self.list()
            .into_iter()
            .map(|(p, e)| BlockRow {
                prefix: p.to_string(),
                expires_in_s: (e.expires_ns != 0)
                    .then(|| e.expires_ns.saturating_sub(now) as f64 / 1e9),
                expired: e.expires_ns != 0 && e.expires_ns <= now,
                added_unix: e.added_unix,
                packets: e.packets,
                bytes: e.bytes,
            })
            .collect()
    }

    /// Deletes expired entries; returns them and how many entries are left.
    pub(crate) fn sweep(&mut self) -> Result<(Vec<(Prefix, BlockEntry)>, usize)> {
        let now = monotonic_ns();
        let is_expired = |e: &BlockEntry| e.expires_ns != 0 && e.expires_ns <= now;
        if !self.list().iter().any(|(_, e)| is_expired(e)) {
            return Ok((Vec::new(), self.list().len()));
        }
        let _edit = self.edit_lock()?;
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.list().into_iter().partition(|(_, e)| is_expired(e));
        for (p, _) in &expired {
            let _ = self.delete(*p);
        }
        self.rebuild_filter()?;
        Ok((expired, kept.len()))
    }
}

/// The entries of both tries, most packets first.
fn entries<T: Borrow<MapData>>(
    v4: &LpmTrie<T, [u8; 4], BlockEntry>,
    v6: &LpmTrie<T, [u8; 16], BlockEntry>,
) -> Vec<(Prefix, BlockEntry)> {
    let mut out = Vec::new();
    for (k, v) in v4.iter().flatten() {
        out.push((
            Prefix {
                addr: IpAddr::from(k.data()),
                len: k.prefix_len() as u8,
            },
            v,
        ));
    }
    for (k, v) in v6.iter().flatten() {
        out.push((
            Prefix {
                addr: IpAddr::from(k.data()),
                len: k.prefix_len() as u8,
            },
            v,
        ));
    }
    out.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0)));
    out
}

/// Held by the instance running with `--enforce`: an flock on a file in
/// /run, and the tries pinned under the bpffs directory.
pub(crate) struct Pins {
    dir: PathBuf,
    _lock: File,
}

fn lock_path(dir: &Path) -> PathBuf {
    let tag: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Path::new("/run").join(format!("dropscope-enforce{tag}.lock"))
}

fn instance_running(dir: &Path) -> bool {
    let Ok(f) = File::open(lock_path(dir)) else {
        return false;
    };
    // SAFETY: flock on an open fd.
    let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !free
}

/// Pins the loaded tries under `dir`. Entries pinned by an instance that
/// died without cleaning up (SIGKILL) are carried over, so blocks survive
/// a restart.
pub(crate) fn pin(ebpf: &mut Ebpf, dir: &Path) -> Result<(Pins, usize)> {
    let lock_file = lock_path(dir);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .with_context(|| format!("creating {}", lock_file.display()))?;
    // SAFETY: flock on an open fd.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another dropscope --enforce already owns the blocklist at {}: stop it, or pass a different --pin-dir",
            dir.display()
        );
    }
    ensure_bpffs(dir)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {} (is /sys/fs/bpf a bpffs mount?)", dir.display()))?;
    // Carry over what a dead instance left behind.
    let mut carried = Vec::new();
    if dir.join(V4).exists() || dir.join(V6).exists() {
        let open = |name: &str| -> Option<Map> {
            MapData::from_pin(dir.join(name))
                .ok()
                .and_then(|d| Map::from_map_data(d).ok())
        };
        if let (Some(a), Some(b)) = (open(V4), open(V6))
            && let (Ok(v4), Ok(v6)) = (LpmTrie::try_from(a), LpmTrie::try_from(b))
        {
            let now = monotonic_ns();
            carried = entries(&v4, &v6)
                .into_iter()
                .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now)
                .collect();
        }
        for name in [V4, V6, FILTER] {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    let n = carried.len();
    {
        let mut bl = Blocklist::of(ebpf, dir)?;
        let _edit = bl.edit_lock()?;
        for (p, mut e) in carried {
            e.packets = 0;
            e.bytes = 0;
            bl.put(p, e)?;
        }
    }
    for name in [V4, V6, FILTER] {
        let map = ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing"))?;
        map.pin(dir.join(name))
            .with_context(|| format!("pinning {name} under {}", dir.display()))?;
    }
    let _ = std::fs::write(&lock_file, format!("{}\n", std::process::id()));
    Ok((
        Pins {
            dir: dir.to_path_buf(),
            _lock: lock,
        },
        n,
    ))
}

impl Drop for Pins {
    fn drop(&mut self) {
        for name in [V4, V6, FILTER] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure the pin directory's parent is on a bpffs: mounts one on
/// /sys/fs/bpf when nothing is there (a container, or `ip netns exec`,
/// which gives each command a fresh /sys: then only commands in the same
/// mount namespace see the pins, and the note says so).
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    let parent = dir.parent().unwrap_or(root);
    if is_bpffs(parent) || is_bpffs(dir) {
        return Ok(());
    }
    if parent != root {
        bail!(
            "--pin-dir {}: {} is not a bpffs mount (mount one: `mount -t bpf bpf {}`)",
            dir.display(),
            parent.display(),
            parent.display()
        );
    }
    let c = std::ffi::CString::new("/sys/fs/bpf").unwrap();
    let fs = std::ffi::CString::new("bpf").unwrap();
    // SAFETY: plain mount(2) with valid C strings.
    let r = unsafe { libc::mount(fs.as_ptr(), c.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        bail!(
            "/sys/fs/bpf is not a bpffs mount and mounting one failed ({}): run `mount -t bpf bpf /sys/fs/bpf`",
            std::io::Error::last_os_error()
        );
    }
    eprintln!(
        "note: /sys/fs/bpf was not mounted (ip netns exec gives each command its own /sys): mounted a private bpffs; run block/unblock in this mount namespace, or use --pin-dir on a shared bpffs mount"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: Prefix = "203.0.113.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "203.0.113.0/24");
        assert_eq!(
            "10.0.0.1".parse::<Prefix>().unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert_eq!(
            "2001:db8::1/32".parse::<Prefix>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("0.0.0.0/0".parse::<Prefix>().unwrap().len, 0);
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("2001:db8::/129".parse::<Prefix>().is_err());
        assert!("evil; rm -rf /".parse::<Prefix>().is_err());
        assert!("10.0.0.0/".parse::<Prefix>().is_err());
    }

    #[test]
    fn filter_covers_exactly_the_prefixes_first_16_bits() {
        let bit = |w: &[u64], i: usize| w[i / 64] >> (i % 64) & 1 == 1;
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let w = filter_words([p("203.0.113.7"), p("10.0.0.0/8"), p("2001:db8::/32")]);
        assert!(bit(&w, 203 * 256));
        assert!(!bit(&w, 203 * 256 + 1));
        // A /8 covers 256 first-16-bit values.
        assert!((10 * 256..11 * 256).all(|i| bit(&w, i)));
        assert!(!bit(&w, 11 * 256) && !bit(&w, 10 * 256 - 1));
        let v6 = 65536 + 0x2001;
        assert!(bit(&w, v6) && !bit(&w, v6 + 1) && !bit(&w, 0x2001));
        let set: u32 = w.iter().map(|x| x.count_ones()).sum();
        assert_eq!(set, 1 + 256 + 1);
        // /0 covers everything of its family only.
        let all = filter_words([p("0.0.0.0/0")]);
        assert!(all[..1024].iter().all(|x| *x == u64::MAX));
        assert!(all[1024..].iter().all(|x| *x == 0));
    }
}
