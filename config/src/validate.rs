// SPDX-License-Identifier: Apache-2.0
//! Checks across objects and files: names, duplicates, references, overlaps, and
//! field combinations the schema alone cannot express.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::diag::Diagnostic;
use crate::schema::*;
use crate::spec::{Meta, Spec};
use crate::types::{Cidr, Protocol, check_object_name};

/// Lowest and highest identity an `[[identity]]` may pin (below are reserved ids).
pub const PINNED_IDENTITY_RANGE: std::ops::RangeInclusive<u32> = 256..=65535;

struct Checker<'a> {
    spec: &'a Spec,
    diags: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, meta: &Meta, path: &str, msg: impl Into<String>) -> &mut Diagnostic {
        let at = if path.is_empty() {
            self.spec.locate(meta)
        } else {
            self.spec.locate_field(meta, path)
        };
        self.diags.push(Diagnostic::error(Some(at), msg));
        self.diags.last_mut().expect("just pushed")
    }

    fn warning(&mut self, meta: &Meta, path: &str, msg: impl Into<String>) -> &mut Diagnostic {
        let at = if path.is_empty() {
            self.spec.locate(meta)
        } else {
            self.spec.locate_field(meta, path)
        };
        self.diags.push(Diagnostic::warning(Some(at), msg));
        self.diags.last_mut().expect("just pushed")
    }

    fn name(&mut self, kind: &str, meta: &Meta, name: &str, namespace: Option<&str>) {
        if let Err(e) = check_object_name(kind, name) {
            self.error(meta, "name", e);
        }
        if let Some(ns) = namespace
            && let Err(e) = check_object_name("namespace", ns)
        {
            self.error(meta, "namespace", e);
        }
    }

    /// Reports the second and later occurrences of a key, naming the place of the first
    /// (its field, so a duplicate inside one object points at the first occurrence).
    fn unique<'k>(
        &mut self,
        seen: &mut HashMap<String, (&'k Meta, String)>,
        what: String,
        meta: &'k Meta,
        path: &str,
    ) {
        if let Some((first, first_path)) = seen.get(&what) {
            let first_at = self.spec.locate_field(first, first_path);
            self.error(
                meta,
                path,
                format!("duplicate {what}; first defined at {first_at}"),
            );
        } else {
            seen.insert(what, (meta, path.to_string()));
        }
    }
}

/// Runs every cross-object check.
pub fn validate(spec: &Spec, diags: &mut Vec<Diagnostic>) {
    let mut c = Checker { spec, diags };
    node(&mut c);
    endpoints(&mut c);
    identities(&mut c);
    services(&mut c);
    policies(&mut c);
    peers(&mut c);
    pools_routes_bgp(&mut c);
    not_enforced_yet(&mut c);
}

fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
        Err(format!(
            "invalid interface name `{name}`: 1 to 15 characters, no '/', ':' or spaces"
        ))
    } else {
        Ok(())
    }
}

fn node(c: &mut Checker) {
    let spec = c.spec;
    if let Some(n) = &spec.node {
        for (i, u) in n.uplinks.iter().enumerate() {
            if let Err(e) = check_ifname(u) {
                c.error(&n.meta, &format!("uplinks[{i}]"), e);
            }
        }
        for (i, e) in n.endpoint_cidrs.iter().enumerate() {
            if !n.cluster_cidrs.is_empty() && !n.cluster_cidrs.iter().any(|cc| cc.covers(e)) {
                c.warning(
                    &n.meta,
                    &format!("endpoint_cidrs[{i}]"),
                    format!("endpoint CIDR {e} is outside every cluster_cidrs entry"),
                );
            }
        }
    }
    if let Some(n) = &spec.node
        && let Some(size) = n.maglev_table_size
        && (!is_prime(size) || !(251..=131071).contains(&size))
    {
        c.error(
            &n.meta,
            "maglev_table_size",
            format!("maglev table size {size} must be a prime in 251..=131071"),
        )
        .help = Some("e.g. 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071".into());
    }
    if let Some(f) = &spec.flows {
        for (key, value) in [("metrics", &f.metrics), ("ui", &f.ui)] {
            if !value.is_empty() && value.parse::<SocketAddr>().is_err() {
                c.error(
                    &f.meta,
                    key,
                    format!("invalid {key} listen address `{value}`"),
                )
                .help =
                    Some("write host:port, e.g. \"127.0.0.1:9965\", or \"\" to turn it off".into());
            }
        }
        if f.buffer == 0 {
            c.error(&f.meta, "buffer", "flows.buffer must be at least 1");
        }
    }
}

fn known_nodes(spec: &Spec) -> Vec<String> {
    let mut v: Vec<String> = spec.peers.iter().map(|p| p.name.clone()).collect();
    if let Some(name) = spec.node.as_ref().and_then(|n| n.name.clone()) {
        v.push(name);
    }
    v
}

fn endpoints(c: &mut Checker) {
    let spec = c.spec;
    let nodes = known_nodes(spec);
    let this_node = spec.node.as_ref().and_then(|n| n.name.clone());
    let local_cidrs = spec
        .node
        .as_ref()
        .map(|n| n.endpoint_cidrs.clone())
        .unwrap_or_default();
    let mut keys = HashMap::new();
    let mut addrs: HashMap<IpAddr, &Meta> = HashMap::new();
    for ep in &spec.endpoints {
        c.name("endpoint", &ep.meta, &ep.name, Some(&ep.namespace));
        c.unique(
            &mut keys,
            format!("endpoint {}/{}", ep.namespace, ep.name),
            &ep.meta,
            "name",
        );
        if ep.addresses.is_empty() {
            c.error(
                &ep.meta,
                "addresses",
                format!("endpoint {}/{} has no addresses", ep.namespace, ep.name),
            )
            .help = Some("add addresses = [\"10.244.1.22\"]".into());
        }
        for (i, a) in ep.addresses.iter().enumerate() {
            let path = format!("addresses[{i}]");
            if let Some(first) = addrs.get(a) {
                let first_at = spec.locate(first);
                c.error(&ep.meta, &path, format!("address {a} of endpoint {}/{} is already used by the endpoint at {first_at}", ep.namespace, ep.name));
            } else {
                addrs.insert(*a, &ep.meta);
            }
            let local = ep.node.is_none() || ep.node == this_node;
            if local && !local_cidrs.is_empty() && !local_cidrs.iter().any(|cidr| cidr.contains(*a))
            {
                c.warning(
                    &ep.meta,
                    &path,
                    format!("address {a} is outside this node's endpoint_cidrs"),
                );
            }
        }
        if let Some(n) = &ep.node
            && !nodes.contains(n)
        {
            let d = c.error(
                &ep.meta,
                "node",
                format!(
                    "endpoint {}/{} names unknown node `{n}`",
                    ep.namespace, ep.name
                ),
            );
            d.help = Some(if nodes.is_empty() {
                "declare the node as a [[peer]] (or set [node].name), or remove `node`".into()
            } else {
                format!("known nodes: {}", nodes.join(", "))
            });
        }
        if let Some(ifname) = &ep.interface
            && let Err(e) = check_ifname(ifname)
        {
            c.error(&ep.meta, "interface", e);
        }
        let mut port_names = HashMap::new();
        for (i, p) in ep.ports.iter().enumerate() {
            if !is_port_name(&p.name) {
                c.error(
                    &ep.meta,
                    &format!("ports[{i}].name"),
                    format!(
                        "invalid port name `{}`: up to 15 of [a-z0-9-], with a letter",
                        p.name
                    ),
                );
            }
            c.unique(
                &mut port_names,
                format!("port name `{}`", p.name),
                &ep.meta,
                &format!("ports[{i}].name"),
            );
            if p.port == 0 {
                c.error(
                    &ep.meta,
                    &format!("ports[{i}].port"),
                    "port 0 is not a port",
                );
            }
        }
    }
    let mut ns_keys = HashMap::new();
    for ns in &spec.namespaces {
        c.name("namespace", &ns.meta, &ns.name, None);
        c.unique(
            &mut ns_keys,
            format!("namespace {}", ns.name),
            &ns.meta,
            "name",
        );
    }
}

/// IANA service name syntax (Kubernetes named ports).
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn identities(c: &mut Checker) {
    let spec = c.spec;
    let mut ids = HashMap::new();
    let mut sets = HashMap::new();
    for pin in &spec.identities {
        if !PINNED_IDENTITY_RANGE.contains(&pin.id) {
            c.error(
                &pin.meta,
                "id",
                format!("identity {} is outside the range a pin may use", pin.id),
            )
            .help = Some(format!(
                "use {}..={}; lower ids are reserved (1 host, 2 world, 3 unmanaged, 4 health, 6 remote-node)",
                PINNED_IDENTITY_RANGE.start(),
                PINNED_IDENTITY_RANGE.end()
            ));
        }
        c.unique(&mut ids, format!("identity id {}", pin.id), &pin.meta, "id");
        let set: Vec<String> = pin.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        c.unique(
            &mut sets,
            format!(
                "identity for labels {{{}}} in namespace {}",
                set.join(","),
                pin.namespace
            ),
            &pin.meta,
            "labels",
        );
    }
}

fn services(c: &mut Checker) {
    let spec = c.spec;
    let mut keys = HashMap::new();
    let mut frontends: HashMap<(IpAddr, u16, Protocol), &Meta> = HashMap::new();
    let mut node_ports: HashMap<(u16, Protocol), &Meta> = HashMap::new();
    for svc in &spec.services {
        let id = format!("{}/{}", svc.namespace, svc.name);
        c.name("service", &svc.meta, &svc.name, Some(&svc.namespace));
        c.unique(&mut keys, format!("service {id}"), &svc.meta, "name");
        if svc.ports.is_empty() {
            c.error(&svc.meta, "ports", format!("service {id} has no ports"))
                .help = Some("add ports = [{ port = 80, target_port = 8080 }]".into());
        }
        let mut names = HashMap::new();
        let mut port_numbers = HashMap::new();
        for (i, p) in svc.ports.iter().enumerate() {
            let at = format!("ports[{i}]");
            match &p.name {
                Some(n) => c.unique(
                    &mut names,
                    format!("port name `{n}` in service {id}"),
                    &svc.meta,
                    &format!("{at}.name"),
                ),
                None if svc.ports.len() > 1 => {
                    c.error(
                        &svc.meta,
                        &at,
                        format!("service {id} has several ports, so each needs a name"),
                    );
                }
                None => {}
            }
            if p.port == 0 {
                c.error(&svc.meta, &format!("{at}.port"), "port 0 is not a port");
            }
            // The VIP overlap check below skips the service's own ports, so a port listed
            // twice in one service is caught here.
            c.unique(
                &mut port_numbers,
                format!("port {}/{} in service {id}", p.port, p.protocol),
                &svc.meta,
                &format!("{at}.port"),
            );
            if matches!(p.protocol, Protocol::Icmp | Protocol::Any) {
                c.error(
                    &svc.meta,
                    &format!("{at}.protocol"),
                    format!("a service port is tcp, udp or sctp, not {}", p.protocol),
                );
            }
            if let Some(TargetPort::Name(n)) = &p.target_port {
                if !is_port_name(n) {
                    c.error(
                        &svc.meta,
                        &format!("{at}.target_port"),
                        format!("invalid target port name `{n}`"),
                    );
                }
                if !svc.backends.is_empty() && svc.backends.iter().any(|b| b.port.is_none()) {
                    c.error(&svc.meta, &format!("{at}.target_port"), format!("named target port `{n}` needs a selector; explicit backends need `port`"));
                }
            }
            if let Some(TargetPort::Number(0)) = p.target_port {
                c.error(
                    &svc.meta,
                    &format!("{at}.target_port"),
                    "port 0 is not a port",
                );
            }
            if let Some(np) = p.node_port {
                if !matches!(
                    svc.service_type,
                    ServiceType::NodePort | ServiceType::LoadBalancer
                ) {
                    c.error(
                        &svc.meta,
                        &format!("{at}.node_port"),
                        format!(
                            "node_port needs type NodePort or LoadBalancer (service {id} is {:?})",
                            svc.service_type
                        ),
                    );
                } else if let Some(first) = node_ports.get(&(np, p.protocol)) {
                    let first_at = spec.locate(first);
                    c.error(
                        &svc.meta,
                        &format!("{at}.node_port"),
                        format!(
                            "node port {np}/{} is already used by the service at {first_at}",
                            p.protocol
                        ),
                    );
                } else {
                    node_ports.insert((np, p.protocol), &svc.meta);
                }
            }
            for (j, vip) in svc.addresses.iter().chain(&svc.external_ips).enumerate() {
                let path = if j < svc.addresses.len() {
                    format!("addresses[{j}]")
                } else {
                    format!("external_ips[{}]", j - svc.addresses.len())
                };
                if let Some(first) = frontends.get(&(*vip, p.port, p.protocol)) {
                    if !std::ptr::eq(*first, &svc.meta) {
                        let first_at = spec.locate(first);
                        c.error(
                            &svc.meta,
                            &path,
                            format!(
                                "{vip}:{}/{} of service {id} overlaps the service at {first_at}",
                                p.port, p.protocol
                            ),
                        )
                        .help = Some(
                            "each address, port and protocol may belong to one service".into(),
                        );
                    }
                } else {
                    frontends.insert((*vip, p.port, p.protocol), &svc.meta);
                }
            }
        }
        if svc.addresses.is_empty()
            && matches!(
                svc.service_type,
                ServiceType::ClusterIP | ServiceType::NodePort
            )
        {
            c.error(&svc.meta, "name", format!("service {id} has no addresses"))
                .help =
                Some("add addresses = [\"10.96.0.10\"] (kldnet allocates no ClusterIPs)".into());
        }
        if svc.addresses.is_empty()
            && svc.service_type == ServiceType::LoadBalancer
            && !spec.lb_pools.iter().any(|p| {
                p.service_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&svc.labels))
            })
        {
            c.warning(&svc.meta, "name", format!("LoadBalancer service {id} has no addresses and no [[lb_pool]] selects it: it stays pending"));
        }
        if svc.selector.is_some() && !svc.backends.is_empty() {
            c.error(
                &svc.meta,
                "backends",
                format!("service {id} has both a selector and explicit backends"),
            )
            .help =
                Some("use one: `selector` picks endpoints by label, `backends` lists them".into());
        }
        for (i, b) in svc.backends.iter().enumerate() {
            if b.weight == 0 {
                c.error(
                    &svc.meta,
                    &format!("backends[{i}].weight"),
                    "weight 0 is not allowed",
                )
                .help = Some(
                    "to drain a backend set state = \"terminating\" or \"maintenance\"".into(),
                );
            }
            if let Some(vip) = svc.addresses.first()
                && vip.is_ipv4() != b.address.is_ipv4()
            {
                c.error(
                    &svc.meta,
                    &format!("backends[{i}].address"),
                    format!(
                        "backend {} and address {vip} are of different IP families",
                        b.address
                    ),
                );
            }
        }
        if svc.affinity_timeout.is_some() && svc.session_affinity == SessionAffinity::None {
            c.warning(
                &svc.meta,
                "affinity_timeout",
                "affinity_timeout has no effect without session_affinity = \"client-ip\"",
            );
        }
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn policies(c: &mut Checker) {
    let spec = c.spec;
    let mut keys = HashMap::new();
    for pol in &spec.policies {
        let id = format!("{}/{}", pol.namespace, pol.name);
        c.name("policy", &pol.meta, &pol.name, Some(&pol.namespace));
        c.unique(&mut keys, format!("policy {id}"), &pol.meta, "name");
        let groups: [(&str, Vec<RuleParts>); 4] = [
            (
                "ingress",
                pol.ingress
                    .iter()
                    .map(|r| (r.from.as_ref(), &r.ports))
                    .collect(),
            ),
            (
                "egress",
                pol.egress
                    .iter()
                    .map(|r| (r.to.as_ref(), &r.ports))
                    .collect(),
            ),
            (
                "ingress_deny",
                pol.ingress_deny
                    .iter()
                    .map(|r| (r.from.as_ref(), &r.ports))
                    .collect(),
            ),
            (
                "egress_deny",
                pol.egress_deny
                    .iter()
                    .map(|r| (r.to.as_ref(), &r.ports))
                    .collect(),
            ),
        ];
        for (dir, rules) in groups {
            let peer_key = if dir.starts_with("ingress") {
                "from"
            } else {
                "to"
            };
            for (i, (peers, ports)) in rules.into_iter().enumerate() {
                for (j, peer) in peers.into_iter().flatten().enumerate() {
                    check_peer(
                        c,
                        &pol.meta,
                        &format!("{dir}[{i}].{peer_key}[{j}]"),
                        peer,
                        dir.ends_with("deny"),
                    );
                }
                for (j, port) in ports.iter().enumerate() {
                    check_port_rule(c, &pol.meta, &format!("{dir}[{i}].ports[{j}]"), port);
                }
            }
        }
        for (i, r) in pol.egress.iter().enumerate() {
            for (j, d) in r.dns.iter().enumerate() {
                if d.match_name.is_some() == d.match_pattern.is_some() {
                    c.error(
                        &pol.meta,
                        &format!("egress[{i}].dns[{j}]"),
                        "a dns rule has exactly one of match_name, match_pattern",
                    );
                }
            }
        }
    }
}

/// The peers and ports of one rule, whatever its direction and kind.
type RuleParts<'a> = (Option<&'a Vec<crate::schema::Peer>>, &'a Vec<PortRule>);

fn check_peer(c: &mut Checker, meta: &Meta, at: &str, p: &crate::schema::Peer, deny: bool) {
    let kinds = [
        p.selector.is_some() || p.namespace_selector.is_some(),
        p.cidr.is_some(),
        p.entity.is_some(),
        p.fqdn.is_some(),
        p.fqdn_pattern.is_some(),
    ];
    let n = kinds.iter().filter(|k| **k).count();
    if n != 1 {
        c.error(meta, at, if n == 0 { "empty peer".to_string() } else { "a peer has more than one kind".to_string() }).help = Some(
            "use one of: selector and/or namespace_selector, cidr (with except), entity, fqdn, fqdn_pattern".into(),
        );
    }
    if !p.except.is_empty() {
        match &p.cidr {
            None => {
                c.error(meta, &format!("{at}.except"), "`except` needs `cidr`");
            }
            Some(cidr) => {
                for (k, e) in p.except.iter().enumerate() {
                    if !cidr.covers(e) {
                        c.error(
                            meta,
                            &format!("{at}.except[{k}]"),
                            format!("except {e} is not inside cidr {cidr}"),
                        );
                    }
                }
            }
        }
    }
    if deny && (p.fqdn.is_some() || p.fqdn_pattern.is_some()) {
        c.error(meta, at, "deny rules cannot use fqdn peers");
    }
    if let Some(pattern) = p.fqdn_pattern.as_ref().or(p.fqdn.as_ref())
        && (pattern.is_empty()
            || !pattern
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-.*_".contains(ch)))
    {
        c.error(meta, at, format!("invalid DNS name or pattern `{pattern}`"));
    }
}

fn check_port_rule(c: &mut Checker, meta: &Meta, at: &str, p: &PortRule) {
    if p.port.is_some() && p.name.is_some() {
        c.error(meta, at, "a port rule has `port` or `name`, not both");
    }
    if p.port == Some(0) {
        c.error(meta, &format!("{at}.port"), "port 0 is not a port")
            .help = Some("leave `port` out to allow every port".into());
    }
    if let Some(end) = p.end_port {
        match p.port {
            None => {
                c.error(meta, &format!("{at}.end_port"), "`end_port` needs `port`");
            }
            Some(start) if end < start => {
                c.error(
                    meta,
                    &format!("{at}.end_port"),
                    format!("end_port {end} is below port {start}"),
                );
            }
            _ => {}
        }
    }
    if matches!(p.protocol, Protocol::Icmp | Protocol::Any)
        && (p.port.is_some() || p.name.is_some())
    {
        c.error(
            meta,
            &format!("{at}.protocol"),
            format!("protocol {} has no ports", p.protocol),
        );
    }
    if let Some(n) = &p.name
        && !is_port_name(n)
    {
        c.error(
            meta,
            &format!("{at}.name"),
            format!("invalid port name `{n}`"),
        );
    }
}

fn peers(c: &mut Checker) {
    let spec = c.spec;
    let mut keys = HashMap::new();
    let mut addrs = HashMap::new();
    let mut cidrs: Vec<(Cidr, &Meta, String)> = Vec::new();
    if let Some(n) = &spec.node {
        for (i, cidr) in n.endpoint_cidrs.iter().enumerate() {
            cidrs.push((*cidr, &n.meta, format!("endpoint_cidrs[{i}]")));
        }
    }
    for p in &spec.peers {
        c.name("peer", &p.meta, &p.name, None);
        c.unique(&mut keys, format!("peer {}", p.name), &p.meta, "name");
        c.unique(
            &mut addrs,
            format!("peer address {}", p.address),
            &p.meta,
            "address",
        );
        for (i, cidr) in p.endpoint_cidrs.iter().enumerate() {
            let path = format!("endpoint_cidrs[{i}]");
            if let Some((other, m, first)) = cidrs.iter().find(|(o, _, _)| o.overlaps(cidr)) {
                let at = spec.locate_field(m, first);
                c.error(
                    &p.meta,
                    &path,
                    format!(
                        "endpoint CIDR {cidr} of peer {} overlaps {other} (defined at {at})",
                        p.name
                    ),
                );
            }
            cidrs.push((*cidr, &p.meta, path));
        }
        if let Some(key) = &p.wireguard_public_key
            && !is_wireguard_key(key)
        {
            c.error(
                &p.meta,
                "wireguard_public_key",
                "invalid WireGuard public key",
            )
            .help =
                Some("44 characters of base64 ending in '=' (the output of `wg pubkey`)".into());
        }
    }
}

fn is_wireguard_key(k: &str) -> bool {
    k.len() == 44
        && k.ends_with('=')
        && k[..43]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

fn pools_routes_bgp(c: &mut Checker) {
    let spec = c.spec;
    let mut keys = HashMap::new();
    let mut pool_cidrs: Vec<(Cidr, &Meta, String)> = Vec::new();
    for pool in &spec.lb_pools {
        c.name("lb_pool", &pool.meta, &pool.name, None);
        c.unique(
            &mut keys,
            format!("lb_pool {}", pool.name),
            &pool.meta,
            "name",
        );
        for (i, cidr) in pool.cidrs.iter().enumerate() {
            let path = format!("cidrs[{i}]");
            if let Some((other, m, p)) = pool_cidrs.iter().find(|(o, _, _)| o.overlaps(cidr)) {
                let at = spec.locate_field(m, p);
                c.error(
                    &pool.meta,
                    &path,
                    format!("pool CIDR {cidr} overlaps {other} of the pool at {at}"),
                );
            }
            pool_cidrs.push((*cidr, &pool.meta, path));
        }
    }
    let services: BTreeMap<(&str, &str), &Service> = spec
        .services
        .iter()
        .map(|s| ((s.namespace.as_str(), s.name.as_str()), &s.value))
        .collect();
    let mut route_keys = HashMap::new();
    for r in &spec.routes {
        c.name("route", &r.meta, &r.name, Some(&r.namespace));
        c.unique(
            &mut route_keys,
            format!("route {}/{}", r.namespace, r.name),
            &r.meta,
            "name",
        );
        match services.get(&(r.namespace.as_str(), r.service.as_str())) {
            None => {
                c.error(
                    &r.meta,
                    "service",
                    format!(
                        "route {}/{} names unknown service {}/{}",
                        r.namespace, r.name, r.namespace, r.service
                    ),
                );
            }
            Some(s) if !s.ports.iter().any(|p| p.port == r.port) => {
                c.error(
                    &r.meta,
                    "port",
                    format!(
                        "service {}/{} has no port {}",
                        r.namespace, r.service, r.port
                    ),
                );
            }
            Some(_) => {}
        }
        for (i, rule) in r.rule.iter().enumerate() {
            for (j, b) in rule.backends.iter().enumerate() {
                if !services.contains_key(&(r.namespace.as_str(), b.service.as_str())) {
                    c.error(
                        &r.meta,
                        &format!("rule[{i}].backends[{j}].service"),
                        format!(
                            "route backend names unknown service {}/{}",
                            r.namespace, b.service
                        ),
                    );
                }
            }
        }
    }
    if let Some(bgp) = &spec.bgp {
        if bgp.local_asn == 0 {
            c.error(&bgp.meta, "local_asn", "ASN 0 is reserved");
        }
        let mut seen = HashMap::new();
        for (i, n) in bgp.neighbor.iter().enumerate() {
            c.unique(
                &mut seen,
                format!("BGP neighbor {}", n.address),
                &bgp.meta,
                &format!("neighbor[{i}].address"),
            );
            if n.asn == 0 {
                c.error(
                    &bgp.meta,
                    &format!("neighbor[{i}].asn"),
                    "ASN 0 is reserved",
                );
            }
        }
    }
}

/// Sections that are parsed and validated but whose dataplane is not built yet.
fn not_enforced_yet(c: &mut Checker) {
    let spec = c.spec;
    let mut note = |meta: &Meta, what: &str| {
        let at = spec.locate(meta);
        c.diags.push(Diagnostic::note(
            Some(at),
            format!("{what} is validated but not enforced yet"),
        ));
    };
    if let Some(b) = &spec.bgp {
        note(&b.meta, "[bgp]");
    }
    if let Some(e) = spec
        .encryption
        .as_ref()
        .filter(|e| e.mode != EncryptionMode::None)
    {
        note(&e.meta, "[encryption]");
    }
    for p in &spec.peers {
        note(&p.meta, &format!("[[peer]] {}", p.name));
    }
    for r in &spec.routes {
        note(&r.meta, &format!("[[route]] {}/{}", r.namespace, r.name));
    }
    for p in &spec.lb_pools {
        note(&p.meta, &format!("[[lb_pool]] {}", p.name));
    }
    for p in &spec.policies {
        let l7 = p.ingress.iter().any(|r| !r.http.is_empty())
            || p.egress
                .iter()
                .any(|r| !r.http.is_empty() || !r.dns.is_empty());
        let fqdn = p
            .egress
            .iter()
            .flat_map(|r| r.to.iter().flatten())
            .any(|peer| peer.fqdn.is_some() || peer.fqdn_pattern.is_some());
        if l7 || fqdn {
            note(
                &p.meta,
                &format!("L7/FQDN rules of policy {}/{}", p.namespace, p.name),
            );
        }
    }
    for e in &spec.endpoints {
        if e.egress_bandwidth.is_some() || e.ingress_bandwidth.is_some() {
            note(
                &e.meta,
                &format!("bandwidth limits of endpoint {}/{}", e.namespace, e.name),
            );
        }
    }
}
