//! Counters that never reach kfree_skb: NIC rings, driver FIFOs, the per-CPU
//! backlog. Read from /proc/net/dev, /proc/net/softnet_stat, sysfs and the
//! ethtool ioctl.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// Counter name -> value for one interface.
pub(crate) type Counters = BTreeMap<String, u64>;

/// The /proc/net/dev columns worth watching, in file order after the name.
const DEV_COLUMNS: [Option<&str>; 16] = [
    None, // rx_bytes
    None, // rx_packets
    Some("rx_errs"),
    Some("rx_dropped"),
    Some("rx_fifo"),
    Some("rx_frame"),
    None, // rx_compressed
    None, // rx_multicast
    None, // tx_bytes
    None, // tx_packets
    Some("tx_errs"),
    Some("tx_dropped"),
    Some("tx_fifo"),
    None, // tx_colls
    Some("tx_carrier"),
    None, // tx_compressed
];

/// Parses /proc/net/dev into interface -> counters (plus rx/tx packets).
pub(crate) fn parse_proc_net_dev(text: &str) -> Result<BTreeMap<String, Counters>> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let vals: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad /proc/net/dev line: {line}"))?;
        if vals.len() < 16 {
            bail!("short /proc/net/dev line: {line}");
        }
        let mut c = Counters::new();
        c.insert("rx_packets".into(), vals[1]);
        c.insert("tx_packets".into(), vals[9]);
        for (i, col) in DEV_COLUMNS.iter().enumerate() {
            if let Some(col) = col {
                c.insert((*col).into(), vals[i]);
            }
        }
        out.insert(name.trim().to_string(), c);
    }
    Ok(out)
}

/// Sum over CPUs of (dropped, time_squeeze) from /proc/net/softnet_stat.
pub(crate) fn parse_softnet(text: &str) -> Result<Counters> {
    let (mut dropped, mut squeeze) = (0u64, 0u64);
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 {
            bail!("short softnet_stat line: {line}");
        }
        dropped += u64::from_str_radix(cols[1], 16).context("softnet_stat dropped")?;
        squeeze += u64::from_str_radix(cols[2], 16).context("softnet_stat time_squeeze")?;
    }
    let mut c = Counters::new();
    c.insert("backlog_dropped".into(), dropped);
    c.insert("time_squeeze".into(), squeeze);
    Ok(c)
}

/// sysfs statistics that /proc/net/dev folds together (rx_missed_errors is
/// added into rx_dropped there). Only read when sysfs shows our namespace.
const SYSFS_STATS: [&str; 5] = [
    "rx_missed_errors",
    "rx_over_errors",
    "rx_crc_errors",
    "rx_length_errors",
    "rx_nohandler",
];

/// Does an ethtool statistic name look like loss?
pub(crate) fn is_loss_stat(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "drop", "miss", "fifo", "err", "discard", "overrun", "no_buf", "nobuf",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// Everything for the watched interfaces, once (doctor, a session's
/// start); a session's intervals read through one [`Reader`].
pub(crate) fn read_all(ifaces: &[(String, u32)]) -> Result<BTreeMap<String, Counters>> {
    Reader::default().read(ifaces)
}

/// Reads the interface counters interval after interval through files
/// opened once (and the shared ioctl socket): opening ten files and three
/// sockets a second was most of an idle dropscope's CPU time. procfs and sysfs make a file's
/// text anew when it is read again from offset 0. A device's sysfs files
/// that fail to read (it went away) are dropped together, and the next
/// read checks its index and opens them again.
pub(crate) struct Reader {
    proc_dev: Reopen,
    softnet: Reopen,
    /// Per (name, ifindex): the sysfs statistics files, when sysfs shows
    /// this namespace's device of that name.
    sysfs: BTreeMap<(String, u32), Vec<(&'static str, std::fs::File)>>,
    ethtool_names: BTreeMap<(String, u32), LossStats>,
    text: String,
}

/// A driver's statistics count and the indexes and names of its loss
/// statistics among them.
type LossStats = (usize, Vec<(usize, String)>);

impl Default for Reader {
    fn default() -> Self {
        Self {
            proc_dev: Reopen::new("/proc/net/dev".into()),
            softnet: Reopen::new("/proc/net/softnet_stat".into()),
            sysfs: BTreeMap::new(),
            ethtool_names: BTreeMap::new(),
            text: String::new(),
        }
    }
}

/// A file kept open and read from the start each time; opened again when
/// a read fails.
struct Reopen {
    path: String,
    file: Option<std::fs::File>,
}

impl Reopen {
    fn new(path: String) -> Self {
        Self { path, file: None }
    }

    /// The file's whole text into `out`. A kept file that fails (its
    /// device went away) is dropped and the path opened again.
    fn read(&mut self, out: &mut String) -> std::io::Result<()> {
        if let Some(f) = &self.file {
            if read_from_start(f, out).is_ok() {
                return Ok(());
            }
            self.file = None;
        }
        let f = self.file.insert(std::fs::File::open(&self.path)?);
        let r = read_from_start(f, out);
        if r.is_err() {
            self.file = None;
        }
        r
    }
}

/// Reads `file` from offset 0 to its end with pread: no seek and no size
/// query (procfs and sysfs files have no size to ask for).
fn read_from_start(file: &std::fs::File, out: &mut String) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut bytes = std::mem::take(out).into_bytes();
    bytes.clear();
    let mut chunk = [0u8; 4096];
    let r = loop {
        match file.read_at(&mut chunk, bytes.len() as u64) {
            Ok(0) => break Ok(()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    *out = String::from_utf8(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))?;
    r
}

impl Reader {
    /// Everything for the watched interfaces, keyed by interface name, with
    /// the per-CPU backlog under the pseudo-interface "softnet".
    pub(crate) fn read(&mut self, ifaces: &[(String, u32)]) -> Result<BTreeMap<String, Counters>> {
        self.proc_dev
            .read(&mut self.text)
            .context("reading /proc/net/dev")?;
        let dev = parse_proc_net_dev(&self.text)?;
        // Interfaces no longer watched under that (name, ifindex) go.
        let watched = |(n, i): &(String, u32)| ifaces.iter().any(|(m, j)| m == n && j == i);
        self.sysfs.retain(|k, _| watched(k));
        self.ethtool_names.retain(|k, _| watched(k));
        let mut out = BTreeMap::new();
        for (name, ifindex) in ifaces {
            let mut c = dev.get(name).cloned().unwrap_or_default();
            self.read_sysfs_stats(name, *ifindex, &mut c);
            for (k, v) in self.ethtool_stats(name, *ifindex) {
                c.insert(format!("ethtool:{k}"), v);
            }
            out.insert(name.clone(), c);
        }
        if self.softnet.read(&mut self.text).is_ok() {
            out.insert("softnet".into(), parse_softnet(&self.text)?);
        }
        Ok(out)
    }

    fn read_sysfs_stats(&mut self, iface: &str, ifindex: u32, c: &mut Counters) {
        let key = (iface.to_string(), ifindex);
        if !self.sysfs.contains_key(&key) {
            let dir = format!("/sys/class/net/{iface}");
            let same = std::fs::read_to_string(format!("{dir}/ifindex"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                == Some(ifindex);
            // sysfs shows the namespace it was mounted in: its device of
            // this name may be another namespace's (asked again next time:
            // a device that is gone may come back).
            if !same {
                return;
            }
            let files = SYSFS_STATS
                .iter()
                .filter_map(|name| {
                    let f = std::fs::File::open(format!("{dir}/statistics/{name}")).ok()?;
                    Some((*name, f))
                })
                .collect();
            self.sysfs.insert(key.clone(), files);
        }
        let text = &mut self.text;
        let mut failed = false;
        for (name, file) in self.sysfs.get(&key).into_iter().flatten() {
            match read_from_start(file, text) {
                Ok(()) => {
                    if let Ok(v) = text.trim().parse() {
                        c.insert((*name).into(), v);
                    }
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            self.sysfs.remove(&key);
        }
    }

    /// The loss-related driver statistics (`ethtool -S`) of one interface;
    /// empty for interfaces without driver statistics. Names are asked for
    /// again only when the driver's count of statistics changes.
    fn ethtool_stats(&mut self, iface: &str, ifindex: u32) -> Counters {
        let key = (iface.to_string(), ifindex);
        let cached = self.ethtool_names.get(&key).map(|(n, _)| *n);
        let Ok((n, values)) = ethtool::values(iface) else {
            return Counters::new();
        };
        if cached != Some(n) {
            let names = ethtool::names(iface, n)
                .map(|all| {
                    all.into_iter()
                        .enumerate()
                        .filter(|(_, k)| is_loss_stat(k))
                        .collect()
                })
                .unwrap_or_default();
            self.ethtool_names.insert(key.clone(), (n, names));
        }
        let (_, names) = &self.ethtool_names[&key];
        names
            .iter()
            .filter_map(|(i, k)| values.get(*i).map(|v| (k.clone(), *v)))
            .collect()
    }
}

pub(crate) mod ethtool {
    //! SIOCETHTOOL: ETHTOOL_GSSET_INFO, ETHTOOL_GSTRINGS, ETHTOOL_GSTATS.
    use std::{io, mem};

    const SIOCETHTOOL: libc::Ioctl = 0x8946;
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETHTOOL_GSTATS: u32 = 0x1d;
    const ETHTOOL_GSSET_INFO: u32 = 0x37;
    const ETH_SS_STATS: u32 = 1;
    const ETH_GSTRING_LEN: usize = 32;
    /// Drivers with more stats than this are not read (mlx5 has ~1500):
    /// the kernel writes every name and value the driver has, whatever
    /// count the request gives, so a buffer must hold them all.
    const MAX_STATS: usize = 4096;

    /// One ethtool command; `data` points at its struct.
    fn ioctl(iface: &str, data: *mut libc::c_void) -> io::Result<()> {
        let mut req = crate::sys::iface::ifreq(iface)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        req.ifr_ifru.ifru_data = data.cast();
        crate::sys::iface::ioctl(SIOCETHTOOL, &mut req)
    }

    const ETHTOOL_GSET: u32 = 0x1;
    const ETHTOOL_GRINGPARAM: u32 = 0x10;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;

    /// Issues one fixed-size ethtool command: words[0] is the command.
    fn words<const N: usize>(iface: &str, cmd: u32) -> io::Result<[u32; N]> {
        let mut w = [0u32; N];
        w[0] = cmd;
        ioctl(iface, w.as_mut_ptr().cast())?;
        Ok(w)
    }

    /// (rx_max, rx, tx_max, tx) ring sizes.
    pub(crate) fn ring(iface: &str) -> io::Result<(u32, u32, u32, u32)> {
        let w = words::<9>(iface, ETHTOOL_GRINGPARAM)?;
        Ok((w[1], w[5], w[4], w[8]))
    }

    /// (max_combined, combined, max_rx, rx) channel counts.
    pub(crate) fn channels(iface: &str) -> io::Result<(u32, u32, u32, u32)> {
        let w = words::<9>(iface, ETHTOOL_GCHANNELS)?;
        Ok((w[4], w[8], w[1], w[5]))
    }

    /// (speed Mb/s, full duplex); speed None when unknown.
    pub(crate) fn link(iface: &str) -> io::Result<(Option<u32>, Option<bool>)> {
        // struct ethtool_cmd is 44 bytes: 11 words.
        let w = words::<11>(iface, ETHTOOL_GSET)?;
        let speed = (w[3] & 0xffff) | ((w[7] & 0xffff) << 16);
        let duplex = (w[3] >> 16) & 0xff;
        let speed = (speed != 0 && speed != u32::MAX && speed != 0xffff).then_some(speed);
        let duplex = match duplex {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        };
        Ok((speed, duplex))
    }

    /// The driver's statistics count (0 when it has none, or more than
    /// [`MAX_STATS`]).
    fn count(iface: &str) -> io::Result<usize> {
        // struct ethtool_sset_info { cmd, reserved, sset_mask, data[] }
        let mut info = [0u32; 5];
        info[0] = ETHTOOL_GSSET_INFO;
        let mask_lo = 1u64 << ETH_SS_STATS;
        info[2] = mask_lo as u32;
        info[3] = (mask_lo >> 32) as u32;
        ioctl(iface, info.as_mut_ptr().cast())?;
        let returned_mask = info[2] as u64 | ((info[3] as u64) << 32);
        if returned_mask & mask_lo == 0 {
            return Ok(0);
        }
        let n = info[4] as usize;
        Ok(if n > MAX_STATS { 0 } else { n })
    }

    /// (count, values) of the driver's statistics. The count is asked for
    /// first every time: the kernel writes as many values as the driver
    /// has, so the buffer must hold them all.
    pub(super) fn values(iface: &str) -> io::Result<(usize, Vec<u64>)> {
        let n = count(iface)?;
        if n == 0 {
            return Ok((0, Vec::new()));
        }
        // struct ethtool_stats { cmd, n_stats, data[] (u64) }
        let mut stats = vec![0u64; 1 + n];
        let head = [ETHTOOL_GSTATS, n as u32];
        stats[0] = unsafe { mem::transmute::<[u32; 2], u64>(head) };
        ioctl(iface, stats.as_mut_ptr().cast())?;
        stats.remove(0);
        Ok((n, stats))
    }

    /// The names of the driver's first `n` statistics.
    pub(super) fn names(iface: &str, n: usize) -> io::Result<Vec<String>> {
        // struct ethtool_gstrings { cmd, string_set, len, data[] }
        let mut strings = vec![0u8; 12 + n * ETH_GSTRING_LEN];
        strings[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
        strings[4..8].copy_from_slice(&ETH_SS_STATS.to_ne_bytes());
        strings[8..12].copy_from_slice(&(n as u32).to_ne_bytes());
        ioctl(iface, strings.as_mut_ptr().cast())?;
        let got = (u32::from_ne_bytes(strings[8..12].try_into().unwrap()) as usize).min(n);
        Ok((0..got)
            .map(|i| {
                let raw = &strings[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
                let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                String::from_utf8_lossy(&raw[..end]).trim().to_string()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
  eth0: 9999999   50000    3   17    5     2          0        10  888888    40000    0    4    0     0       1          0
";

    #[test]
    fn proc_net_dev_columns() {
        let d = parse_proc_net_dev(DEV).unwrap();
        let e = &d["eth0"];
        assert_eq!(e["rx_errs"], 3);
        assert_eq!(e["rx_dropped"], 17);
        assert_eq!(e["rx_fifo"], 5);
        assert_eq!(e["rx_frame"], 2);
        assert_eq!(e["tx_dropped"], 4);
        assert_eq!(e["tx_carrier"], 1);
        assert_eq!(e["rx_packets"], 50000);
        assert_eq!(d["lo"]["rx_dropped"], 0);
        assert!(parse_proc_net_dev("h\nh\n eth0: 1 2 x\n").is_err());
    }

    /// A real /proc/net/dev (captured from a 6.18 host).
    #[test]
    fn captured_proc_net_dev_parses() {
        let text = include_str!("../../../tests/fixtures/text/proc_net_dev");
        let d = parse_proc_net_dev(text).unwrap();
        assert!(d.contains_key("lo") && d.contains_key("eth0"));
    }

    /// A kept file is read anew from its start; a path that is missing
    /// errs, and is opened once it is there.
    #[test]
    fn kept_files_are_read_from_the_start_each_time() {
        let path = std::env::temp_dir().join(format!("dropscope-reopen-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = Reopen::new(path.display().to_string());
        let mut text = String::new();
        assert!(f.read(&mut text).is_err());
        std::fs::write(&path, "1\n").unwrap();
        f.read(&mut text).unwrap();
        assert_eq!(text, "1\n");
        // Rewritten in place (same inode, as sysfs regenerates): the new text.
        let long = "x".repeat(10_000);
        std::fs::write(&path, &long).unwrap();
        f.read(&mut text).unwrap();
        assert_eq!(text, long);
        std::fs::remove_file(&path).unwrap();
        // procfs: read twice through one open file, whole both times.
        let mut dev = Reopen::new("/proc/net/dev".into());
        dev.read(&mut text).unwrap();
        assert!(parse_proc_net_dev(&text).unwrap().contains_key("lo"));
        dev.read(&mut text).unwrap();
        assert!(parse_proc_net_dev(&text).unwrap().contains_key("lo"));
    }

    #[test]
    fn softnet_sums_hex_columns() {
        let t = "0000a000 00000010 00000002 00000000\n0000b000 0000000f 00000001 00000000\n";
        let c = parse_softnet(t).unwrap();
        assert_eq!(c["backlog_dropped"], 31);
        assert_eq!(c["time_squeeze"], 3);
        assert!(parse_softnet("zz\n").is_err());
        parse_softnet(include_str!("../../../tests/fixtures/text/softnet_stat")).unwrap();
    }

    #[test]
    fn loss_names() {
        assert!(is_loss_stat("rx_queue_0_drops"));
        assert!(is_loss_stat("rx_missed_errors"));
        assert!(is_loss_stat("rx_fifo_errors"));
        assert!(!is_loss_stat("rx_queue_0_packets"));
        assert!(!is_loss_stat("peer_ifindex"));
    }
}
