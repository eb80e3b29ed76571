// SPDX-License-Identifier: Apache-2.0
//! Maglev lookup tables, slot for slot identical to Cilium's (`pkg/maglev`, weighted
//! `GetLookupTable`) for the same backends, table size and seed.
//!
//! Owns: MurmurHash3_x64_128, the seed derivation, Cilium's per-backend hash string, the
//! permutation and the weighted fill. Pure: no maps, no I/O; the services compiler puts the
//! result into the per-service inner map.
//!
//! Being exact matters: a node running kldnet next to nodes running Cilium (or a kldnet
//! restart) must send a flow to the same backend, so the table may only depend on the
//! backend set, `M` and the seed — never on input order. Checked against Cilium's own test
//! tables in `daemon/tests/maglev_vectors.rs`.

use std::fmt::Write as _;
use std::net::IpAddr;

use kldnet_config::types::Protocol;

/// Cilium's default table size (`--bpf-lb-maglev-table-size`); prime.
pub const DEFAULT_TABLE_SIZE: u32 = 16381;

/// Cilium's default hash seed (`--bpf-lb-maglev-hash-seed`): base64 of 12 bytes, of which
/// the first 4 (big-endian) seed MurmurHash3.
pub const CILIUM_DEFAULT_SEED: &str = "JLfvgnHc2kaSUFaI";

/// One backend as Maglev sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// The value stored in the table's slots (the backend id of `kld_lb4_be`).
    pub id: u32,
    pub addr: IpAddr,
    /// Backend port, host byte order.
    pub port: u16,
    pub proto: Protocol,
    /// Relative weight; 0 = takes no slots (Cilium: maintenance).
    pub weight: u16,
}

impl MaglevBackend {
    /// Cilium's hash string for this backend (external scope, state active).
    pub fn hash_string(&self) -> String {
        backend_hash_string(self.addr, self.port, self.proto, false)
    }
}

/// Why a seed string is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("maglev seed {0:?} is not valid base64")]
    NotBase64(String),
    #[error("maglev seed {0:?} decodes to {1} bytes; it needs at least 4 (Cilium uses 12)")]
    TooShort(String, usize),
}

/// `true` if `m` can size a Maglev table: a prime (every skip in `1..m` is then coprime
/// with `m`, so each backend's permutation visits every slot). Cilium only offers the
/// primes 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521 and 131071.
pub fn is_valid_table_size(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    if m < 4 {
        return true;
    }
    if m.is_multiple_of(2) || m.is_multiple_of(3) {
        return false;
    }
    let m = u64::from(m);
    let mut d = 5u64;
    while d * d <= m {
        if m.is_multiple_of(d) || m.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// Derives the MurmurHash3 seed from Cilium's base64 seed string: the first four decoded
/// bytes as a big-endian `u32` (Cilium `maglev.SeedMurmur`).
pub fn parse_seed(seed: &str) -> Result<u32, SeedError> {
    let bytes = decode_base64(seed).ok_or_else(|| SeedError::NotBase64(seed.to_string()))?;
    match bytes.get(..4) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(SeedError::TooShort(seed.to_string(), bytes.len())),
    }
}

/// Standard base64 (RFC 4648 §4, `=` padding optional).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Cilium's hash string for a backend: `[10.0.0.1:80/TCP,State:active]`, `[[2001:db8::1]:80/UDP,State:active]`,
/// with `/i` after the protocol when the address has Cilium's internal scope
/// (`L3n4Addr.Scope == ScopeInternal`). The state is always `active`, as in Cilium's tables.
pub fn backend_hash_string(addr: IpAddr, port: u16, proto: Protocol, internal: bool) -> String {
    let proto = match proto {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        Protocol::Icmp => "ICMP",
        Protocol::Any => "ANY",
    };
    let mut s = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = match addr {
        IpAddr::V4(a) => write!(s, "[{a}:{port}/{proto}"),
        IpAddr::V6(a) => write!(s, "[[{a}]:{port}/{proto}"),
    };
    if internal {
        s.push_str("/i");
    }
    s.push_str(",State:active]");
    s
}

/// MurmurHash3_x64_128 (Austin Appleby's reference `MurmurHash3_x64_128`), returning the two
/// 64-bit halves `(h1, h2)` as Cilium's `murmur3.Hash128` does.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn mix_k1(k1: u64) -> u64 {
        k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
    }
    fn mix_k2(k2: u64) -> u64 {
        k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
    }
    fn fmix64(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    fn le64(bytes: &[u8]) -> u64 {
        // Little-endian, zero-padded: the reference's tail switch does the same.
        let mut b = [0u8; 8];
        b[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(b)
    }

    let (mut h1, mut h2) = (u64::from(seed), u64::from(seed));
    let blocks = data.chunks_exact(16);
    let tail = blocks.remainder();
    for block in blocks {
        let (k1, k2) = block.split_at(8);
        h1 ^= mix_k1(le64(k1));
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(le64(k2));
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    if tail.len() > 8 {
        h2 ^= mix_k2(le64(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(le64(&tail[..tail.len().min(8)]));
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// A backend's place in the permutation: `perm[j] = (offset + j * skip) % m`.
fn offset_and_skip(hash_string: &str, m: u64, seed: u32) -> (u64, u64) {
    let (h1, h2) = murmur3_x64_128(hash_string.as_bytes(), seed);
    (h1 % m, h2 % (m - 1) + 1)
}

/// The backend's full preference list over the `m` slots, computed as Cilium's
/// `getPermutation` does (iteratively). [`lookup_table`] computes the same entries on demand.
///
/// # Panics
/// If `m` is not a valid table size ([`is_valid_table_size`]).
pub fn permutation(backend: &MaglevBackend, m: u32, seed: u32) -> Vec<u32> {
    assert!(is_valid_table_size(m), "maglev table size {m} is not prime");
    let m = u64::from(m);
    let (offset, skip) = offset_and_skip(&backend.hash_string(), m, seed);
    let mut perm = Vec::with_capacity(m as usize);
    let mut c = offset;
    for _ in 0..m {
        perm.push(c as u32);
        c = (c + skip) % m;
    }
    perm
}

/// Builds the Maglev lookup table: `m` slots, each holding a backend id.
///
/// Backends with weight 0 are left out (Cilium: maintenance); with none left, or no
/// backends at all, the table is empty. The result does not depend on the order of
/// `backends`: they are sorted by their Cilium hash string first, as Cilium does.
///
/// # Panics
/// If `m` is not prime or `seed` is not a base64 string of at least 4 bytes; validate
/// configuration input with [`is_valid_table_size`] and [`parse_seed`] first.
pub fn lookup_table(backends: &[MaglevBackend], m: u32, seed: &str) -> Vec<u32> {
    let seed = parse_seed(seed).unwrap_or_else(|e| panic!("{e}"));
    lookup_table_seeded(backends, m, seed)
}

/// [`lookup_table`] with the already derived MurmurHash3 seed (see [`parse_seed`]).
///
/// # Panics
/// If `m` is not prime.
pub fn lookup_table_seeded(backends: &[MaglevBackend], m: u32, seed: u32) -> Vec<u32> {
    assert!(is_valid_table_size(m), "maglev table size {m} is not prime");
    let mut sorted: Vec<(String, &MaglevBackend)> = backends
        .iter()
        .filter(|b| b.weight > 0)
        .map(|b| (b.hash_string(), b))
        .collect();
    if sorted.is_empty() {
        return Vec::new();
    }
    // Cilium sorts by hash string alone; ties (the same backend listed twice) are broken by
    // id and weight so the result still does not depend on input order.
    sorted.sort_by(|(ha, a), (hb, b)| {
        ha.cmp(hb)
            .then(a.id.cmp(&b.id))
            .then(a.weight.cmp(&b.weight))
    });

    let m64 = u64::from(m);
    let l = sorted.len();
    let params: Vec<(u64, u64)> = sorted
        .iter()
        .map(|(h, _)| offset_and_skip(h, m64, seed))
        .collect();

    // Weighted fill, transcribed from Cilium's GetLookupTable including its float counters:
    // the truncation of `weight_cntr` decides ties, so integer arithmetic would differ.
    let weight_sum: u64 = sorted.iter().map(|(_, b)| u64::from(b.weight)).sum();
    let mut weight_cntr: Vec<f64> = sorted
        .iter()
        .map(|(_, b)| f64::from(b.weight) / l as f64)
        .collect();
    let weights_used = weight_sum / l as u64 > 1;

    let mut entry = vec![0u32; m as usize];
    let mut taken = vec![false; m as usize];
    let mut next = vec![0u64; l];
    for n in 0..m64 {
        let mut i = (n % l as u64) as usize;
        if weights_used {
            // Terminates: summed over all backends, the skip condition would need
            // (n+1)·W < W/l + n·W.
            while (n + 1) * u64::from(sorted[i].1.weight) < weight_cntr[i] as u64 {
                i = (i + 1) % l;
            }
            weight_cntr[i] += weight_sum as f64;
        }
        let (offset, skip) = params[i];
        // next[i] < m: the permutation visits every slot and one is still free.
        let mut c = ((offset + next[i] * skip) % m64) as usize;
        while taken[c] {
            next[i] += 1;
            c = ((offset + next[i] * skip) % m64) as usize;
        }
        taken[c] = true;
        entry[c] = sorted[i].1.id;
        next[i] += 1;
    }
    debug_assert!(taken.iter().all(|&t| t));
    entry
}
