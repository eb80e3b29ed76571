// SPDX-License-Identifier: Apache-2.0
//! Current state vs desired state: the smallest set of map writes between them.

use std::collections::BTreeMap;

use super::{Attachment, DesiredState};

/// Writes and deletes for one map, with the old values they replace (for undo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDelta<K, V> {
    pub upserts: Vec<(K, V)>,
    pub deletes: Vec<K>,
    /// Previous values of the keys that are overwritten or deleted.
    pub old: Vec<(K, V)>,
}

impl<K, V> Default for MapDelta<K, V> {
    fn default() -> Self {
        MapDelta {
            upserts: Vec::new(),
            deletes: Vec::new(),
            old: Vec::new(),
        }
    }
}

impl<K: Ord + Clone, V: PartialEq + Clone> MapDelta<K, V> {
    /// The writes that bring `now` (a partial application of this delta) back to the
    /// state before it. O(size of the delta).
    pub fn undo(&self, now: &BTreeMap<K, V>) -> MapDelta<K, V> {
        let old: BTreeMap<&K, &V> = self.old.iter().map(|(k, v)| (k, v)).collect();
        let mut undo = MapDelta::default();
        let touched = self.upserts.iter().map(|(k, _)| k).chain(&self.deletes);
        for k in touched {
            match (old.get(k), now.get(k)) {
                (Some(o), Some(n)) if *o != n => undo.upserts.push((k.clone(), (*o).clone())),
                (Some(o), None) => undo.upserts.push((k.clone(), (*o).clone())),
                (None, Some(_)) => undo.deletes.push(k.clone()),
                _ => {}
            }
        }
        undo
    }
}

impl<K, V> MapDelta<K, V> {
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Merge-walks two sorted maps: O(n), no allocation beyond the delta.
pub fn diff_map<K: Ord + Clone, V: PartialEq + Clone>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> MapDelta<K, V> {
    let mut delta = MapDelta::default();
    let mut cur = current.iter().peekable();
    let mut want = desired.iter().peekable();
    loop {
        match (cur.peek(), want.peek()) {
            (None, None) => break,
            (Some((k, v)), None) => {
                delta.deletes.push((*k).clone());
                delta.old.push(((*k).clone(), (*v).clone()));
                cur.next();
            }
            (None, Some((k, v))) => {
                delta.upserts.push(((*k).clone(), (*v).clone()));
                want.next();
            }
            (Some((ck, cv)), Some((wk, wv))) => match ck.cmp(wk) {
                std::cmp::Ordering::Less => {
                    delta.deletes.push((*ck).clone());
                    delta.old.push(((*ck).clone(), (*cv).clone()));
                    cur.next();
                }
                std::cmp::Ordering::Greater => {
                    delta.upserts.push(((*wk).clone(), (*wv).clone()));
                    want.next();
                }
                std::cmp::Ordering::Equal => {
                    if cv != wv {
                        delta.upserts.push(((*wk).clone(), (*wv).clone()));
                        delta.old.push(((*ck).clone(), (*cv).clone()));
                    }
                    cur.next();
                    want.next();
                }
            },
        }
    }
    delta
}

/// The delta of every map plus attachment changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDelta {
    pub lb4_services: MapDelta<kldnet_bpf::abi::Lb4Key, kldnet_bpf::abi::Lb4Service>,
    pub lb4_backends: MapDelta<u32, kldnet_bpf::abi::Lb4Backend>,
    pub lb4_rev_nat: MapDelta<u16, kldnet_bpf::abi::Lb4ReverseNat>,
    pub ipcache: MapDelta<kldnet_bpf::abi::IpcacheKey, kldnet_bpf::abi::IpcacheValue>,
    pub endpoints: MapDelta<kldnet_bpf::abi::EndpointKey, kldnet_bpf::abi::EndpointInfo>,
    pub policy: MapDelta<kldnet_bpf::abi::PolicyKey, kldnet_bpf::abi::PolicyEntry>,
    pub maglev: MapDelta<u16, Vec<u32>>,
    pub attach: Vec<Attachment>,
    pub detach: Vec<Attachment>,
}

impl StateDelta {
    pub fn entries(&self) -> usize {
        self.lb4_services.len()
            + self.lb4_backends.len()
            + self.lb4_rev_nat.len()
            + self.ipcache.len()
            + self.endpoints.len()
            + self.policy.len()
            + self.maglev.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries() == 0 && self.attach.is_empty() && self.detach.is_empty()
    }

    /// One line for logs and `kldnet reload`: "no changes" or what changed.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no changes".to_string();
        }
        let upserts = self.lb4_services.upserts.len()
            + self.lb4_backends.upserts.len()
            + self.lb4_rev_nat.upserts.len()
            + self.ipcache.upserts.len()
            + self.endpoints.upserts.len()
            + self.policy.upserts.len()
            + self.maglev.upserts.len();
        let deletes = self.entries() - upserts;
        let mut s = format!("{upserts} map entries written, {deletes} deleted");
        if !self.attach.is_empty() || !self.detach.is_empty() {
            s.push_str(&format!(
                ", {} interfaces attached, {} detached",
                self.attach.len(),
                self.detach.len()
            ));
        }
        s
    }
}

impl StateDelta {
    /// The delta that undoes the part of `self` that reached `now`.
    pub fn undo(&self, now: &DesiredState) -> StateDelta {
        StateDelta {
            lb4_services: self.lb4_services.undo(&now.lb4_services),
            lb4_backends: self.lb4_backends.undo(&now.lb4_backends),
            lb4_rev_nat: self.lb4_rev_nat.undo(&now.lb4_rev_nat),
            ipcache: self.ipcache.undo(&now.ipcache),
            endpoints: self.endpoints.undo(&now.endpoints),
            policy: self.policy.undo(&now.policy),
            maglev: self.maglev.undo(&now.maglev),
            attach: self
                .detach
                .iter()
                .filter(|a| !now.attachments.contains(*a))
                .cloned()
                .collect(),
            detach: self
                .attach
                .iter()
                .filter(|a| now.attachments.contains(*a))
                .cloned()
                .collect(),
        }
    }
}

pub fn diff(current: &DesiredState, desired: &DesiredState) -> StateDelta {
    StateDelta {
        lb4_services: diff_map(&current.lb4_services, &desired.lb4_services),
        lb4_backends: diff_map(&current.lb4_backends, &desired.lb4_backends),
        lb4_rev_nat: diff_map(&current.lb4_rev_nat, &desired.lb4_rev_nat),
        ipcache: diff_map(&current.ipcache, &desired.ipcache),
        endpoints: diff_map(&current.endpoints, &desired.endpoints),
        policy: diff_map(&current.policy, &desired.policy),
        maglev: diff_map(&current.maglev, &desired.maglev),
        attach: desired
            .attachments
            .difference(&current.attachments)
            .cloned()
            .collect(),
        detach: current
            .attachments
            .difference(&desired.attachments)
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_walk_finds_adds_changes_and_removals() {
        let cur: BTreeMap<u32, u32> = [(1, 10), (2, 20), (4, 40)].into();
        let want: BTreeMap<u32, u32> = [(2, 21), (3, 30), (4, 40)].into();
        let d = diff_map(&cur, &want);
        assert_eq!(d.upserts, vec![(2, 21), (3, 30)]);
        assert_eq!(d.deletes, vec![1]);
        assert!(diff_map(&want, &want).is_empty());
    }
}
