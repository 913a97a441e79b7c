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

pub(crate) fn checksum(data: &[u8]) -> u16 {
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

/// As [`ipv4`], with the TCP (pseudo-header) or ICMP checksum filled in,
/// as a real sender's packets have: the kernel checks it before any socket
/// lookup.
pub fn ipv4_checked(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut l4 = l4.to_vec();
    match proto {
        6 => {
            let mut pseudo = Vec::with_capacity(12 + l4.len());
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            l4[16] = 0;
            l4[17] = 0;
            pseudo.extend_from_slice(&l4);
            let c = checksum(&pseudo);
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        1 => {
            l4[2] = 0;
            l4[3] = 0;
            let c = checksum(&l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
    ipv4(src, dst, proto, (0, false), &l4)
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

/// A small, seeded PRNG (xorshift64*): fuzz runs are repeatable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

/// A hostile frame: mostly well-formed headers with random fields (bogus
/// IHL, versions and lengths, odd fragment offsets, IPv6 extension chains,
/// VLAN stacks, every transport), then cut, padded or bit-flipped.
pub fn random_frame(r: &mut Rng) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&r.bytes(12));
    // Up to three tags (the parser reads two).
    for _ in 0..r.pick(&[0, 0, 0, 1, 1, 2, 3]) {
        f.extend_from_slice(&r.pick(&[TPID_8021Q, TPID_8021AD]).to_be_bytes());
        f.extend_from_slice(&r.bytes(2));
    }
    let kind = r.below(10);
    let l4 = |r: &mut Rng| -> (u8, Vec<u8>) {
        let p = r.pick(&[6u8, 6, 17, 17, 1, 58, 47, 0, 255]);
        let mut body = match p {
            6 => {
                let mut t = r.bytes(20);
                t[12] = (r.pick(&[5u8, 5, 5, 0, 15, 8]) << 4) | (t[12] & 0x0f);
                let any = r.next_u64() as u8;
                t[13] = r.pick(&[SYN, SYN | ACK, ACK, RST, FIN | ACK, PSH | ACK, any]);
                t
            }
            17 => r.bytes(8),
            _ => r.bytes(4),
        };
        let pay = r.below(64) as usize;
        body.extend_from_slice(&r.bytes(pay));
        (p, body)
    };
    match kind {
        0..=4 => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let (p, body) = l4(r);
            let ihl = r.pick(&[5u8, 5, 5, 5, 6, 15, 4, 0]);
            let mut h = vec![0u8; 20];
            h[0] = (r.pick(&[4u8, 4, 4, 4, 6, 0]) << 4) | ihl;
            let opts = (ihl as usize * 4).saturating_sub(20);
            let honest = 20 + opts + body.len();
            let total = match r.below(6) {
                0 => r.below(65536) as usize,
                1 => honest.saturating_sub(r.below(30) as usize),
                2 => honest + r.below(30) as usize,
                _ => honest,
            };
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let frag: u16 = match r.below(6) {
                0 => 0x2000,                            // MF, first
                1 => (r.below(0x2000) as u16) | 0x2000, // MF, odd offset
                2 => r.below(0x2000) as u16,            // last piece
                3 => 0x4000,                            // DF
                _ => 0,
            };
            h[6..8].copy_from_slice(&frag.to_be_bytes());
            h[8] = r.next_u64() as u8;
            h[9] = p;
            h[12..20].copy_from_slice(&r.bytes(8));
            f.extend_from_slice(&h);
            f.extend_from_slice(&r.bytes(opts));
            f.extend_from_slice(&body);
        }
        5..=8 => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let (p, body) = l4(r);
            let mut ext = Vec::new();
            let mut next = p;
            for _ in 0..r.pick(&[0, 0, 1, 2, 3, 7]) {
                let t = r.pick(&[0u8, 43, 60, 51, 44, 44]);
                let mut e = match t {
                    51 => {
                        let len = r.below(4) as u8;
                        let mut e = r.bytes((len as usize + 2) * 4);
                        e[1] = len;
                        e
                    }
                    44 => {
                        let mut e = r.bytes(8);
                        let off: u16 = if r.chance(60) {
                            0
                        } else {
                            r.below(8192) as u16
                        };
                        e[2..4].copy_from_slice(&((off << 3) | r.below(2) as u16).to_be_bytes());
                        e
                    }
                    _ => {
                        let len = r.below(3) as u8;
                        let mut e = r.bytes((len as usize + 1) * 8);
                        e[1] = len;
                        e
                    }
                };
                e[0] = next;
                next = t;
                let mut both = e;
                both.extend_from_slice(&ext);
                ext = both;
            }
            let honest = ext.len() + body.len();
            let plen = match r.below(6) {
                0 => r.below(65536) as usize,
                1 => honest.saturating_sub(r.below(20) as usize),
                2 => 0,
                _ => honest,
            };
            let mut h = r.bytes(40);
            h[0] = 0x60 | (h[0] & 0x0f);
            h[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            h[6] = next;
            f.extend_from_slice(&h);
            f.extend_from_slice(&ext);
            f.extend_from_slice(&body);
        }
        _ => {
            let any = r.next_u64() as u16;
            f.extend_from_slice(&r.pick(&[0x0806u16, 0x88cc, any]).to_be_bytes());
            let n = r.below(60) as usize;
            f.extend_from_slice(&r.bytes(n));
        }
    }
    match r.below(10) {
        0 | 1 => {
            let cut = 14 + r.below(f.len().saturating_sub(13) as u64) as usize;
            f.truncate(cut.max(14));
        }
        2 => {
            let pad = r.below(40) as usize;
            f.extend_from_slice(&vec![0u8; pad]);
        }
        3 => {
            for _ in 0..1 + r.below(4) {
                let i = r.below(f.len() as u64) as usize;
                f[i] ^= 1 << r.below(8);
            }
        }
        _ => {}
    }
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}
