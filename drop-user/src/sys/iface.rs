//! Interface names, indexes and the default-route interfaces.

use std::collections::BTreeSet;

use anyhow::{Result, bail};

pub(crate) fn index_of(name: &str) -> Option<u32> {
    let mut req = ifreq(name)?;
    ioctl(libc::SIOCGIFINDEX as libc::Ioctl, &mut req).ok()?;
    // SAFETY: SIOCGIFINDEX filled the union's index.
    let i = unsafe { req.ifr_ifru.ifru_ifindex };
    (i > 0).then_some(i as u32)
}

/// Link state of `name`: None if it does not exist, else (administratively
/// up, carrier) from its flags (IFF_UP, IFF_RUNNING).
pub(crate) fn link_state(name: &str) -> Option<(bool, bool)> {
    let mut req = ifreq(name)?;
    ioctl(libc::SIOCGIFFLAGS as libc::Ioctl, &mut req).ok()?;
    // SAFETY: SIOCGIFFLAGS filled the union's flags.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as i32;
    Some((flags & libc::IFF_UP != 0, flags & libc::IFF_RUNNING != 0))
}

/// A request naming `name`; None for a name no interface can have.
pub(crate) fn ifreq(name: &str) -> Option<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains('\0') {
        return None;
    }
    // SAFETY: an all-zero ifreq is a valid empty request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Some(req)
}

/// One interface ioctl through [`ioctl_socket`] (ethtool's too, with
/// its command in the request's data pointer).
pub(crate) fn ioctl(request: libc::Ioctl, req: &mut libc::ifreq) -> std::io::Result<()> {
    let fd = ioctl_socket()?;
    // SAFETY: req is a live, properly sized ifreq for these requests.
    let r = unsafe { libc::ioctl(fd, request, req as *mut libc::ifreq) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The datagram socket interface ioctls go through (index, flags,
/// ethtool), opened once: a session asks each interval, and a socket per
/// question was a good part of an idle dropscope's CPU time.
pub(crate) fn ioctl_socket() -> std::io::Result<std::os::fd::RawFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    static SOCK: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    let sock = SOCK.get_or_init(|| {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    });
    sock.as_ref()
        .map(|s| s.as_raw_fd())
        .ok_or_else(|| std::io::Error::other("no socket for interface ioctls"))
}

pub(crate) fn name_of(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// All interface names of this network namespace.
pub(crate) fn all_names() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect()
}

/// Interfaces carrying a default route, IPv4 (/proc/net/route) then IPv6.
pub(crate) fn default_route_ifaces() -> Vec<String> {
    let mut out = BTreeSet::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_route_v4(&t));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_route_v6(&t));
    }
    out.into_iter().collect()
}

pub(crate) fn parse_route_v4(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            (c.len() >= 8 && c[1] == "00000000" && c[7] == "00000000").then(|| c[0].to_string())
        })
        .collect()
}

pub(crate) fn parse_route_v6(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            // dest dest_len src src_len next_hop metric refcnt use flags iface
            let is_default = c.len() >= 10 && c[0].bytes().all(|b| b == b'0') && c[1] == "00";
            (is_default && c[9] != "lo").then(|| c[9].to_string())
        })
        .collect()
}

/// Resolves the interfaces to watch: the given names, or the default-route ones.
pub(crate) fn resolve(requested: &[String]) -> Result<Vec<(String, u32)>> {
    let names = if requested.is_empty() {
        let d = default_route_ifaces();
        if d.is_empty() {
            bail!(
                "no default route, so no interface to watch by default: name one with --iface (available: {})",
                all_names().join(", ")
            );
        }
        d
    } else {
        requested.to_vec()
    };
    let mut out = Vec::new();
    for n in names {
        match index_of(&n) {
            Some(i) => {
                if !out.iter().any(|(_, j)| *j == i) {
                    out.push((n, i))
                }
            }
            None => bail!(
                "unknown interface '{n}' (available: {})",
                all_names().join(", ")
            ),
        }
    }
    Ok(out)
}

/// An interface's first address (IPv4 preferred; IPv6 link-local never),
/// or "" if it has none.
pub(crate) fn first_address(iface: &str) -> String {
    let mut out = None;
    // SAFETY: getifaddrs/freeifaddrs pair; entries read while the list lives.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return String::new();
        }
        let mut p = head;
        while !p.is_null() {
            let a = &*p;
            if !a.ifa_addr.is_null()
                && std::ffi::CStr::from_ptr(a.ifa_name).to_bytes() == iface.as_bytes()
            {
                match (*a.ifa_addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a.ifa_addr as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        out = Some(ip.to_string());
                        break;
                    }
                    libc::AF_INET6 if out.is_none() => {
                        let sin6 = &*(a.ifa_addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if !ip.is_unicast_link_local() {
                            out = Some(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
            p = a.ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wg0\t00000000\t00000000\t0001\t0\t0\t0\t00000080\t0\t0\t0
";
        assert_eq!(parse_route_v4(v4), vec!["eth0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003   eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   eth1
";
        assert_eq!(parse_route_v6(v6), vec!["eth1"]);
    }
}

/// Names interfaces of other network namespaces: `vb@blue` for a named
/// namespace (`ip netns`), `eth0@host` for PID 1's, else `eth0@netns:INODE`.
#[derive(Default)]
pub(crate) struct ForeignNames {
    cache: std::collections::HashMap<(u32, u32), String>,
}

impl ForeignNames {
    pub(crate) fn label(&mut self, netns: u32, ifindex: u32) -> String {
        self.cache
            .entry((netns, ifindex))
            .or_insert_with(|| foreign_label(netns, ifindex))
            .clone()
    }
}

fn inode_of(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// A path that opens the namespace with this inode, and its display name.
fn find_netns(netns: u32) -> Option<(std::path::PathBuf, String)> {
    if let Ok(dir) = std::fs::read_dir("/var/run/netns") {
        for e in dir.flatten() {
            if inode_of(&e.path()) == Some(netns) {
                return Some((e.path(), e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    let init = std::path::PathBuf::from("/proc/1/ns/net");
    if inode_of(&init) == Some(netns) {
        return Some((init, "host".into()));
    }
    None
}

/// Runs `f` in the network namespace at `path` (an nsfs file): setns
/// affects only the calling thread, so on a throwaway one. None if the
/// namespace can't be entered or `f` finds nothing.
pub(crate) fn in_netns<T: Send + 'static>(
    path: std::path::PathBuf,
    f: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let ns = std::fs::File::open(&path).ok()?;
        // SAFETY: setns on an open nsfs fd; it changes only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        f()
    })
    .join()
    .ok()
    .flatten()
}

fn foreign_label(netns: u32, ifindex: u32) -> String {
    let Some((path, ns_name)) = find_netns(netns) else {
        return format!("if{ifindex}@netns:{netns}");
    };
    let name = in_netns(path, move || name_of(ifindex));
    match name {
        Some(n) => format!("{n}@{ns_name}"),
        None => format!("if{ifindex}@{ns_name}"),
    }
}
