//! Builders for the raw frames the parser tests send: Ethernet with 802.1Q /
//! 802.1ad tags, IPv4 (fragments), IPv6 (extension headers), UDP and TCP.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

pub struct Eth {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Outer first: (TPID, VLAN id).
    pub tags: Vec<(u16, u16)>,
}

impl Eth {
    pub fn frame(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + payload.len());
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.src);
        for (tpid, vid) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 packet; `frag` = (offset in 8-byte units, more fragments).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: (u16, bool), l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    let f = (frag.0 & 0x1fff) | if frag.1 { 0x2000 } else { 0 };
    h[6..8].copy_from_slice(&f.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// IPv6 packet; `ext` are (next-header number, header bytes) in order.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, ext: &[(u8, Vec<u8>)], l4: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = ext.get(i + 1).map(|e| e.0).unwrap_or(proto);
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(l4);
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    h[6] = ext.first().map(|e| e.0).unwrap_or(proto);
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&body);
    h
}

/// Hop-by-hop options header (8 bytes, PadN).
pub fn hop_by_hop() -> (u8, Vec<u8>) {
    (0, vec![0, 0, 1, 4, 0, 0, 0, 0])
}

/// Fragment header: offset in 8-byte units, more fragments.
pub fn fragment(offset: u16, more: bool) -> (u8, Vec<u8>) {
    let v = (offset << 3) | more as u16;
    let b = v.to_be_bytes();
    (44, vec![0, 0, b[0], b[1], 0, 0, 0, 1])
}

/// UDP header plus payload (checksum left 0: valid for IPv4, and the
/// kernel's IPv6 drop is beside the point for parser tests).
pub fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    u
}

/// TCP header (20 bytes) with the given flags byte.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&1024u16.to_be_bytes());
    t
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const RST: u8 = 0x04;
pub const FIN: u8 = 0x01;
pub const PSH: u8 = 0x08;
