// SPDX-License-Identifier: Apache-2.0
//! Names for flows: a [`Snapshot`] of what the last reload compiled (endpoints, identities,
//! services by reverse-NAT index, policy rules, interfaces), rebuilt after every reload and
//! swapped in whole, and the decoder that turns a ring buffer record into a [`Flow`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use kldnet_bpf::abi::*;

use super::model::{Flow, Peer, PolicyRule, ServiceName};
use crate::compile::{EndpointView, Identity};

/// Everything the decoder needs to name a flow, immutable once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub node: Arc<str>,
    by_ip: HashMap<IpAddr, Arc<Peer>>,
    by_identity: HashMap<u32, Arc<Peer>>,
    services: HashMap<u16, Arc<ServiceName>>,
    rules: HashMap<u32, Arc<PolicyRule>>,
    ifnames: HashMap<u32, Arc<str>>,
    /// `namespace/name` of every endpoint (metrics drop series of the others).
    pub workloads: HashSet<String>,
    /// Config generation this snapshot was built from.
    pub generation: u64,
}

/// The inputs of a snapshot (taken from the engine, or made up by tests and benches).
#[derive(Debug, Default)]
pub struct SnapshotInput<'a> {
    pub node: String,
    pub generation: u64,
    pub endpoints: &'a [EndpointView],
    pub identities: &'a [Identity],
    /// rev_nat_index → service.
    pub services: BTreeMap<u16, ServiceName>,
    /// rule_id → policy rule (see [`policy_rules`]).
    pub rules: BTreeMap<u32, PolicyRule>,
    /// ifindex → interface name.
    pub interfaces: BTreeMap<u32, String>,
    /// `namespace/name` of an endpoint → (namespace, name) of the policies selecting it.
    pub endpoint_policies: BTreeMap<String, Vec<(String, String)>>,
}

impl Snapshot {
    pub fn build(input: SnapshotInput<'_>) -> Snapshot {
        let mut by_identity: HashMap<u32, Arc<Peer>> = HashMap::new();
        for id in input.identities {
            let mut labels: Vec<String> = id
                .labels
                .0
                .iter()
                .map(|(k, v)| {
                    if k == "reserved" {
                        format!("reserved:{v}")
                    } else {
                        format!("k8s:{k}={v}")
                    }
                })
                .collect();
            if !id.namespace.is_empty() {
                labels.push(format!("k8s:io.kubernetes.pod.namespace={}", id.namespace));
            }
            labels.sort();
            by_identity.insert(
                id.id,
                Arc::new(Peer {
                    id: 0,
                    identity: id.id,
                    namespace: id.namespace.clone(),
                    name: String::new(),
                    labels,
                    workload: Arc::from(""),
                    policies: Vec::new(),
                }),
            );
        }
        let mut by_ip = HashMap::new();
        let mut workloads = HashSet::new();
        for ep in input.endpoints {
            let mut labels: Vec<String> = ep.labels.iter().map(|l| format!("k8s:{l}")).collect();
            labels.push(format!("k8s:io.kubernetes.pod.namespace={}", ep.namespace));
            labels.sort();
            let workload = format!("{}/{}", ep.namespace, ep.name);
            workloads.insert(workload.clone());
            let peer = Arc::new(Peer {
                id: ep.ifindex.unwrap_or(0),
                identity: ep.identity,
                namespace: ep.namespace.clone(),
                name: ep.name.clone(),
                labels,
                policies: input
                    .endpoint_policies
                    .get(&workload)
                    .cloned()
                    .unwrap_or_default(),
                workload: Arc::from(workload.as_str()),
            });
            for a in &ep.addresses {
                by_ip.insert(*a, peer.clone());
            }
        }
        Snapshot {
            node: Arc::from(input.node.as_str()),
            by_ip,
            by_identity,
            services: input
                .services
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
            rules: input
                .rules
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
            ifnames: input
                .interfaces
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v.as_str())))
                .collect(),
            workloads,
            generation: input.generation,
        }
    }

    /// The workload at `ip`, else the identity's labels, else a bare identity.
    fn peer(&self, ip: IpAddr, identity: u32) -> Option<Arc<Peer>> {
        if let Some(p) = self.by_ip.get(&ip) {
            return Some(p.clone());
        }
        if let Some(p) = self.by_identity.get(&identity) {
            return Some(p.clone());
        }
        if identity >= ID_CIDR_BASE {
            return self.by_identity.get(&ID_WORLD).cloned();
        }
        None
    }

    /// Decodes one ring buffer record. `unix_offset_ns` turns the event's monotonic
    /// timestamp into wall-clock time.
    pub fn decode(&self, bytes: &[u8], seq: u64, unix_offset_ns: i64) -> Option<Flow> {
        let ev = FlowEvent::from_bytes(bytes)?;
        let src_ip = super::model::addr(ev.family, &ev.src_addr);
        let dst_ip = super::model::addr(ev.family, &ev.dst_addr);
        Some(Flow {
            seq,
            unix_ns: (ev.timestamp_ns as i64)
                .saturating_add(unix_offset_ns)
                .max(0) as u64,
            src: self.peer(src_ip, ev.src_identity),
            dst: self.peer(dst_ip, ev.dst_identity),
            service: if ev.rev_nat_index != 0 {
                self.services.get(&ev.rev_nat_index).cloned()
            } else {
                None
            },
            rule: if ev.rule_id != 0 {
                self.rules.get(&ev.rule_id).cloned()
            } else {
                None
            },
            node: self.node.clone(),
            ifname: self.ifnames.get(&ev.ifindex).cloned(),
            ev,
        })
    }
}

/// rev_nat_index → the service whose frontend it is, from the spec and the compiled
/// reverse-NAT table (VIP, port).
pub fn services_by_rev_nat(
    spec: &kldnet_config::Spec,
    rev_nat: &BTreeMap<u16, Lb4ReverseNat>,
) -> BTreeMap<u16, ServiceName> {
    let mut by_frontend: HashMap<(IpAddr, u16), ServiceName> = HashMap::new();
    let mut by_node_port: HashMap<u16, ServiceName> = HashMap::new();
    let mut by_ip: HashMap<IpAddr, ServiceName> = HashMap::new();
    for svc in &spec.services {
        let s = &svc.value;
        let name = ServiceName {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        };
        for a in s.addresses.iter().chain(&s.external_ips) {
            by_ip.entry(*a).or_insert_with(|| name.clone());
            for p in &s.ports {
                by_frontend.insert((*a, p.port), name.clone());
            }
        }
        for p in &s.ports {
            if let Some(np) = p.node_port {
                by_node_port.insert(np, name.clone());
            }
        }
    }
    rev_nat
        .iter()
        .filter_map(|(idx, r)| {
            let ip = IpAddr::from(u32::from_be(r.address).to_be_bytes());
            let port = u16::from_be(r.port);
            let svc = by_frontend
                .get(&(ip, port))
                .or_else(|| by_node_port.get(&port))
                .or_else(|| by_ip.get(&ip))?;
            Some((*idx, svc.clone()))
        })
        .collect()
}

/// `namespace/name` of each local endpoint → the policies selecting it (through its
/// compiled policy set).
pub fn endpoint_policies(
    compiled: &crate::compile::Compiled,
) -> BTreeMap<String, Vec<(String, String)>> {
    let info = &compiled.policy;
    info.endpoint_sets
        .iter()
        .filter_map(|(ep, set)| {
            let names = info.sets.get(set)?.policies.iter().filter_map(|p| {
                p.split_once('/')
                    .map(|(ns, n)| (ns.to_string(), n.to_string()))
            });
            Some((ep.clone(), names.collect()))
        })
        .collect()
}

/// rule_id → policy rule: the hook for policy names in flows.
///
/// The policy compiler assigns the `rule_id`s the datapath reports in drop and trace
/// events and names them in `Compiled.policy.rules`; the match type comes from whether the
/// rule names peers and ports.
pub fn policy_rules(
    spec: &kldnet_config::Spec,
    compiled: &crate::compile::Compiled,
) -> BTreeMap<u32, PolicyRule> {
    use crate::compile::policy::RuleKind;
    compiled
        .policy
        .rules
        .iter()
        .map(|(id, r)| {
            // Hubble's match type: which of peers (L3) and ports (L4) the rule names.
            let shape = |peers: bool, ports: &Vec<kldnet_config::schema::PortRule>| {
                (peers, !ports.is_empty())
            };
            let rule = spec
                .policies
                .iter()
                .find(|p| p.namespace == r.namespace && p.name == r.name)
                .and_then(|p| match r.kind {
                    RuleKind::Ingress => p
                        .ingress
                        .get(r.index)
                        .map(|x| shape(x.from.is_some(), &x.ports)),
                    RuleKind::Egress => p
                        .egress
                        .get(r.index)
                        .map(|x| shape(x.to.is_some(), &x.ports)),
                    RuleKind::IngressDeny => p
                        .ingress_deny
                        .get(r.index)
                        .map(|x| shape(x.from.is_some(), &x.ports)),
                    RuleKind::EgressDeny => p
                        .egress_deny
                        .get(r.index)
                        .map(|x| shape(x.to.is_some(), &x.ports)),
                });
            let match_type = match rule {
                Some((true, true)) => "l3-l4",
                Some((true, false)) => "l3-only",
                Some((false, true)) => "l4-only",
                Some((false, false)) => "all",
                None => "",
            };
            (
                *id,
                PolicyRule {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    direction: r.kind.direction(),
                    index: r.index as u32,
                    deny: matches!(r.kind, RuleKind::IngressDeny | RuleKind::EgressDeny),
                    match_type: match_type.into(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_names_both_sides() {
        let eps = vec![EndpointView {
            namespace: "prod".into(),
            name: "web-1".into(),
            node: "n".into(),
            local: true,
            identity: 300,
            addresses: vec!["10.0.0.1".parse().unwrap()],
            interface: Some("vnet1".into()),
            ifindex: Some(7),
            labels: vec!["app=web".into()],
            ingress_enforced: false,
            egress_enforced: false,
            policies: Vec::new(),
        }];
        let snap = Snapshot::build(SnapshotInput {
            node: "n".into(),
            endpoints: &eps,
            services: [(
                3,
                ServiceName {
                    namespace: "prod".into(),
                    name: "web".into(),
                },
            )]
            .into(),
            ..Default::default()
        });
        let mut ev = FlowEvent {
            r#type: EVENT_TRACE,
            family: FAMILY_V4,
            proto: 6,
            tcp_flags: 0x02,
            rev_nat_index: 3,
            src_port: 1234u16.to_be(),
            dst_port: 80u16.to_be(),
            src_identity: 2,
            ..Default::default()
        };
        ev.src_addr[..4].copy_from_slice(&[203, 0, 113, 1]);
        ev.dst_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let bytes: [u8; 80] = unsafe { std::mem::transmute(ev) };
        let f = snap.decode(&bytes, 1, 0).unwrap();
        let line = serde_json::to_value(f.to_hubble()).unwrap();
        let flow = &line["flow"];
        assert_eq!(flow["verdict"], "FORWARDED");
        assert_eq!(flow["destination"]["pod_name"], "web-1");
        assert_eq!(flow["destination"]["labels"][0], "k8s:app=web");
        assert_eq!(flow["destination_service"]["name"], "web");
        assert_eq!(flow["l4"]["TCP"]["flags"]["SYN"], true);
        assert_eq!(flow["source"]["identity"], 2);
        assert_eq!(flow["IP"]["source"], "203.0.113.1");
        assert_eq!(flow["traffic_direction"], "INGRESS");
        assert_eq!(flow["Type"], "L3_L4");
    }
}
