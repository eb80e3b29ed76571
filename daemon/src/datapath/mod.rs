// SPDX-License-Identifier: Apache-2.0
//! The datapath: the only layer that touches the kernel.
//!
//! [`MapIo`] is the seam: byte-level map reads and writes, implemented by the kernel
//! ([`kernel::KernelDatapath`], raw bpf(2) on pinned maps) and by an in-memory fake
//! ([`fake::FakeMaps`]) for tests. [`apply`] writes a delta in an order that never lets
//! the BPF side see a service pointing at a missing backend, and rolls back on failure.

pub mod apply;
pub mod bytes;
pub mod fake;
pub mod features;
pub mod kernel;
pub mod sys;

use std::io;

use crate::compile::{Attachment, DesiredState};

/// Byte-level access to the maps, by map name.
pub trait MapIo {
    fn update(&mut self, map: &str, key: &[u8], value: &[u8]) -> io::Result<()>;
    fn delete(&mut self, map: &str, key: &[u8]) -> io::Result<()>;
    /// Writes `count` entries (keys and values laid end to end). Returns how many were
    /// written, and the error that stopped the rest.
    fn update_batch(
        &mut self,
        map: &str,
        keys: &[u8],
        values: &[u8],
        count: usize,
    ) -> (usize, io::Result<()>) {
        let (ks, vs) = (keys.len() / count.max(1), values.len() / count.max(1));
        for i in 0..count {
            if let Err(e) = self.update(
                map,
                &keys[i * ks..(i + 1) * ks],
                &values[i * vs..(i + 1) * vs],
            ) {
                return (i, Err(e));
            }
        }
        (count, Ok(()))
    }
    /// Every (key, value) of a map.
    fn dump(&self, map: &str) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Attaches the programs at an attachment point (idempotent).
    fn attach(&mut self, at: &Attachment) -> io::Result<()>;
    fn detach(&mut self, at: &Attachment) -> io::Result<()>;
    /// Attachment points currently attached (adopted from pins after a restart).
    fn attachments(&self) -> io::Result<Vec<Attachment>>;
    /// Installs (or atomically replaces) the Maglev table of a frontend.
    fn set_maglev(&mut self, rev_nat_index: u16, table: &[u32]) -> io::Result<()>;
    fn delete_maglev(&mut self, rev_nat_index: u16) -> io::Result<()>;
    /// Every installed Maglev table (after a restart: what the previous daemon left).
    fn maglev_tables(&self) -> io::Result<std::collections::BTreeMap<u16, Vec<u32>>>;
    /// (map, entries, capacity) of every map, for status.
    fn occupancy(&self) -> Vec<(String, u64, u64)> {
        Vec::new()
    }
    /// Names of the pinned program links, for status.
    fn pinned_links(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Reads the full state of the maps kldnet owns through `io`.
pub fn read_state(io: &dyn MapIo) -> io::Result<DesiredState> {
    use kldnet_bpf::abi::*;
    Ok(DesiredState {
        lb4_services: bytes::decode_map(io.dump(MAP_LB4_SVC)?),
        lb4_backends: bytes::decode_map(io.dump(MAP_LB4_BE)?),
        lb4_rev_nat: bytes::decode_map(io.dump(MAP_LB4_RNAT)?),
        ipcache: bytes::decode_map(io.dump(MAP_IPCACHE)?),
        endpoints: bytes::decode_map(io.dump(MAP_ENDPOINTS)?),
        policy: bytes::decode_map(io.dump(MAP_POLICY)?),
        maglev: io.maglev_tables()?,
        attachments: io.attachments()?.into_iter().collect(),
    })
}
