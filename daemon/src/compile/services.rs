// SPDX-License-Identifier: Apache-2.0
//! Services → the load-balancer maps (`kld_lb4_svc`, `kld_lb4_be`, `kld_lb4_rnat`).
//!
//! Per frontend (VIP, port, protocol): a master entry in slot 0 (active count, algorithm,
//! flags, reverse-NAT index) and one slot per backend: active backends first, then
//! terminating ones (they keep existing connections but get no new ones); backends in
//! maintenance get no slot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use kldnet_bpf::abi::*;
use kldnet_config::Spec;
use kldnet_config::schema::{
    Backend, BackendState, Balancing, Endpoint, Service, ServicePort, ServiceType, SessionAffinity,
    TargetPort, TrafficPolicy,
};

use super::{BackendView, Compiled, Environment, ServiceView, be16, be32};

const DEFAULT_AFFINITY_SECS: u32 = 3 * 3600;

/// A resolved backend of one service port.
struct Resolved {
    addr: Ipv4Addr,
    port: u16,
    weight: u16,
    state: BackendState,
}

pub(super) fn compile_services(spec: &Spec, env: &Environment, out: &mut Compiled) {
    let node = spec.node();
    let mut by_namespace: HashMap<&str, Vec<&Endpoint>> = HashMap::new();
    for ep in &spec.endpoints {
        by_namespace
            .entry(ep.namespace.as_str())
            .or_default()
            .push(&ep.value);
    }
    let _ = env;
    for svc in &spec.services {
        let mut view = ServiceView {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            service_type: format!("{:?}", svc.service_type),
            frontends: Vec::new(),
            backends: Vec::new(),
            balancing: format!("{:?}", svc.balancing).to_lowercase(),
        };
        let candidates = by_namespace
            .get(svc.namespace.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in &svc.ports {
            let mut backends = resolve_backends(svc, port, candidates);
            backends.sort_by_key(|b| (b.state != BackendState::Active, b.addr, b.port));
            backends.retain(|b| b.state != BackendState::Maintenance);
            for b in &backends {
                let view_b = BackendView {
                    address: format!("{}:{}/{}", b.addr, b.port, port.protocol),
                    weight: b.weight,
                    state: format!("{:?}", b.state).to_lowercase(),
                };
                if !view.backends.contains(&view_b) {
                    view.backends.push(view_b);
                }
            }
            for (vip, port_no, flags) in frontends(svc, port, node.address) {
                view.frontends
                    .push(format!("{vip}:{port_no}/{}", port.protocol));
                program_frontend(out, svc, port, vip, port_no, flags, &backends);
            }
        }
        out.services.push(view);
    }
}

fn v4(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn target_port(svc: &Service, port: &ServicePort, ep: &Endpoint) -> Option<u16> {
    match &port.target_port {
        None => Some(port.port),
        Some(TargetPort::Number(n)) => Some(*n),
        Some(TargetPort::Name(name)) => ep
            .ports
            .iter()
            .find(|p| &p.name == name && p.protocol == port.protocol)
            .map(|p| p.port)
            .or_else(|| {
                let _ = svc;
                None
            }),
    }
}

fn resolve_backends(svc: &Service, port: &ServicePort, candidates: &[&Endpoint]) -> Vec<Resolved> {
    if let Some(selector) = &svc.selector {
        return candidates
            .iter()
            .filter(|ep| selector.matches(&ep.labels))
            .filter_map(|ep| Some((ep, target_port(svc, port, ep)?)))
            .flat_map(|(ep, p)| {
                ep.addresses.iter().filter_map(move |a| {
                    Some(Resolved {
                        addr: v4(*a)?,
                        port: p,
                        weight: 1,
                        state: BackendState::Active,
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
            Some(Resolved {
                addr: v4(b.address)?,
                port: b.port.unwrap_or(default_port),
                weight: b.weight,
                state: b.state,
            })
        })
        .collect()
}

/// (VIP, port, SVC_F_* flags) of every frontend of one service port.
fn frontends(
    svc: &Service,
    port: &ServicePort,
    node_addr: Option<IpAddr>,
) -> Vec<(Ipv4Addr, u16, u8)> {
    let local = if svc.external_traffic_policy == TrafficPolicy::Local {
        SVC_F_LOCAL_ONLY
    } else {
        0
    };
    let mut out = Vec::new();
    let vip_flags = if svc.service_type == ServiceType::LoadBalancer {
        SVC_F_LOADBALANCER | local
    } else {
        0
    };
    for a in svc.addresses.iter().filter_map(|a| v4(*a)) {
        out.push((a, port.port, vip_flags));
    }
    for a in svc.external_ips.iter().filter_map(|a| v4(*a)) {
        out.push((a, port.port, SVC_F_EXTERNAL_IP | local));
    }
    if let Some(np) = port.node_port {
        let mut addrs = vec![Ipv4Addr::LOCALHOST];
        addrs.extend(node_addr.and_then(v4));
        for a in addrs {
            out.push((a, np, SVC_F_NODEPORT | local));
        }
    }
    out
}

fn program_frontend(
    out: &mut Compiled,
    svc: &Service,
    port: &ServicePort,
    vip: Ipv4Addr,
    port_no: u16,
    flags: u8,
    backends: &[Resolved],
) {
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
    let active = backends
        .iter()
        .filter(|b| b.state == BackendState::Active)
        .count();
    out.state.lb4_services.insert(
        key(0),
        Lb4Service {
            backend_id: 0,
            count: active as u16,
            rev_nat_index,
            flags: flags | if affinity { SVC_F_AFFINITY } else { 0 },
            algorithm: match svc.balancing {
                Balancing::Random => LB_ALG_RANDOM,
                Balancing::RoundRobin => LB_ALG_ROUND_ROBIN,
                Balancing::Maglev => LB_ALG_MAGLEV,
            },
            total: backends.len() as u16,
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
    for (i, b) in backends.iter().enumerate() {
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
        out.state.lb4_services.insert(
            key(i as u16 + 1),
            Lb4Service {
                backend_id: id,
                rev_nat_index,
                ..Lb4Service::default()
            },
        );
    }
}
