// SPDX-License-Identifier: Apache-2.0
//! Services → the load-balancer maps (`kld_lb4_svc`, `kld_lb4_be`, `kld_lb4_rnat`) and
//! Maglev tables.
//!
//! Per frontend (VIP, port, protocol): a master entry in slot 0 (count of slots usable
//! for new connections, algorithm, flags, reverse-NAT index) and the slots: slots
//! `1..=count` hold the backends new connections may pick (a backend appears in several
//! slots to carry its weight for random and round-robin), slots `count+1..=total` hold
//! backends that only finish existing connections (terminating ones that are not the
//! fallback). Which backends are usable follows kube-proxy ([`super::selection`]):
//! ready ones, else serving-terminating ones; `internal_traffic_policy = "local"` limits
//! ClusterIP frontends to this node's backends, `external_traffic_policy = "local"` does
//! the same for NodePort, LoadBalancer and external-IP frontends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use kldnet_bpf::abi::*;
use kldnet_config::Spec;
use kldnet_config::schema::{
    Backend, BackendState, Balancing, Endpoint, Service, ServicePort, ServiceType, SessionAffinity,
    TargetPort, TrafficPolicy,
};

use super::maglev::{self, MaglevBackend};
use super::selection::{self, Candidate, Policy};
use super::{BackendView, Compiled, Environment, ServiceView, be16, be32};

const DEFAULT_AFFINITY_SECS: u32 = 3 * 3600;
/// Most slots one frontend's weights expand to (weights are scaled down past it).
const MAX_WEIGHTED_SLOTS: u32 = 1024;

/// A resolved backend of one service port.
#[derive(Clone, Debug)]
struct Resolved {
    addr: Ipv4Addr,
    port: u16,
    weight: u16,
    state: BackendState,
    local: bool,
}

/// Which traffic a frontend serves: decides the traffic policy that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// ClusterIP addresses: in-cluster clients.
    Internal,
    /// NodePort, LoadBalancer and external IPs.
    External,
}

pub(super) fn compile_services(spec: &Spec, env: &Environment, out: &mut Compiled) {
    let node = spec.node();
    let this_node = spec.node_name(&env.hostname);
    let table_size = node.maglev_table_size.unwrap_or(maglev::DEFAULT_TABLE_SIZE);
    let mut by_namespace: HashMap<&str, Vec<&Endpoint>> = HashMap::new();
    let mut node_of_addr: HashMap<IpAddr, &str> = HashMap::new();
    for ep in &spec.endpoints {
        by_namespace
            .entry(ep.namespace.as_str())
            .or_default()
            .push(&ep.value);
        for a in &ep.addresses {
            node_of_addr.insert(*a, ep.node.as_deref().unwrap_or(&this_node));
        }
    }
    let ctx = Ctx {
        this_node: &this_node,
        node_of_addr: &node_of_addr,
        table_size,
    };
    for svc in &spec.services {
        let mut view = ServiceView {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            service_type: format!("{:?}", svc.service_type),
            frontends: Vec::new(),
            backends: Vec::new(),
            balancing: balancing_name(svc.balancing).to_string(),
        };
        let candidates = by_namespace
            .get(svc.namespace.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in &svc.ports {
            let backends = resolve_backends(&ctx, svc, port, candidates);
            for b in backends.iter().filter(|_| env.views) {
                let v = BackendView {
                    address: format!("{}:{}/{}", b.addr, b.port, port.protocol),
                    weight: b.weight,
                    state: format!("{:?}", b.state).to_lowercase(),
                };
                if !view.backends.contains(&v) {
                    view.backends.push(v);
                }
            }
            let policy = Policy {
                internal_local: svc.internal_traffic_policy == TrafficPolicy::Local,
                external_local: svc.external_traffic_policy == TrafficPolicy::Local,
                externally_accessible: externally_accessible(svc, port),
                hints_auto: false,
                node_zone: None,
            };
            let cands: Vec<Candidate> = backends
                .iter()
                .map(|b| {
                    let (ready, serving, terminating) = selection::from_state(b.state);
                    Candidate {
                        addr: IpAddr::V4(b.addr),
                        port: b.port,
                        local: b.local,
                        ready,
                        serving,
                        terminating,
                        zones: None,
                    }
                })
                .collect();
            let categorized = selection::categorize(&cands, &policy);
            for (vip, port_no, flags, reach) in frontends(svc, port, node.address) {
                if env.views {
                    view.frontends
                        .push(format!("{vip}:{port_no}/{}", port.protocol));
                }
                let usable = match reach {
                    Reach::Internal => categorized.internal(&policy),
                    Reach::External => categorized.external(&policy),
                };
                program_frontend(
                    out,
                    &ctx,
                    svc,
                    port,
                    (vip, port_no, flags),
                    &backends,
                    usable,
                );
            }
        }
        if env.views {
            out.services.push(view);
        }
    }
}

struct Ctx<'a> {
    this_node: &'a str,
    node_of_addr: &'a HashMap<IpAddr, &'a str>,
    table_size: u32,
}

fn balancing_name(b: Balancing) -> &'static str {
    match b {
        Balancing::Random => "random",
        Balancing::RoundRobin => "round-robin",
        Balancing::Maglev => "maglev",
    }
}

fn externally_accessible(svc: &Service, port: &ServicePort) -> bool {
    port.node_port.is_some()
        || svc.service_type == ServiceType::LoadBalancer
        || !svc.external_ips.is_empty()
}

fn v4(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn target_port(port: &ServicePort, ep: &Endpoint) -> Option<u16> {
    match &port.target_port {
        None => Some(port.port),
        Some(TargetPort::Number(n)) => Some(*n),
        Some(TargetPort::Name(name)) => ep
            .ports
            .iter()
            .find(|p| &p.name == name && p.protocol == port.protocol)
            .map(|p| p.port),
    }
}

fn resolve_backends(
    ctx: &Ctx,
    svc: &Service,
    port: &ServicePort,
    candidates: &[&Endpoint],
) -> Vec<Resolved> {
    if let Some(selector) = &svc.selector {
        return candidates
            .iter()
            .filter(|ep| selector.matches(&ep.labels))
            .filter_map(|ep| Some((ep, target_port(port, ep)?)))
            .flat_map(|(ep, p)| {
                let local = ep.node.as_deref().is_none_or(|n| n == ctx.this_node);
                ep.addresses.iter().filter_map(move |a| {
                    Some(Resolved {
                        addr: v4(*a)?,
                        port: p,
                        weight: 1,
                        state: BackendState::Active,
                        local,
                    })
                })
            })
            .collect();
    }
    let default_port = match port.target_port {
        Some(TargetPort::Number(n)) => n,
        _ => port.port,
    };
    svc.backends
        .iter()
        .filter_map(|b: &Backend| {
            // The backend's node: said explicitly, else the endpoint with that address;
            // an address no endpoint has is outside the cluster, so not local.
            let node = b
                .node
                .as_deref()
                .or_else(|| ctx.node_of_addr.get(&b.address).copied());
            Some(Resolved {
                addr: v4(b.address)?,
                port: b.port.unwrap_or(default_port),
                weight: b.weight,
                state: b.state,
                local: node == Some(ctx.this_node),
            })
        })
        .collect()
}

/// (VIP, port, KLD_SVC_F_* flags, reach) of every frontend of one service port.
fn frontends(
    svc: &Service,
    port: &ServicePort,
    node_addr: Option<IpAddr>,
) -> Vec<(Ipv4Addr, u16, u8, Reach)> {
    let local = if svc.external_traffic_policy == TrafficPolicy::Local {
        SVC_F_LOCAL_ONLY
    } else {
        0
    };
    let mut out = Vec::new();
    let lb = svc.service_type == ServiceType::LoadBalancer;
    for a in svc.addresses.iter().filter_map(|a| v4(*a)) {
        if lb {
            out.push((a, port.port, SVC_F_LOADBALANCER | local, Reach::External));
        } else {
            out.push((a, port.port, 0, Reach::Internal));
        }
    }
    for a in svc.external_ips.iter().filter_map(|a| v4(*a)) {
        out.push((a, port.port, SVC_F_EXTERNAL_IP | local, Reach::External));
    }
    if let Some(np) = port.node_port {
        let mut addrs = vec![Ipv4Addr::LOCALHOST];
        addrs.extend(node_addr.and_then(v4));
        for a in addrs {
            out.push((a, np, SVC_F_NODEPORT | local, Reach::External));
        }
    }
    out
}

/// Slots per backend for random / round-robin: weights divided by their gcd, scaled
/// down to at most [`MAX_WEIGHTED_SLOTS`] in all, at least one slot each.
fn slot_counts(weights: &[u16]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = weights
        .iter()
        .fold(0u32, |g, w| gcd(g, u32::from(*w)))
        .max(1);
    let counts: Vec<u32> = weights.iter().map(|w| u32::from(*w) / g).collect();
    let total: u32 = counts.iter().sum();
    if total <= MAX_WEIGHTED_SLOTS {
        return counts;
    }
    counts
        .iter()
        .map(|c| (c * MAX_WEIGHTED_SLOTS / total).max(1))
        .collect()
}

fn program_frontend(
    out: &mut Compiled,
    ctx: &Ctx,
    svc: &Service,
    port: &ServicePort,
    frontend: (Ipv4Addr, u16, u8),
    backends: &[Resolved],
    usable: &[usize],
) {
    let (vip, port_no, flags) = frontend;
    let proto = port.protocol.number();
    let rev_nat_index = out.alloc.rev_nat_index((vip, port_no, proto));
    let affinity = svc.session_affinity == SessionAffinity::ClientIp;
    let key = |slot: u16| Lb4Key {
        address: be32(vip),
        dport: be16(port_no),
        proto,
        scope: SCOPE_EXTERNAL,
        backend_slot: slot,
        ..Lb4Key::default()
    };

    let mut ids = Vec::with_capacity(backends.len());
    for b in backends {
        let id = out.alloc.backend_id((b.addr, b.port, proto));
        out.state.lb4_backends.insert(
            id,
            Lb4Backend {
                address: be32(b.addr),
                port: be16(b.port),
                proto,
                state: match b.state {
                    BackendState::Active => BE_ACTIVE,
                    BackendState::Terminating => BE_TERMINATING,
                    BackendState::Maintenance => BE_MAINTENANCE,
                },
            },
        );
        ids.push(id);
    }
    let mut usable: Vec<usize> = usable.to_vec();
    usable.sort_by_key(|i| (backends[*i].addr, backends[*i].port));
    let mut slots: Vec<u32> = Vec::new();
    if svc.balancing == Balancing::Maglev {
        slots.extend(usable.iter().map(|i| ids[*i]));
    } else {
        let weights: Vec<u16> = usable.iter().map(|i| backends[*i].weight).collect();
        for (i, n) in usable.iter().zip(slot_counts(&weights)) {
            slots.extend(std::iter::repeat_n(ids[*i], n as usize));
        }
    }
    let count = slots.len();
    // Serving backends that are not usable for new connections keep a slot past `count`
    // (their backend entry must stay for established per-packet flows).
    let mut draining: Vec<usize> = (0..backends.len())
        .filter(|i| !usable.contains(i) && backends[*i].state != BackendState::Maintenance)
        .collect();
    draining.sort_by_key(|i| (backends[*i].addr, backends[*i].port));
    slots.extend(draining.iter().map(|i| ids[*i]));

    out.state.lb4_services.insert(
        key(0),
        Lb4Service {
            backend_id: 0,
            count: count as u16,
            rev_nat_index,
            flags: flags | if affinity { SVC_F_AFFINITY } else { 0 },
            algorithm: match svc.balancing {
                Balancing::Random => LB_ALG_RANDOM,
                Balancing::RoundRobin => LB_ALG_ROUND_ROBIN,
                Balancing::Maglev => LB_ALG_MAGLEV,
            },
            total: slots.len() as u16,
            affinity_timeout_sec: if affinity {
                svc.affinity_timeout.map_or(DEFAULT_AFFINITY_SECS, |d| {
                    d.0.as_secs().min(u64::from(u32::MAX)) as u32
                })
            } else {
                0
            },
        },
    );
    out.state.lb4_rev_nat.insert(
        rev_nat_index,
        Lb4ReverseNat {
            address: be32(vip),
            port: be16(port_no),
            ..Lb4ReverseNat::default()
        },
    );
    for (i, id) in slots.iter().enumerate() {
        out.state.lb4_services.insert(
            key(i as u16 + 1),
            Lb4Service {
                backend_id: *id,
                rev_nat_index,
                ..Lb4Service::default()
            },
        );
    }
    if svc.balancing == Balancing::Maglev && !usable.is_empty() {
        let mb: Vec<MaglevBackend> = usable
            .iter()
            .map(|i| MaglevBackend {
                id: ids[*i],
                addr: IpAddr::V4(backends[*i].addr),
                port: backends[*i].port,
                proto: port.protocol,
                weight: backends[*i].weight,
            })
            .collect();
        out.state.maglev.insert(
            rev_nat_index,
            maglev::lookup_table(&mb, ctx.table_size, maglev::CILIUM_DEFAULT_SEED),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::slot_counts;

    #[test]
    fn weights_become_slot_counts() {
        assert_eq!(slot_counts(&[1, 1, 1]), vec![1, 1, 1]);
        assert_eq!(slot_counts(&[2, 4, 6]), vec![1, 2, 3]);
        assert_eq!(slot_counts(&[90, 10]), vec![9, 1]);
        let big = slot_counts(&[60000, 1]);
        assert!(big.iter().sum::<u32>() <= 1025 && big[1] == 1, "{big:?}");
    }
}
