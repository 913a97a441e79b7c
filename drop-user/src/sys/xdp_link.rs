//! Which XDP program an interface already runs: an rtnetlink RTM_GETLINK
//! for the interface, its IFLA_XDP attributes (the program ids per mode).

use std::io;

use crate::taxonomy::XdpMode;
use anyhow::{Context, Result, bail};

/// How an XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XdpAttach {
    Native,
    Generic,
    Offload,
}

impl XdpAttach {
    pub(crate) fn mode(self) -> XdpMode {
        match self {
            XdpAttach::Native => XdpMode::Native,
            XdpAttach::Generic => XdpMode::Generic,
            XdpAttach::Offload => XdpMode::Offload,
        }
    }
}

// uapi/linux/if_link.h
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The programs attached to `ifindex` as (mode, program id): empty when the
/// hook is free. Offloaded programs are listed but never observed.
pub(crate) fn attached(ifindex: u32) -> Result<Vec<(XdpAttach, u32)>> {
    let reply =
        getlink(ifindex).with_context(|| format!("querying ifindex {ifindex} over rtnetlink"))?;
    // nlmsghdr (16) + ifinfomsg (16), then attributes.
    let Some(link_attrs) = reply.get(32..) else {
        bail!("short RTM_NEWLINK reply");
    };
    let Some(xdp) = find_attr(link_attrs, IFLA_XDP) else {
        return Ok(Vec::new());
    };
    let mut mode = 0u8;
    let (mut any, mut drv, mut skb, mut hw) = (0u32, 0u32, 0u32, 0u32);
    for (ty, val) in attrs(xdp) {
        match ty {
            IFLA_XDP_ATTACHED => mode = val.first().copied().unwrap_or(0),
            IFLA_XDP_PROG_ID => any = u32_of(val),
            IFLA_XDP_DRV_PROG_ID => drv = u32_of(val),
            IFLA_XDP_SKB_PROG_ID => skb = u32_of(val),
            IFLA_XDP_HW_PROG_ID => hw = u32_of(val),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match mode {
        XDP_ATTACHED_DRV if any != 0 => out.push((XdpAttach::Native, any)),
        XDP_ATTACHED_SKB if any != 0 => out.push((XdpAttach::Generic, any)),
        XDP_ATTACHED_HW if any != 0 => out.push((XdpAttach::Offload, any)),
        XDP_ATTACHED_MULTI => {
            for (m, id) in [
                (XdpAttach::Native, drv),
                (XdpAttach::Generic, skb),
                (XdpAttach::Offload, hw),
            ] {
                if id != 0 {
                    out.push((m, id));
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

fn u32_of(v: &[u8]) -> u32 {
    v.get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// The (type, value) netlink attributes in `buf`, stopping at the first
/// malformed one.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let val = &buf[4..len];
        buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
        Some((ty, val))
    })
}

fn find_attr(buf: &[u8], want: u16) -> Option<&[u8]> {
    attrs(buf).find(|(ty, _)| *ty == want).map(|(_, val)| val)
}

/// Sends RTM_GETLINK for one interface and returns the RTM_NEWLINK reply.
fn getlink(ifindex: u32) -> io::Result<Vec<u8>> {
    // SAFETY: a netlink socket owned by `fd` below and closed on drop.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh fd nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    use std::os::fd::AsRawFd;
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    let flags = libc::NLM_F_REQUEST as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, ifi_index at offset 4.
    req[16 + 4..16 + 8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: req is a valid buffer of its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < 16 {
            return Err(io::Error::other("short netlink reply"));
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if ty == libc::NLMSG_ERROR as u16 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
            continue;
        }
        if ty == libc::RTM_NEWLINK {
            let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(n);
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_xdp_program() {
        // Loopback always exists (ifindex 1 in every namespace) and nothing
        // here attaches XDP to it.
        assert_eq!(attached(1).unwrap(), Vec::new());
    }

    #[test]
    fn nested_attributes_are_walked() {
        let mut buf = Vec::new();
        for (ty, val) in [
            (IFLA_XDP_ATTACHED, vec![2u8]),
            (IFLA_XDP_PROG_ID, 77u32.to_ne_bytes().to_vec()),
        ] {
            let len = 4 + val.len();
            buf.extend_from_slice(&(len as u16).to_ne_bytes());
            buf.extend_from_slice(&ty.to_ne_bytes());
            buf.extend_from_slice(&val);
            while buf.len() % 4 != 0 {
                buf.push(0);
            }
        }
        assert_eq!(find_attr(&buf, IFLA_XDP_PROG_ID).map(u32_of), Some(77));
        assert_eq!(find_attr(&buf, IFLA_XDP_ATTACHED), Some(&[2u8][..]));
    }
}
