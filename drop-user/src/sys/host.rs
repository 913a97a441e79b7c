//! Read-only facts about the host that explain drops: sysctls, UDP sockets
//! and their owners, firewall rule counters, routes, RPS. Nothing here
//! changes the system.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
};

/// A sysctl by its dotted name, e.g. `net.core.rmem_max`.
pub(crate) fn sysctl(name: &str) -> Option<String> {
    sysctl_path(&name.split('.').collect::<Vec<_>>())
}

/// A sysctl by path components, for names holding dots (`eth0.100`).
pub(crate) fn sysctl_path(parts: &[&str]) -> Option<String> {
    let p = format!("/proc/sys/{}", parts.join("/"));
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    if let Some(v) = read(&p) {
        return Some(v);
    }
    // Host-wide sysctls (net.core.netdev_max_backlog...) exist only in the
    // initial network namespace: read them there.
    super::iface::in_netns("/proc/1/ns/net".into(), move || read(&p))
}

/// One UDP socket from /proc/net/udp{,6}.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UdpSocket {
    pub local: IpAddr,
    pub port: u16,
    /// Bytes waiting to be read.
    pub rx_queue: u64,
    pub inode: u64,
    /// Datagrams this socket dropped since it was created.
    pub drops: u64,
}

fn parse_addr(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => {
            let v = u32::from_str_radix(hex, 16).ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v))))
        }
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

pub(crate) fn parse_proc_udp(text: &str) -> Vec<UdpSocket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let c: Vec<&str> = line.split_whitespace().collect();
        if c.len() < 13 {
            continue;
        }
        let Some((addr, port)) = c[1].split_once(':') else {
            continue;
        };
        let (Some(local), Ok(port)) = (parse_addr(addr), u16::from_str_radix(port, 16)) else {
            continue;
        };
        let rx_queue = c[4]
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
            .unwrap_or(0);
        out.push(UdpSocket {
            local,
            port,
            rx_queue,
            inode: c[9].parse().unwrap_or(0),
            drops: c[12].parse().unwrap_or(0),
        });
    }
    out
}

pub(crate) fn udp_sockets() -> Vec<UdpSocket> {
    let mut v = Vec::new();
    for f in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(t) = std::fs::read_to_string(f) {
            v.extend(parse_proc_udp(&t));
        }
    }
    v
}

/// (pid, command) of the processes holding socket inodes.
pub(crate) fn socket_owners(inodes: &[u64]) -> HashMap<u64, (u32, String)> {
    let mut out = HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            let Some(ino) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) else {
                continue;
            };
            let Ok(ino) = ino.parse::<u64>() else {
                continue;
            };
            if inodes.contains(&ino) && !out.contains_key(&ino) {
                let comm = std::fs::read_to_string(p.path().join("comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                out.insert(ino, (pid, comm));
            }
        }
    }
    out
}

/// Receive buffer sizes (bytes) by socket inode, from `ss -uamne`.
pub(crate) fn udp_rcvbufs() -> HashMap<u64, u64> {
    let out = Command::new("ss")
        .args(["-H", "-u", "-a", "-m", "-n", "-e"])
        .output();
    match out {
        Ok(o) if o.status.success() => parse_ss_rcvbuf(&String::from_utf8_lossy(&o.stdout)),
        _ => HashMap::new(),
    }
}

pub(crate) fn parse_ss_rcvbuf(text: &str) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    let mut ino = None;
    for tok in text.split_whitespace() {
        if let Some(v) = tok.strip_prefix("ino:") {
            ino = v.parse::<u64>().ok();
        } else if let Some(v) = tok.strip_prefix("skmem:(") {
            let rb = v
                .trim_end_matches(')')
                .split(',')
                .find_map(|f| f.strip_prefix("rb"))
                .and_then(|n| n.parse::<u64>().ok());
            if let (Some(i), Some(rb)) = (ino.take(), rb) {
                out.insert(i, rb);
            }
        }
    }
    out
}

/// A firewall rule with its packet counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    /// "iptables" or "ip6tables".
    pub family: &'static str,
    pub table: String,
    pub chain: String,
    /// The rule as iptables-save prints it, without the counter.
    pub rule: String,
    pub packets: u64,
}

pub(crate) fn parse_iptables_save(family: &'static str, text: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((counter, rule)) = rest.split_once("] ") else {
            continue;
        };
        let packets = counter
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let chain = rule.split_whitespace().nth(1).unwrap_or("").to_string();
        out.push(Rule {
            family,
            table: table.clone(),
            chain,
            rule: rule.to_string(),
            packets,
        });
    }
    out
}

/// Every iptables/ip6tables rule with its counter; empty if the tools are missing.
pub(crate) fn firewall_rules() -> Vec<Rule> {
    let mut out = Vec::new();
    for (family, bin) in [
        ("iptables", "iptables-save"),
        ("ip6tables", "ip6tables-save"),
    ] {
        if let Ok(o) = Command::new(bin).arg("-c").output()
            && o.status.success()
        {
            out.extend(parse_iptables_save(
                family,
                &String::from_utf8_lossy(&o.stdout),
            ));
        }
    }
    out
}

/// Is Receive Packet Steering configured on any rx queue of `iface`?
pub(crate) fn rps_enabled(iface: &str) -> Option<bool> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{iface}/queues")).ok()?;
    let mut seen = false;
    for q in dir.flatten() {
        if !q.file_name().to_string_lossy().starts_with("rx-") {
            continue;
        }
        if let Ok(mask) = std::fs::read_to_string(q.path().join("rps_cpus")) {
            seen = true;
            if mask.trim().chars().any(|c| c != '0' && c != ',') {
                return Some(true);
            }
        }
    }
    seen.then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_udp_rows() {
        let t = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1234: 024D0A0A:138A 00000000:0000 07 00000000:00001200 00:00000000 00000000     0        0 98765 2 0000000000000000 17
";
        let s = parse_proc_udp(t);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].local, "10.10.77.2".parse::<IpAddr>().unwrap());
        assert_eq!(s[0].port, 5002);
        assert_eq!(s[0].rx_queue, 0x1200);
        assert_eq!(s[0].inode, 98765);
        assert_eq!(s[0].drops, 17);
        let t6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  5: 000080FD000000000000000002000000:1B58 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
";
        let s6 = parse_proc_udp(t6);
        assert_eq!(s6[0].local, "fd80::2".parse::<IpAddr>().unwrap());
        assert_eq!(s6[0].port, 7000);
    }

    #[test]
    fn ss_receive_buffers() {
        let t = "UNCONN 0 0 10.77.1.2:5002 0.0.0.0:* ino:4242 sk:1 cgroup:/ <->\n\t skmem:(r4352,rb2304,t0,tb212992,f0,w0,o0,bl0,d12)\nUNCONN 0 0 0.0.0.0:68 0.0.0.0:* ino:77 sk:2 <->\n\t skmem:(r0,rb212992,t0,tb212992,f4096,w0,o0,bl0,d0)\n";
        let m = parse_ss_rcvbuf(t);
        assert_eq!(m[&4242], 2304);
        assert_eq!(m[&77], 212992);
    }

    #[test]
    fn iptables_save_counters() {
        let t = "# Generated\n*filter\n:INPUT ACCEPT [10:600]\n[1000:92000] -A INPUT -p udp -m udp --dport 5001 -j DROP\n[0:0] -A INPUT -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n*raw\n[5:300] -A PREROUTING -j DROP\nCOMMIT\n";
        let r = parse_iptables_save("iptables", t);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].table, "filter");
        assert_eq!(r[0].chain, "INPUT");
        assert_eq!(r[0].packets, 1000);
        assert_eq!(r[0].rule, "-A INPUT -p udp -m udp --dport 5001 -j DROP");
        assert_eq!((r[2].table.as_str(), r[2].packets), ("raw", 5));
    }
}
