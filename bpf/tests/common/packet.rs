// SPDX-License-Identifier: Apache-2.0
//! A tiny Ethernet/IPv4/TCP|UDP packet builder and parser with checksums,
//! for golden packet tests.

use std::net::Ipv4Addr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

/// MAC of the workload (frame source when it sends).
pub const WORKLOAD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// MAC of the host side (frame destination when the workload sends).
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// One packet to build.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags (TCP only).
    pub flags: u8,
    /// UDP only: send a zero ("no checksum") UDP checksum.
    pub udp_zero_csum: bool,
    pub payload: Vec<u8>,
}

impl Pkt {
    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Self {
        Self {
            src: src.0,
            sport: src.1,
            dst: dst.0,
            dport: dst.1,
            proto: TCP,
            flags,
            udp_zero_csum: false,
            payload: b"kldnet".to_vec(),
        }
    }

    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Self {
        Self {
            proto: UDP,
            flags: 0,
            ..Self::tcp(src, dst, 0)
        }
    }

    pub fn zero_csum(mut self) -> Self {
        self.udp_zero_csum = true;
        self
    }

    /// Ethernet frame WORKLOAD_MAC -> HOST_MAC with valid IP and L4 checksums.
    pub fn build(&self) -> Vec<u8> {
        let l4_len = if self.proto == TCP { 20 } else { 8 } + self.payload.len();
        let mut f = Vec::with_capacity(14 + 20 + l4_len);
        f.extend_from_slice(&HOST_MAC);
        f.extend_from_slice(&WORKLOAD_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + l4_len) as u16;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let c = csum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);

        let mut l4 = Vec::with_capacity(l4_len);
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == TCP {
            l4.extend_from_slice(&1000u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.push(5 << 4);
            l4.push(self.flags);
            l4.extend_from_slice(&65535u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]); // csum, urg
        } else {
            l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(&self.payload);
        let csum_at = if self.proto == TCP { 16 } else { 6 };
        if !(self.proto == UDP && self.udp_zero_csum) {
            let mut c = l4_csum(self.src, self.dst, self.proto, &l4);
            if self.proto == UDP && c == 0 {
                c = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// What a test looks at in an output frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub proto: u8,
    pub ip_csum_ok: bool,
    /// L4 checksum verifies (a zero UDP checksum counts as valid).
    pub l4_csum_ok: bool,
    /// Raw L4 checksum field.
    pub l4_csum: u16,
}

pub fn parse(f: &[u8]) -> Parsed {
    assert!(f.len() >= 14 + 20 + 8, "frame too short: {} bytes", f.len());
    let ip = &f[14..34];
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let l4 = &f[34..14 + total];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let csum_at = if proto == TCP { 16 } else { 6 };
    let l4_csum = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    let l4_csum_ok = if proto == UDP && l4_csum == 0 {
        true
    } else {
        l4_csum_fold(src, dst, proto, l4) == 0
    };
    Parsed {
        dmac: f[0..6].try_into().unwrap(),
        smac: f[6..12].try_into().unwrap(),
        src,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dst,
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        proto,
        ip_csum_ok: csum(ip) == 0,
        l4_csum_ok,
        l4_csum,
    }
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Internet checksum of `data` (0 when `data` already holds a valid checksum).
pub fn csum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    sum16(&p, 0)
}

fn l4_csum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    fold(sum16(l4, pseudo(src, dst, proto, l4.len())))
}

fn l4_csum_fold(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    l4_csum(src, dst, proto, l4)
}

/// The datapath's flow hash for Maglev (kld_jhash_3words in hash.h).
pub fn flow_hash(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> u32 {
    // The C side reads addresses and ports as stored (network order) into
    // host-order integers.
    let s = u32::from_ne_bytes(src.octets());
    let d = u32::from_ne_bytes(dst.octets());
    let sp = u32::from(u16::from_ne_bytes(sport.to_be_bytes()));
    let dp = u32::from(u16::from_ne_bytes(dport.to_be_bytes()));
    jhash_3words(s, d, ((sp << 16) | dp) ^ u32::from(proto), 0)
}

fn jhash_3words(mut a: u32, mut b: u32, mut c: u32, initval: u32) -> u32 {
    let iv = initval.wrapping_add(0xdead_beef).wrapping_add(3 << 2);
    a = a.wrapping_add(iv);
    b = b.wrapping_add(iv);
    c = c.wrapping_add(iv);
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}
