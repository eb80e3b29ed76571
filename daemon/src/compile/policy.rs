// SPDX-License-Identifier: Apache-2.0
//! Network policy: `[[policy]]` → `kld_policy` entries, each local endpoint's policy set
//! and enforcement flags, and ipcache entries for the CIDRs policies name.
//!
//! Semantics (CONTRACT §2): an endpoint selected by no policy allows everything; once a
//! policy with rules (allow or deny) or `policy_types` for a direction selects it, that
//! direction is default-deny plus the union of the allows; deny rules beat allows.
//! `policy_enforcement = "always"` makes every endpoint default-deny both ways, `"never"`
//! turns enforcement off.
//!
//! Sharing: endpoints whose selecting policies, enforcement and (for ingress named
//! ports) own ports are equal compile once; a set's id is derived from its compiled
//! content, so equal content is stored once and a changed set gets a new id (which
//! makes the datapath re-check established flows, see bpf/include/kldnet/policy.h).

mod peers;
pub mod resolve;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kldnet_bpf::abi::*;
use kldnet_config::schema::{Direction, Peer, PolicyEnforcement, PortRule};
use kldnet_config::types::{Cidr, Protocol};
use kldnet_config::{Diagnostic, Spec};
use serde::{Deserialize, Serialize};

use super::{Compiled, addr16};
pub use peers::Universe;
use resolve::{CRule, PeerSet, RelEntry};

/// Which list of a policy a rule is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Ingress,
    Egress,
    IngressDeny,
    EgressDeny,
}

impl RuleKind {
    pub const ALL: [RuleKind; 4] = [
        RuleKind::Ingress,
        RuleKind::Egress,
        RuleKind::IngressDeny,
        RuleKind::EgressDeny,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Ingress => "ingress",
            RuleKind::Egress => "egress",
            RuleKind::IngressDeny => "ingress_deny",
            RuleKind::EgressDeny => "egress_deny",
        }
    }

    pub fn direction(self) -> u8 {
        match self {
            RuleKind::Ingress | RuleKind::IngressDeny => DIR_INGRESS,
            RuleKind::Egress | RuleKind::EgressDeny => DIR_EGRESS,
        }
    }

    pub fn action(self) -> u8 {
        match self {
            RuleKind::Ingress | RuleKind::Egress => POLICY_ALLOW,
            RuleKind::IngressDeny | RuleKind::EgressDeny => POLICY_DENY,
        }
    }
}

/// Where a rule id comes from: `production/backend-ingress ingress[0]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRef {
    pub namespace: String,
    pub name: String,
    pub kind: RuleKind,
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}[{}]",
            self.namespace,
            self.name,
            self.kind.name(),
            self.index
        )
    }
}

/// A compiled policy set, for `kldnet bpf policy get` and status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySetView {
    pub id: u32,
    /// `namespace/name` of every policy selecting the set's endpoints.
    pub policies: Vec<String>,
    /// `namespace/name` of the endpoints using the set.
    pub endpoints: Vec<String>,
    pub ingress: bool,
    pub egress: bool,
    pub entries: usize,
}

/// What the policy compile knows beyond the maps: names for rule ids, sets, identities.
#[derive(Clone, Debug, Default)]
pub struct PolicyInfo {
    pub rules: BTreeMap<u32, RuleRef>,
    pub sets: BTreeMap<u32, PolicySetView>,
    /// `namespace/name` of a local endpoint → its policy set (0 = not enforced).
    pub endpoint_sets: BTreeMap<String, u32>,
    pub universe: Universe,
}

impl PolicyInfo {
    pub fn rule(&self, id: u32) -> Option<&RuleRef> {
        self.rules.get(&id)
    }
}

/// Fills the policy columns of the endpoint views from the compiled policy sets.
pub(super) fn annotate_endpoints(out: &mut Compiled) {
    for view in &mut out.endpoints {
        let name = format!("{}/{}", view.namespace, view.name);
        let Some(set) = out
            .policy
            .endpoint_sets
            .get(&name)
            .and_then(|id| out.policy.sets.get(id))
        else {
            continue;
        };
        view.ingress_enforced = set.ingress;
        view.egress_enforced = set.egress;
        view.policies = set.policies.clone();
    }
}

fn fnv(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Directions a policy applies to: `policy_types`, else each direction with rules.
fn policy_directions(p: &kldnet_config::schema::Policy) -> (bool, bool) {
    match &p.policy_types {
        Some(t) => (
            t.contains(&Direction::Ingress),
            t.contains(&Direction::Egress),
        ),
        None => (
            !p.ingress.is_empty() || !p.ingress_deny.is_empty(),
            !p.egress.is_empty() || !p.egress_deny.is_empty(),
        ),
    }
}

/// One rule of a policy, whatever its list: (kind, index, peers, ports).
type RuleParts<'a> = (RuleKind, usize, Option<&'a Vec<Peer>>, &'a Vec<PortRule>);

/// The rule lists of a policy, uniformly.
fn rules_of(p: &kldnet_config::schema::Policy) -> Vec<RuleParts<'_>> {
    let mut out = Vec::new();
    for (i, r) in p.ingress.iter().enumerate() {
        out.push((RuleKind::Ingress, i, r.from.as_ref(), &r.ports));
    }
    for (i, r) in p.egress.iter().enumerate() {
        out.push((RuleKind::Egress, i, r.to.as_ref(), &r.ports));
    }
    for (i, r) in p.ingress_deny.iter().enumerate() {
        out.push((RuleKind::IngressDeny, i, r.from.as_ref(), &r.ports));
    }
    for (i, r) in p.egress_deny.iter().enumerate() {
        out.push((RuleKind::EgressDeny, i, r.to.as_ref(), &r.ports));
    }
    out
}

/// Stable rule ids: a hash of (namespace, name, kind, index), probing on collision in
/// the sorted order of the rules.
fn rule_ids(spec: &Spec) -> BTreeMap<RuleRef, u32> {
    let mut refs: Vec<RuleRef> = Vec::new();
    for p in &spec.policies {
        for (kind, index, ..) in rules_of(p) {
            refs.push(RuleRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                kind,
                index,
            });
        }
    }
    refs.sort();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for r in refs {
        let text = format!(
            "{}\0{}\0{}\0{}",
            r.namespace,
            r.name,
            r.kind.name(),
            r.index
        );
        let mut id = 1 + (fnv(text.bytes(), FNV_OFFSET) % 0x7fff_fffe) as u32;
        while !taken.insert(id) {
            id = if id == 0x7fff_ffff { 1 } else { id + 1 };
        }
        out.insert(r, id);
    }
    out
}

/// One port rule → (protocol, first, last) ranges; named ports through `named`.
fn port_ranges(
    ports: &[PortRule],
    mut named: impl FnMut(&str, Protocol) -> Vec<(u8, u16)>,
) -> Vec<(u8, u16, u16)> {
    if ports.is_empty() {
        return vec![(0, 0, 65535)];
    }
    let mut out = Vec::new();
    for p in ports {
        let proto = p.protocol.number();
        match (&p.name, p.port) {
            (Some(name), _) => out.extend(
                named(name, p.protocol)
                    .into_iter()
                    .map(|(pr, port)| (pr, port, port)),
            ),
            (None, Some(port)) => out.push((proto, port, p.end_port.unwrap_or(port).max(port))),
            (None, None) => out.push((proto, 0, 65535)),
        }
    }
    out
}

/// What makes two endpoints' compiled policy equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    policies: Vec<usize>,
    ingress: bool,
    egress: bool,
    /// The endpoint's own ports, by name, for ingress named ports.
    own_ports: BTreeSet<(String, u8, u16)>,
}

/// Compiles every policy into `out.state.policy`, sets the endpoints' policy sets and
/// flags, and adds the policies' CIDRs to the ipcache. Runs after the network compile.
pub(super) fn compile_policies(spec: &Spec, out: &mut Compiled) {
    let universe = Universe::build(spec, &out.identities);
    let ids = rule_ids(spec);
    let mode = spec.node().policy_enforcement;
    add_cidrs_to_ipcache(&universe, out);

    // Local endpoints → group keys.
    let named_in_ingress: BTreeSet<&str> = spec
        .policies
        .iter()
        .flat_map(|p| rules_of(p).into_iter())
        .filter(|(k, ..)| k.direction() == DIR_INGRESS)
        .flat_map(|(.., ports)| ports.iter().filter_map(|p| p.name.as_deref()))
        .collect();
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    let local: BTreeSet<(String, String)> = out
        .endpoints
        .iter()
        .filter(|e| e.local)
        .map(|e| (e.namespace.clone(), e.name.clone()))
        .collect();
    for (ei, ep) in spec.endpoints.iter().enumerate() {
        if !local.contains(&(ep.namespace.clone(), ep.name.clone())) {
            continue;
        }
        let selecting: Vec<usize> = spec
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.namespace == ep.namespace && p.selector.matches(&ep.labels))
            .map(|(i, _)| i)
            .collect();
        let (mut ingress, mut egress) = selecting.iter().fold((false, false), |(i, e), pi| {
            let (pi_, pe) = policy_directions(&spec.policies[*pi]);
            (i || pi_, e || pe)
        });
        match mode {
            PolicyEnforcement::Default => {}
            PolicyEnforcement::Always => (ingress, egress) = (true, true),
            PolicyEnforcement::Never => (ingress, egress) = (false, false),
        }
        let own_ports = ep
            .ports
            .iter()
            .filter(|p| named_in_ingress.contains(p.name.as_str()))
            .map(|p| (p.name.clone(), p.protocol.number(), p.port))
            .collect();
        let key = GroupKey {
            policies: if ingress || egress {
                selecting
            } else {
                Vec::new()
            },
            ingress,
            egress,
            own_ports,
        };
        groups.entry(key).or_default().push(ei);
    }

    // Compile each group; equal content shares one set id.
    let mut by_content: BTreeMap<u64, SetBuild> = BTreeMap::new();
    for (key, eps) in groups {
        if !key.ingress && !key.egress {
            for ei in eps {
                let ep = &spec.endpoints[ei];
                out.policy
                    .endpoint_sets
                    .insert(format!("{}/{}", ep.namespace, ep.name), 0);
            }
            continue;
        }
        let tables = compile_group(spec, &universe, &ids, &key);
        let flags = (if key.ingress { EP_F_INGRESS_ENFORCE } else { 0 })
            | (if key.egress { EP_F_EGRESS_ENFORCE } else { 0 });
        let hash = content_hash(flags, &tables);
        let policies: Vec<String> = key
            .policies
            .iter()
            .map(|i| format!("{}/{}", spec.policies[*i].namespace, spec.policies[*i].name))
            .collect();
        let slot = by_content
            .entry(hash)
            .or_insert_with(|| (tables, flags, Vec::new(), Vec::new()));
        slot.2.extend(eps);
        for p in policies {
            if !slot.3.contains(&p) {
                slot.3.push(p);
            }
        }
    }
    let mut taken = BTreeSet::new();
    for (hash, (tables, flags, eps, policies)) in by_content {
        let mut id = (hash as u32) ^ ((hash >> 32) as u32);
        while id == 0 || !taken.insert(id) {
            id = id.wrapping_add(1);
        }
        let mut entries = 0;
        for (dir, identity, rel) in &tables {
            for (prefixlen, proto, port, e) in rel {
                out.state.policy.insert(
                    PolicyKey {
                        prefixlen: *prefixlen,
                        policy_set: id,
                        identity: *identity,
                        direction: *dir,
                        proto: *proto,
                        dport: port.to_be(),
                    },
                    *e,
                );
                entries += 1;
            }
        }
        let mut names = Vec::new();
        for ei in &eps {
            let ep = &spec.endpoints[*ei];
            let name = format!("{}/{}", ep.namespace, ep.name);
            for addr in &ep.addresses {
                let (a, family) = addr16(*addr);
                let k = EndpointKey {
                    addr: a,
                    family,
                    ..EndpointKey::default()
                };
                if let Some(info) = out.state.endpoints.get_mut(&k) {
                    info.policy_set = id;
                    info.flags |= flags;
                }
            }
            out.policy.endpoint_sets.insert(name.clone(), id);
            names.push(name);
        }
        out.policy.sets.insert(
            id,
            PolicySetView {
                id,
                policies,
                endpoints: names,
                ingress: flags & EP_F_INGRESS_ENFORCE != 0,
                egress: flags & EP_F_EGRESS_ENFORCE != 0,
                entries,
            },
        );
    }
    out.policy.rules = ids.into_iter().map(|(r, id)| (id, r)).collect();
    out.policy.universe = universe;
    check_policy_capacity(spec, out);
}

/// (direction, identity, entries) of one set.
type RelTable = (u8, u32, Vec<RelEntry>);

/// A set being built: its tables, flags, endpoints (indexes) and policy names.
type SetBuild = (Vec<RelTable>, u32, Vec<usize>, Vec<String>);

fn compile_group(
    spec: &Spec,
    u: &Universe,
    ids: &BTreeMap<RuleRef, u32>,
    key: &GroupKey,
) -> Vec<RelTable> {
    let mut rules: [Vec<CRule>; 2] = [Vec::new(), Vec::new()];
    let mut order = 0u32;
    for pi in &key.policies {
        let p = &spec.policies[*pi];
        for (kind, index, peers, ports) in rules_of(p) {
            let dir = kind.direction();
            if (dir == DIR_INGRESS && !key.ingress) || (dir == DIR_EGRESS && !key.egress) {
                continue;
            }
            order += 1;
            let rule_id = ids[&RuleRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                kind,
                index,
            }];
            let deny = kind.action() == POLICY_DENY;
            let peer_set = match peers {
                None => PeerSet::Any,
                Some(list) if list.is_empty() => PeerSet::Any,
                Some(list) => {
                    let mut any = false;
                    let mut set = BTreeSet::new();
                    for peer in list {
                        match u.select(peer, &p.namespace, deny) {
                            PeerSet::Any => any = true,
                            PeerSet::Ids(s) => set.extend(s),
                        }
                    }
                    if any { PeerSet::Any } else { PeerSet::Ids(set) }
                }
            };
            let base = CRule {
                action: kind.action(),
                rule_id,
                order,
                peers: peer_set.clone(),
                ports: Vec::new(),
            };
            let (named, numbered): (Vec<PortRule>, Vec<PortRule>) =
                ports.iter().cloned().partition(|p| p.name.is_some());
            let list = &mut rules[usize::from(dir)];
            if !numbered.is_empty() || named.is_empty() {
                list.push(CRule {
                    ports: port_ranges(&numbered, |_, _| Vec::new()),
                    ..base.clone()
                });
            }
            if named.is_empty() {
                continue;
            }
            if dir == DIR_INGRESS {
                // A named port is the destination's: this endpoint's own ports.
                let ports = port_ranges(&named, |name, proto| {
                    key.own_ports
                        .iter()
                        .filter(|(n, p, _)| {
                            n == name && (proto == Protocol::Any || *p == proto.number())
                        })
                        .map(|(_, p, port)| (*p, *port))
                        .collect()
                });
                if !ports.is_empty() {
                    list.push(CRule { ports, ..base });
                }
            } else {
                // Egress: the peer's ports, resolved per peer identity.
                let candidates: BTreeSet<u32> = named
                    .iter()
                    .flat_map(|p| u.with_named_port(p.name.as_deref().unwrap_or_default()))
                    .collect();
                for id in candidates {
                    let selected = match &peer_set {
                        PeerSet::Any => true,
                        PeerSet::Ids(s) => s.contains(&id),
                    };
                    if !selected {
                        continue;
                    }
                    let ports = port_ranges(&named, |name, proto| u.named_ports(id, name, proto));
                    if !ports.is_empty() {
                        list.push(CRule {
                            peers: PeerSet::Ids([id].into()),
                            ports,
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for dir in [DIR_INGRESS, DIR_EGRESS] {
        for (identity, entries) in resolve::direction_tables(&rules[usize::from(dir)]) {
            out.push((dir, identity, entries));
        }
    }
    out
}

fn content_hash(flags: u32, tables: &[RelTable]) -> u64 {
    let mut h = fnv(flags.to_le_bytes(), FNV_OFFSET);
    for (dir, identity, entries) in tables {
        h = fnv([*dir], h);
        h = fnv(identity.to_le_bytes(), h);
        for (len, proto, port, e) in entries {
            h = fnv(len.to_le_bytes(), h);
            h = fnv([*proto, e.action, e.flags], h);
            h = fnv(port.to_le_bytes(), h);
            h = fnv(e.rule_id.to_le_bytes(), h);
        }
    }
    h
}

/// CIDR identities into the ipcache. An exact prefix that already has an entry keeps it
/// (an endpoint, a node, a peer's endpoint CIDR); the tunnel endpoint comes from the
/// longest covering prefix.
fn add_cidrs_to_ipcache(u: &Universe, out: &mut Compiled) {
    for (cidr, id) in &u.cidr_ids {
        let (addr, family) = addr16(cidr.addr);
        let key = IpcacheKey {
            prefixlen: IPCACHE_PREFIX_BASE + u32::from(cidr.prefix_len),
            family,
            addr,
            ..IpcacheKey::default()
        };
        if out.state.ipcache.contains_key(&key) {
            continue;
        }
        let tunnel = covering_tunnel(out, cidr);
        out.state.ipcache.insert(
            key,
            IpcacheValue {
                identity: *id,
                tunnel_endpoint: tunnel,
                ..IpcacheValue::default()
            },
        );
    }
}

fn covering_tunnel(out: &Compiled, cidr: &Cidr) -> u32 {
    out.state
        .ipcache
        .iter()
        .filter_map(|(k, v)| {
            let len = k.prefixlen.checked_sub(IPCACHE_PREFIX_BASE)? as u8;
            let addr = match k.family {
                FAMILY_V4 => std::net::IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]]),
                _ => std::net::IpAddr::from(k.addr),
            };
            let c = Cidr {
                addr,
                prefix_len: len,
            };
            c.covers(cidr).then_some((len, v.tunnel_endpoint))
        })
        .max_by_key(|(len, _)| *len)
        .map_or(0, |(_, t)| t)
}

/// A policy map that would overflow is reported with the biggest sets and their policies,
/// before anything is applied (the generic check in `compile` names the map too).
fn check_policy_capacity(spec: &Spec, out: &mut Compiled) {
    let used = out.state.policy.len();
    if used <= MAX_POLICY as usize {
        return;
    }
    let mut sets: Vec<&PolicySetView> = out.policy.sets.values().collect();
    sets.sort_by_key(|s| std::cmp::Reverse(s.entries));
    let top: Vec<String> = sets
        .iter()
        .take(3)
        .map(|s| {
            format!(
                "set {} ({} entries, {} endpoints; policies {})",
                s.id,
                s.entries,
                s.endpoints.len(),
                s.policies.join(", ")
            )
        })
        .collect();
    let at = spec
        .policies
        .iter()
        .find(|p| {
            sets.first()
                .is_some_and(|s| s.policies.contains(&format!("{}/{}", p.namespace, p.name)))
        })
        .map(|p| spec.locate(&p.meta));
    out.diagnostics.push(
        Diagnostic::error(
            at,
            format!(
                "policies compile to {used} {MAP_POLICY} entries, more than its capacity {MAX_POLICY}; largest: {}",
                top.join("; ")
            ),
        )
        .with_help("use fewer or wider port ranges and selectors (each port range becomes up to 30 prefixes per peer identity), or rebuild the BPF objects with a larger KLD_MAX_POLICY"),
    );
}
