// SPDX-License-Identifier: Apache-2.0
//! Rules → LPM entries of one policy set and direction.
//!
//! The datapath does at most two lookups (the peer's identity, then identity 0 = any
//! peer) and takes the longest matching prefix. So the compiler resolves everything
//! itself: an identity's table already includes the any-peer rules, deny beats allow
//! inside every table, and the port space of each protocol is cut into segments of equal
//! verdict, each written as port prefixes. The longest prefix therefore always carries
//! the final verdict: a more specific allow can never hide a broader deny.

use std::collections::{BTreeMap, BTreeSet};

use kldnet_bpf::abi::*;

/// The peers a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSet {
    /// Every peer (no `from`/`to`, or entity `all`).
    Any,
    Ids(BTreeSet<u32>),
}

/// A rule with its peers and ports resolved to numbers.
#[derive(Clone, Debug)]
pub struct CRule {
    pub action: u8,
    pub rule_id: u32,
    /// Position in the configuration: among rules of the same action the first one is
    /// reported as the deciding rule.
    pub order: u32,
    pub peers: PeerSet,
    /// (protocol, first port, last port); protocol 0 = every protocol (all ports).
    pub ports: Vec<(u8, u16, u16)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    action: u8,
    rule_id: u32,
    order: u32,
}

/// Deny beats allow; among equals the earlier rule decides.
fn combine(a: Option<Verdict>, b: Verdict) -> Verdict {
    match a {
        None => b,
        Some(a) => {
            let rank = |v: &Verdict| (v.action != POLICY_DENY, v.order);
            if rank(&b) < rank(&a) { b } else { a }
        }
    }
}

/// One entry relative to its set: (prefixlen, proto, port in host order) → entry.
pub type RelEntry = (u32, u8, u16, PolicyEntry);

fn entry(v: Verdict) -> PolicyEntry {
    PolicyEntry {
        rule_id: v.rule_id,
        action: v.action,
        ..PolicyEntry::default()
    }
}

/// Splits an inclusive port range into aligned prefixes (value, prefix bits).
pub fn range_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let (mut start, hi) = (u32::from(lo), u32::from(hi));
    let mut out = Vec::new();
    while start <= hi {
        let mut k = if start == 0 {
            16
        } else {
            start.trailing_zeros().min(16)
        };
        while start + (1 << k) - 1 > hi {
            k -= 1;
        }
        out.push((start as u16, 16 - k as u8));
        start += 1 << k;
    }
    out
}

/// The entries of one table: the verdict function of `rules` over (protocol, port).
pub fn table(rules: &[&CRule]) -> Vec<RelEntry> {
    let mut all: Option<Verdict> = None;
    let mut by_proto: BTreeMap<u8, Vec<(u16, u16, Verdict)>> = BTreeMap::new();
    for r in rules {
        let v = Verdict {
            action: r.action,
            rule_id: r.rule_id,
            order: r.order,
        };
        for &(proto, lo, hi) in &r.ports {
            if proto == 0 {
                all = Some(combine(all, v));
            } else {
                by_proto.entry(proto).or_default().push((lo, hi, v));
            }
        }
    }
    let mut out = Vec::new();
    if let Some(v) = all {
        out.push((POLICY_PREFIX_MIN, 0, 0, entry(v)));
    }
    for (proto, ranges) in by_proto {
        // Elementary intervals between every range boundary.
        let mut cuts: BTreeSet<u32> = [0, 65536].into();
        for (lo, hi, _) in &ranges {
            cuts.insert(u32::from(*lo));
            cuts.insert(u32::from(*hi) + 1);
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let mut segs: Vec<(u32, u32, Option<Verdict>)> = Vec::new();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1] - 1);
            let mut v = all;
            for (lo, hi, rv) in &ranges {
                if u32::from(*lo) <= a && b <= u32::from(*hi) {
                    v = Some(combine(v, *rv));
                }
            }
            match segs.last_mut() {
                Some(last) if last.2 == v => last.1 = b,
                _ => segs.push((a, b, v)),
            }
        }
        if segs.len() == 1 {
            if let Some(v) = segs[0].2.filter(|v| Some(*v) != all) {
                out.push((POLICY_PREFIX_PROTO, proto, 0, entry(v)));
            }
            continue;
        }
        for (a, b, v) in segs {
            let Some(v) = v.filter(|v| Some(*v) != all) else {
                continue;
            };
            for (port, bits) in range_prefixes(a as u16, b as u16) {
                out.push((POLICY_PREFIX_PROTO + u32::from(bits), proto, port, entry(v)));
            }
        }
    }
    out
}

/// Every table of one direction: identity (0 = any peer) → entries. Identities whose
/// applicable rules are the same share one computed table.
pub fn direction_tables(rules: &[CRule]) -> BTreeMap<u32, Vec<RelEntry>> {
    let mut out = BTreeMap::new();
    let any: Vec<&CRule> = rules.iter().filter(|r| r.peers == PeerSet::Any).collect();
    if !any.is_empty() {
        out.insert(0, table(&any));
    }
    let mut mentioned: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        match &r.peers {
            PeerSet::Any => {}
            PeerSet::Ids(ids) => {
                for id in ids {
                    mentioned.entry(*id).or_default().push(i);
                }
            }
        }
    }
    let mut memo: BTreeMap<Vec<usize>, Vec<RelEntry>> = BTreeMap::new();
    for (id, specific) in mentioned {
        let mut applicable: Vec<usize> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.peers == PeerSet::Any)
            .map(|(i, _)| i)
            .chain(specific)
            .collect();
        applicable.sort_unstable();
        applicable.dedup();
        let t = memo
            .entry(applicable)
            .or_insert_with_key(|idx| table(&idx.iter().map(|i| &rules[*i]).collect::<Vec<_>>()))
            .clone();
        if !t.is_empty() {
            out.insert(id, t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: u8, id: u32, ports: &[(u8, u16, u16)]) -> CRule {
        CRule {
            action,
            rule_id: id,
            order: id,
            peers: PeerSet::Any,
            ports: ports.to_vec(),
        }
    }

    /// The LPM lookup the datapath does, over relative entries.
    fn lookup(t: &[RelEntry], proto: u8, port: u16) -> Option<(u8, u32)> {
        t.iter()
            .filter(|(len, p, base, _)| {
                if *len == POLICY_PREFIX_MIN {
                    return true;
                }
                if *p != proto {
                    return false;
                }
                let bits = len - POLICY_PREFIX_PROTO;
                bits == 0 || (port >> (16 - bits)) == (base >> (16 - bits))
            })
            .max_by_key(|(len, ..)| *len)
            .map(|(.., e)| (e.action, e.rule_id))
    }

    #[test]
    fn ranges_split_into_aligned_prefixes() {
        assert_eq!(range_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(range_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(
            range_prefixes(9000, 9100),
            vec![
                (9000, 13),
                (9008, 12),
                (9024, 10),
                (9088, 13),
                (9096, 14),
                (9100, 16)
            ]
        );
        let covered: u32 = range_prefixes(30000, 65535)
            .iter()
            .map(|(_, b)| 1u32 << (16 - b))
            .sum();
        assert_eq!(covered, 65535 - 30000 + 1);
    }

    #[test]
    fn a_longer_allow_never_beats_a_deny() {
        // deny tcp 8000-8999, allow tcp 8080 exactly, allow everything.
        let rules = [
            rule(POLICY_ALLOW, 1, &[(6, 8080, 8080)]),
            rule(POLICY_DENY, 2, &[(6, 8000, 8999)]),
            rule(POLICY_ALLOW, 3, &[(0, 0, 65535)]),
        ];
        let t = table(&rules.iter().collect::<Vec<_>>());
        assert_eq!(lookup(&t, 6, 8080), Some((POLICY_DENY, 2)));
        assert_eq!(lookup(&t, 6, 8999), Some((POLICY_DENY, 2)));
        assert_eq!(lookup(&t, 6, 9000), Some((POLICY_ALLOW, 3)));
        assert_eq!(lookup(&t, 17, 8080), Some((POLICY_ALLOW, 3)));
    }

    #[test]
    fn no_rule_no_entry() {
        let rules = [rule(POLICY_ALLOW, 1, &[(17, 53, 53)])];
        let t = table(&rules.iter().collect::<Vec<_>>());
        assert_eq!(lookup(&t, 17, 53), Some((POLICY_ALLOW, 1)));
        assert_eq!(lookup(&t, 17, 54), None);
        assert_eq!(lookup(&t, 6, 53), None);
        assert_eq!(t.len(), 1);
    }
}
