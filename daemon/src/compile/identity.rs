// SPDX-License-Identifier: Apache-2.0
//! Security identities: a number per (namespace, label set), the same on every node that
//! reads the same files, with no coordination between nodes.
//!
//! Pinned identities (`[[identity]]`) first; every other label set in the config gets
//! `256 + fnv1a(namespace, labels) % 65280`, probing upwards on collision in the sorted
//! order of the label sets, so the result depends only on the set of label sets.

use std::collections::{BTreeMap, BTreeSet};

use kldnet_config::Spec;
use kldnet_config::types::Labels;
use serde::{Deserialize, Serialize};

/// Reserved identities (Cilium's numbering).
pub const HOST: u32 = 1;
pub const WORLD: u32 = 2;
pub const UNMANAGED: u32 = 3;
pub const HEALTH: u32 = 4;
pub const REMOTE_NODE: u32 = 6;

const FIRST: u32 = 256;
const LAST: u32 = 65535;

/// Where an identity's number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    Reserved,
    Pinned,
    Derived,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: u32,
    pub namespace: String,
    pub labels: Labels,
    pub source: IdentitySource,
}

/// Every identity of a configuration.
#[derive(Clone, Debug, Default)]
pub struct IdentityTable {
    by_labels: BTreeMap<(String, Labels), u32>,
    pub identities: Vec<Identity>,
}

impl IdentityTable {
    /// The identity of an endpoint's (namespace, labels); every endpoint's set is in the table.
    pub fn of(&self, namespace: &str, labels: &Labels) -> Option<u32> {
        self.by_labels
            .get(&(namespace.to_string(), labels.clone()))
            .copied()
    }

    pub fn build(spec: &Spec) -> IdentityTable {
        let mut table = IdentityTable::default();
        for (id, name) in [
            (HOST, "host"),
            (WORLD, "world"),
            (UNMANAGED, "unmanaged"),
            (HEALTH, "health"),
            (REMOTE_NODE, "remote-node"),
        ] {
            let labels = Labels([("reserved".to_string(), name.to_string())].into());
            table.identities.push(Identity {
                id,
                namespace: String::new(),
                labels,
                source: IdentitySource::Reserved,
            });
        }
        let mut taken = BTreeSet::new();
        for pin in &spec.identities {
            let key = (pin.namespace.clone(), pin.labels.clone());
            if taken.insert(pin.id) && !table.by_labels.contains_key(&key) {
                table.by_labels.insert(key, pin.id);
                table.identities.push(Identity {
                    id: pin.id,
                    namespace: pin.namespace.clone(),
                    labels: pin.labels.clone(),
                    source: IdentitySource::Pinned,
                });
            }
        }
        let wanted: BTreeSet<(String, Labels)> = spec
            .endpoints
            .iter()
            .map(|e| (e.namespace.clone(), e.labels.clone()))
            .filter(|k| !table.by_labels.contains_key(k))
            .collect();
        let span = LAST - FIRST + 1;
        for (namespace, labels) in wanted {
            let mut id = FIRST + (hash_label_set(&namespace, &labels) % u64::from(span)) as u32;
            // The range holds 65280 ids; a config with more label sets fails capacity
            // validation before it gets here.
            while taken.contains(&id) {
                id = if id == LAST { FIRST } else { id + 1 };
            }
            taken.insert(id);
            table
                .by_labels
                .insert((namespace.clone(), labels.clone()), id);
            table.identities.push(Identity {
                id,
                namespace,
                labels,
                source: IdentitySource::Derived,
            });
        }
        table.identities.sort_by_key(|i| i.id);
        table
    }
}

/// FNV-1a over `namespace \0 k=v \0 …` in key order: stable across Rust versions and
/// machines, unlike `DefaultHasher`.
pub fn hash_label_set(namespace: &str, labels: &Labels) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(namespace.as_bytes());
    for (k, v) in labels.iter() {
        feed(b"\0");
        feed(k.as_bytes());
        feed(b"=");
        feed(v.as_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> Labels {
        Labels(
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect(),
        )
    }

    #[test]
    fn the_hash_is_pinned_forever() {
        // Nodes of different versions must agree: this value may never change. (Checked
        // against an independent FNV-1a in Python.)
        assert_eq!(
            hash_label_set("production", &labels("app=backend")),
            0x7b40_aa41_eafa_efc0
        );
    }

    #[test]
    fn label_order_does_not_matter_and_namespace_does() {
        assert_eq!(
            hash_label_set("a", &labels("x=1,y=2")),
            hash_label_set("a", &labels("y=2,x=1"))
        );
        assert_ne!(
            hash_label_set("a", &labels("x=1")),
            hash_label_set("b", &labels("x=1"))
        );
    }
}
