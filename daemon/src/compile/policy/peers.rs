// SPDX-License-Identifier: Apache-2.0
//! Policy peers → identities: label selectors over the identities of the configuration,
//! entities over the reserved identities, CIDRs over CIDR identities (and over the
//! addresses of known endpoints and nodes, as Kubernetes ipBlock does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kldnet_config::Spec;
use kldnet_config::schema::{Entity, Peer};
use kldnet_config::types::{Cidr, Labels, Protocol};

use super::super::identity::{self, IdentitySource, IdentityTable};
use super::resolve::PeerSet;

/// A non-reserved identity and what the config says about it.
#[derive(Clone, Debug)]
pub struct Workload {
    pub id: u32,
    pub namespace: String,
    pub labels: Labels,
    /// Addresses of every endpoint with this identity.
    pub addresses: Vec<IpAddr>,
    /// Named ports of those endpoints: (name, protocol, port).
    pub ports: BTreeSet<(String, u8, u16)>,
}

/// Everything peers are resolved against.
#[derive(Clone, Debug, Default)]
pub struct Universe {
    pub workloads: Vec<Workload>,
    /// Addresses with a reserved identity (host, remote-node).
    pub reserved_addrs: Vec<(u32, IpAddr)>,
    /// Identity of every CIDR a policy names (`cidr` and `except`), except 0/0 (world).
    pub cidr_ids: BTreeMap<Cidr, u32>,
    /// Namespace name → labels (including the implicit metadata name).
    pub namespaces: BTreeMap<String, Labels>,
}

const CIDR_SPAN: u32 = 1 << 24;

/// FNV-1a of a CIDR's text: stable on every node.
fn cidr_hash(c: &Cidr) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in c.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Every CIDR the policies name (v4 and v6), without the whole address space.
pub fn policy_cidrs(spec: &Spec) -> BTreeSet<Cidr> {
    let mut out = BTreeSet::new();
    for p in &spec.policies {
        let peers = p
            .ingress
            .iter()
            .flat_map(|r| r.from.iter().flatten())
            .chain(p.egress.iter().flat_map(|r| r.to.iter().flatten()))
            .chain(p.ingress_deny.iter().flat_map(|r| r.from.iter().flatten()))
            .chain(p.egress_deny.iter().flat_map(|r| r.to.iter().flatten()));
        for peer in peers {
            out.extend(peer.cidr.iter().chain(&peer.except).copied());
        }
    }
    out.retain(|c| c.prefix_len != 0);
    out
}

impl Universe {
    pub fn build(spec: &Spec, identities: &IdentityTable) -> Universe {
        let mut u = Universe::default();
        let mut by_id: BTreeMap<u32, Workload> = BTreeMap::new();
        for i in &identities.identities {
            if i.source == IdentitySource::Reserved {
                continue;
            }
            by_id.insert(
                i.id,
                Workload {
                    id: i.id,
                    namespace: i.namespace.clone(),
                    labels: i.labels.clone(),
                    addresses: Vec::new(),
                    ports: BTreeSet::new(),
                },
            );
        }
        for ep in &spec.endpoints {
            if let Some(w) = identities
                .of(&ep.namespace, &ep.labels)
                .and_then(|id| by_id.get_mut(&id))
            {
                w.addresses.extend(ep.addresses.iter().copied());
                for p in &ep.ports {
                    w.ports
                        .insert((p.name.clone(), p.protocol.number(), p.port));
                }
            }
        }
        u.workloads = by_id.into_values().collect();
        if let Some(addr) = spec.node().address {
            u.reserved_addrs.push((identity::HOST, addr));
        }
        for peer in &spec.peers {
            u.reserved_addrs.push((identity::REMOTE_NODE, peer.address));
        }
        let mut taken = BTreeSet::new();
        for cidr in policy_cidrs(spec) {
            let mut id = kldnet_bpf::abi::ID_CIDR_BASE + cidr_hash(&cidr) % CIDR_SPAN;
            while taken.contains(&id) {
                id = kldnet_bpf::abi::ID_CIDR_BASE
                    + (id + 1 - kldnet_bpf::abi::ID_CIDR_BASE) % CIDR_SPAN;
            }
            taken.insert(id);
            u.cidr_ids.insert(cidr, id);
        }
        let mut names: BTreeSet<String> = spec.namespaces.iter().map(|n| n.name.clone()).collect();
        names.extend(u.workloads.iter().map(|w| w.namespace.clone()));
        for n in names {
            let labels = spec.namespace_labels(&n);
            u.namespaces.insert(n, labels);
        }
        u
    }

    /// The identities a peer stands for. `deny`: for a CIDR that covers only some of an
    /// identity's addresses, allows leave the identity out and denies take it in (an
    /// identity cannot be split by address).
    pub fn select(&self, peer: &Peer, policy_ns: &str, deny: bool) -> PeerSet {
        if let Some(e) = peer.entity {
            return self.entity(e);
        }
        if let Some(cidr) = &peer.cidr {
            return PeerSet::Ids(self.cidr(cidr, &peer.except, deny));
        }
        if peer.selector.is_some() || peer.namespace_selector.is_some() {
            let ids = self
                .workloads
                .iter()
                .filter(|w| match &peer.namespace_selector {
                    None => w.namespace == policy_ns,
                    Some(ns) => self
                        .namespaces
                        .get(&w.namespace)
                        .is_some_and(|l| ns.matches(l)),
                })
                .filter(|w| peer.selector.as_ref().is_none_or(|s| s.matches(&w.labels)))
                .map(|w| w.id)
                .collect();
            return PeerSet::Ids(ids);
        }
        // fqdn peers (not enforced yet) match nothing.
        PeerSet::Ids(BTreeSet::new())
    }

    fn entity(&self, e: Entity) -> PeerSet {
        let ids: BTreeSet<u32> = match e {
            Entity::All => return PeerSet::Any,
            Entity::Host => [identity::HOST].into(),
            Entity::RemoteNode => [identity::REMOTE_NODE].into(),
            // Outside the cluster: the world and every CIDR identity (Cilium: CIDR
            // identities carry the world label).
            Entity::World => std::iter::once(identity::WORLD)
                .chain(self.cidr_ids.values().copied())
                .collect(),
            Entity::Cluster => [
                identity::HOST,
                identity::UNMANAGED,
                identity::HEALTH,
                identity::REMOTE_NODE,
            ]
            .into_iter()
            .chain(self.workloads.iter().map(|w| w.id))
            .collect(),
        };
        PeerSet::Ids(ids)
    }

    fn cidr(&self, cidr: &Cidr, except: &[Cidr], deny: bool) -> BTreeSet<u32> {
        let inside = |c: &Cidr| cidr.covers(c) && !except.iter().any(|e| e.covers(c));
        let addr_inside = |a: &IpAddr| inside(&Cidr::host(*a));
        let mut ids: BTreeSet<u32> = self
            .cidr_ids
            .iter()
            .filter(|(c, _)| inside(c))
            .map(|(_, id)| *id)
            .collect();
        if cidr.prefix_len == 0 {
            ids.insert(identity::WORLD);
        }
        // Known addresses inside the block: the identity of their owner.
        for w in &self.workloads {
            let n = w.addresses.iter().filter(|a| addr_inside(a)).count();
            if n > 0 && (deny || n == w.addresses.len()) {
                ids.insert(w.id);
            }
        }
        let mut reserved: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for (id, a) in &self.reserved_addrs {
            let e = reserved.entry(*id).or_default();
            e.1 += 1;
            if addr_inside(a) {
                e.0 += 1;
            }
        }
        for (id, (n, total)) in reserved {
            if n > 0 && (deny || n == total) {
                ids.insert(id);
            }
        }
        ids
    }

    /// Ports named `name` (and of `proto`, unless it is `any`) of one identity's endpoints.
    pub fn named_ports(&self, id: u32, name: &str, proto: Protocol) -> Vec<(u8, u16)> {
        self.workloads
            .iter()
            .filter(|w| w.id == id)
            .flat_map(|w| w.ports.iter())
            .filter(|(n, p, _)| n == name && (proto == Protocol::Any || *p == proto.number()))
            .map(|(_, p, port)| (*p, *port))
            .collect()
    }

    /// Identities with a port called `name`.
    pub fn with_named_port(&self, name: &str) -> BTreeSet<u32> {
        self.workloads
            .iter()
            .filter(|w| w.ports.iter().any(|(n, ..)| n == name))
            .map(|w| w.id)
            .collect()
    }

    /// Display name of an identity: `ns:k=v,…`, `reserved:host`, `cidr:…`.
    pub fn describe(&self, id: u32) -> String {
        match id {
            0 => return "any".into(),
            identity::HOST => return "reserved:host".into(),
            identity::WORLD => return "reserved:world".into(),
            identity::UNMANAGED => return "reserved:unmanaged".into(),
            identity::HEALTH => return "reserved:health".into(),
            identity::REMOTE_NODE => return "reserved:remote-node".into(),
            _ => {}
        }
        if let Some((c, _)) = self.cidr_ids.iter().find(|(_, i)| **i == id) {
            return format!("cidr:{c}");
        }
        if let Some(w) = self.workloads.iter().find(|w| w.id == id) {
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return format!("{}:{}", w.namespace, labels.join(","));
        }
        format!("identity {id}")
    }
}
