// SPDX-License-Identifier: Apache-2.0
//! `kldnet policy trace` and `kldnet bpf policy get`: the verdict the datapath would
//! reach for a packet, computed from map contents with the datapath's own lookups
//! (endpoint, ipcache LPM, policy LPM with the any-peer fallback), and named back to
//! the policy rule that decided it. The daemon runs it on the maps it wrote; `--offline`
//! on a fresh compile of the config dirs.

use std::net::{IpAddr, Ipv4Addr};

use kldnet_bpf::abi::*;
use serde::{Deserialize, Serialize};

use super::super::{Compiled, DesiredState, addr16, dump};
use super::RuleRef;

/// What to trace. Peers are `NAMESPACE/NAME` of an endpoint or an IP address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    pub from: Option<String>,
    /// `k=v` labels (with `namespace`): the identity with exactly these labels.
    #[serde(default)]
    pub from_labels: Vec<String>,
    #[serde(default)]
    pub from_namespace: Option<String>,
    pub to: String,
    /// IANA protocol number (6 tcp, 17 udp, 132 sctp, 1 icmp).
    pub proto: u8,
    pub port: u16,
}

/// One enforcement point on the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// "egress" (at the source) or "ingress" (at the destination).
    pub direction: String,
    pub endpoint: String,
    pub enforced: bool,
    pub policy_set: u32,
    pub allowed: bool,
    /// Hubble drop reason name when denied: POLICY_DENIED (no allow) or POLICY_DENY.
    pub drop_reason: Option<String>,
    pub rule_id: u32,
    pub rule: Option<RuleRef>,
    /// The map entry that matched, as `kldnet bpf policy get` prints it.
    pub entry: Option<String>,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceResult {
    pub from: String,
    pub from_identity: u32,
    pub from_identity_labels: String,
    pub to: String,
    pub to_identity: u32,
    pub to_identity_labels: String,
    pub protocol: String,
    pub port: u16,
    pub steps: Vec<TraceStep>,
    pub allowed: bool,
}

/// A resolved end of the traced connection.
struct End {
    name: String,
    identity: u32,
    /// Address for map lookups (local endpoint detection).
    addr: Option<IpAddr>,
    local_endpoint: Option<String>,
}

/// The identity the datapath finds for an address: local endpoint, else the longest
/// ipcache prefix, else world.
pub fn identity_of(state: &DesiredState, addr: IpAddr) -> u32 {
    if let Some(ep) = endpoint_info(state, addr) {
        return ep.identity;
    }
    let (a, family) = addr16(addr);
    let max = if family == FAMILY_V4 { 32 } else { 128 };
    for len in (0..=max).rev() {
        let mut masked = [0u8; 16];
        for bit in 0..len {
            let (byte, shift) = (bit / 8, 7 - bit % 8);
            masked[byte] |= a[byte] & (1 << shift);
        }
        let key = IpcacheKey {
            prefixlen: IPCACHE_PREFIX_BASE + len as u32,
            family,
            addr: masked,
            ..IpcacheKey::default()
        };
        if let Some(v) = state.ipcache.get(&key) {
            return v.identity;
        }
    }
    ID_WORLD
}

fn endpoint_info(state: &DesiredState, addr: IpAddr) -> Option<&EndpointInfo> {
    let (a, family) = addr16(addr);
    state.endpoints.get(&EndpointKey {
        addr: a,
        family,
        ..EndpointKey::default()
    })
}

/// The datapath's policy lookup: longest prefix for the peer, then for any peer.
pub fn lookup(
    state: &DesiredState,
    set: u32,
    identity: u32,
    direction: u8,
    proto: u8,
    port: u16,
) -> Option<(PolicyKey, PolicyEntry)> {
    let once = |identity: u32| {
        (POLICY_PREFIX_MIN..=POLICY_PREFIX_FULL)
            .rev()
            .find_map(|len| {
                let key = masked_key(len, set, identity, direction, proto, port);
                state.policy.get(&key).map(|e| (key, *e))
            })
    };
    once(identity).or_else(|| if identity != 0 { once(0) } else { None })
}

fn masked_key(len: u32, set: u32, identity: u32, direction: u8, proto: u8, port: u16) -> PolicyKey {
    let port_bits = len.saturating_sub(POLICY_PREFIX_PROTO);
    let port = if port_bits == 0 {
        0
    } else {
        port & (u16::MAX << (16 - port_bits))
    };
    PolicyKey {
        prefixlen: len,
        policy_set: set,
        identity,
        direction,
        proto: if len >= POLICY_PREFIX_PROTO { proto } else { 0 },
        dport: port.to_be(),
    }
}

fn resolve(c: &Compiled, state: &DesiredState, spec: &str) -> Result<End, String> {
    if let Ok(addr) = spec.parse::<IpAddr>() {
        let local = c
            .endpoints
            .iter()
            .find(|e| e.local && e.addresses.contains(&addr));
        return Ok(End {
            name: local.map_or(spec.to_string(), |e| {
                format!("{}/{} ({addr})", e.namespace, e.name)
            }),
            identity: identity_of(state, addr),
            addr: Some(addr),
            local_endpoint: local.map(|e| format!("{}/{}", e.namespace, e.name)),
        });
    }
    let (ns, name) = spec.split_once('/').unwrap_or(("default", spec));
    let ep = c
        .endpoints
        .iter()
        .find(|e| e.namespace == ns && e.name == name)
        .ok_or_else(|| {
            format!(
                "no endpoint {ns}/{name} (give NAMESPACE/NAME of an endpoint, or an IP address)"
            )
        })?;
    Ok(End {
        name: format!("{ns}/{name}"),
        identity: ep.identity,
        addr: ep.addresses.first().copied(),
        local_endpoint: ep.local.then(|| format!("{ns}/{name}")),
    })
}

fn from_labels(c: &Compiled, labels: &[String], namespace: Option<&str>) -> Result<End, String> {
    let ns = namespace.unwrap_or("default");
    let mut want = kldnet_config::types::Labels::default();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("label `{l}` is not KEY=VALUE"))?;
        want.0.insert(k.to_string(), v.to_string());
    }
    let id = c.identities.of(ns, &want).ok_or_else(|| {
        format!("no identity has exactly the labels {labels:?} in namespace {ns} (see `kldnet identity list`)")
    })?;
    Ok(End {
        name: format!("identity {id}"),
        identity: id,
        addr: None,
        local_endpoint: None,
    })
}

pub fn proto_from_name(s: &str) -> Option<u8> {
    Some(match s.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        _ => return None,
    })
}

/// Traces one packet (the first of a connection) from `req.from` to `req.to`.
pub fn trace(
    c: &Compiled,
    state: &DesiredState,
    req: &TraceRequest,
) -> Result<TraceResult, String> {
    let src = match &req.from {
        Some(f) => resolve(c, state, f)?,
        None if !req.from_labels.is_empty() => {
            from_labels(c, &req.from_labels, req.from_namespace.as_deref())?
        }
        None => return Err("give --from NAMESPACE/NAME|IP or --from-labels".into()),
    };
    let dst = resolve(c, state, &req.to)?;
    let steps = vec![
        step(c, state, "egress", &src, dst.identity, req),
        step(c, state, "ingress", &dst, src.identity, req),
    ];
    let allowed = steps.iter().all(|s| s.allowed);
    let u = &c.policy.universe;
    Ok(TraceResult {
        from: src.name,
        from_identity: src.identity,
        from_identity_labels: u.describe(src.identity),
        to: dst.name,
        to_identity: dst.identity,
        to_identity_labels: u.describe(dst.identity),
        protocol: dump::proto_name(req.proto),
        port: req.port,
        steps,
        allowed,
    })
}

fn step(
    c: &Compiled,
    state: &DesiredState,
    direction: &str,
    at: &End,
    peer: u32,
    req: &TraceRequest,
) -> TraceStep {
    let dir = if direction == "ingress" {
        DIR_INGRESS
    } else {
        DIR_EGRESS
    };
    let flag = if dir == DIR_INGRESS {
        EP_F_INGRESS_ENFORCE
    } else {
        EP_F_EGRESS_ENFORCE
    };
    let mut s = TraceStep {
        direction: direction.to_string(),
        endpoint: at.name.clone(),
        enforced: false,
        policy_set: 0,
        allowed: true,
        drop_reason: None,
        rule_id: 0,
        rule: None,
        entry: None,
        note: String::new(),
    };
    let info = match (
        &at.local_endpoint,
        at.addr.and_then(|a| endpoint_info(state, a)),
    ) {
        (Some(_), Some(info)) => info,
        _ => {
            s.note = "not a local endpoint: not enforced on this node".into();
            return s;
        }
    };
    s.policy_set = info.policy_set;
    if info.flags & flag == 0 {
        s.note = format!("{direction} not enforced (no policy selects it for {direction})");
        return s;
    }
    s.enforced = true;
    match lookup(state, info.policy_set, peer, dir, req.proto, req.port) {
        Some((key, e)) => {
            s.rule_id = e.rule_id;
            s.rule = c.policy.rule(e.rule_id).cloned();
            s.entry = Some(format!(
                "{} -> {}",
                dump::policy_key(&key),
                dump::policy_entry(&e)
            ));
            if e.action == POLICY_DENY {
                s.allowed = false;
                s.drop_reason = Some("POLICY_DENY".into());
                s.note = "denied by a deny rule".into();
            } else {
                s.note = "allowed".into();
            }
        }
        None => {
            s.allowed = false;
            s.drop_reason = Some("POLICY_DENIED".into());
            s.note = "default deny: no rule allows it".into();
        }
    }
    s
}

/// One entry of a compiled set, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntryView {
    pub direction: String,
    pub identity: u32,
    pub peer: String,
    pub protocol: String,
    /// `*`, `8080` or a range `9000-9007` (one LPM prefix).
    pub ports: String,
    pub action: String,
    pub rule_id: u32,
    pub rule: Option<String>,
}

/// `kldnet bpf policy get ENDPOINT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMapView {
    pub endpoint: String,
    pub identity: u32,
    pub policy_set: u32,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    pub policies: Vec<String>,
    /// Endpoints sharing the set.
    pub shared_with: Vec<String>,
    pub entries: Vec<PolicyEntryView>,
}

pub fn policy_get(
    c: &Compiled,
    state: &DesiredState,
    endpoint: &str,
) -> Result<PolicyMapView, String> {
    let end = resolve(c, state, endpoint)?;
    let local = end
        .local_endpoint
        .clone()
        .ok_or_else(|| format!("{endpoint} is not a local endpoint of this node"))?;
    let info = end
        .addr
        .and_then(|a| endpoint_info(state, a))
        .ok_or_else(|| format!("{local} has no entry in {MAP_ENDPOINTS}"))?;
    let set = c.policy.sets.get(&info.policy_set);
    let u = &c.policy.universe;
    let entries = state
        .policy
        .iter()
        .filter(|(k, _)| k.policy_set == info.policy_set && info.policy_set != 0)
        .map(|(k, v)| {
            let bits = k.prefixlen.saturating_sub(POLICY_PREFIX_PROTO);
            let port = u16::from_be(k.dport);
            let ports = if k.prefixlen <= POLICY_PREFIX_PROTO {
                "*".to_string()
            } else if bits == 16 {
                port.to_string()
            } else {
                format!("{port}-{}", u32::from(port) + (1u32 << (16 - bits)) - 1)
            };
            PolicyEntryView {
                direction: if k.direction == DIR_INGRESS {
                    "ingress"
                } else {
                    "egress"
                }
                .into(),
                identity: k.identity,
                peer: u.describe(k.identity),
                protocol: if k.prefixlen < POLICY_PREFIX_PROTO {
                    "any".into()
                } else {
                    dump::proto_name(k.proto)
                },
                ports,
                action: if v.action == POLICY_DENY {
                    "deny"
                } else {
                    "allow"
                }
                .into(),
                rule_id: v.rule_id,
                rule: c.policy.rule(v.rule_id).map(|r| r.to_string()),
            }
        })
        .collect();
    Ok(PolicyMapView {
        endpoint: local.clone(),
        identity: info.identity,
        policy_set: info.policy_set,
        ingress_enforced: info.flags & EP_F_INGRESS_ENFORCE != 0,
        egress_enforced: info.flags & EP_F_EGRESS_ENFORCE != 0,
        policies: set.map(|s| s.policies.clone()).unwrap_or_default(),
        shared_with: set
            .map(|s| {
                s.endpoints
                    .iter()
                    .filter(|e| **e != local)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        entries,
    })
}

/// Parses `8080/tcp`, `53/udp`, `icmp`, `8080` (tcp).
pub fn parse_port(s: &str) -> Result<(u8, u16), String> {
    let (port, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, proto),
        None if proto_from_name(s).is_some() => ("0", s),
        None => (s, "tcp"),
    };
    let proto = proto_from_name(proto)
        .ok_or_else(|| format!("unknown protocol `{proto}` (tcp, udp, sctp, icmp)"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port number"))?;
    Ok((proto, port))
}

/// IPv4 helper for tests.
pub fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().expect("IPv4 address"))
}
