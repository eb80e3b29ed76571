// SPDX-License-Identifier: Apache-2.0
//! Stable numbers across reloads: backend ids and reverse-NAT indexes.
//!
//! A number stays with its object while the object exists; new objects get the lowest
//! free number. After a daemon restart the allocations are rebuilt from the pinned maps
//! ([`Allocations::from_state`]), so ids survive restarts too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::DesiredState;

/// A backend as the datapath identifies it: address, port, protocol.
pub type BackendAddr = (Ipv4Addr, u16, u8);
/// A service frontend: VIP, port, protocol.
pub type Frontend = (Ipv4Addr, u16, u8);

#[derive(Clone, Debug, Default)]
pub struct Allocations {
    pub backend_ids: BTreeMap<BackendAddr, u32>,
    pub rev_nat: BTreeMap<Frontend, u16>,
    used_backend_ids: BTreeSet<u32>,
    used_rev_nat: BTreeSet<u16>,
    /// Lowest possibly-free numbers: allocation is O(1) amortised within one compile.
    next_backend_id: u32,
    next_rev_nat: u16,
}

impl Allocations {
    pub fn backend_id(&mut self, b: BackendAddr) -> u32 {
        if let Some(id) = self.backend_ids.get(&b) {
            return *id;
        }
        self.next_backend_id = self.next_backend_id.max(1);
        while self.used_backend_ids.contains(&self.next_backend_id) {
            self.next_backend_id += 1;
        }
        let id = self.next_backend_id;
        self.used_backend_ids.insert(id);
        self.backend_ids.insert(b, id);
        id
    }

    pub fn rev_nat_index(&mut self, f: Frontend) -> u16 {
        if let Some(i) = self.rev_nat.get(&f) {
            return *i;
        }
        self.next_rev_nat = self.next_rev_nat.max(1);
        while self.used_rev_nat.contains(&self.next_rev_nat) {
            self.next_rev_nat += 1;
        }
        let i = self.next_rev_nat;
        self.used_rev_nat.insert(i);
        self.rev_nat.insert(f, i);
        i
    }

    /// Forgets numbers whose objects are gone, so the next compile can reuse them.
    pub fn retain_used(&mut self, state: &DesiredState) {
        self.backend_ids
            .retain(|_, id| state.lb4_backends.contains_key(id));
        self.rev_nat
            .retain(|_, i| state.lb4_rev_nat.contains_key(i));
        self.reindex();
    }

    fn reindex(&mut self) {
        self.used_backend_ids = self.backend_ids.values().copied().collect();
        self.used_rev_nat = self.rev_nat.values().copied().collect();
        self.next_backend_id = 1;
        self.next_rev_nat = 1;
    }

    /// Recovers allocations from what is in the maps (after a restart).
    pub fn from_state(state: &DesiredState) -> Allocations {
        let mut a = Allocations {
            backend_ids: state
                .lb4_backends
                .iter()
                .map(|(id, b)| {
                    (
                        (
                            Ipv4Addr::from(b.address.to_ne_bytes()),
                            u16::from_be(b.port),
                            b.proto,
                        ),
                        *id,
                    )
                })
                .collect(),
            rev_nat: state
                .lb4_services
                .iter()
                .filter(|(k, v)| k.backend_slot == 0 && v.rev_nat_index != 0)
                .map(|(k, v)| {
                    (
                        (
                            Ipv4Addr::from(k.address.to_ne_bytes()),
                            u16::from_be(k.dport),
                            k.proto,
                        ),
                        v.rev_nat_index,
                    )
                })
                .collect(),
            ..Allocations::default()
        };
        a.reindex();
        a
    }
}
