// SPDX-License-Identifier: Apache-2.0
//! Namespaces, Pods, Nodes, Services and EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kldnet_config::types::{Bandwidth, Cidr, check_label_key, check_label_value};

use super::selectors::{CILIUM_SA, NS_NAME};
use super::{Ctx, Outcome, Sections};
use crate::model::Object;
use crate::report::Status;
use crate::toml_out::{Table, V};

/// The label of an EndpointSlice that names its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation naming a pod's host-side interface, for CNIs that record it (kldnet otherwise
/// finds the interface by route lookup of the pod's address).
const INTERFACE_ANNOTATION: &str = "kldnet.io/interface";
/// Cilium's annotation carrying a node's WireGuard public key.
const WG_KEY_ANNOTATION: &str = "network.cilium.io/wg-pub-key";

/// Valid labels as a table; invalid ones are left out and listed in `problems`.
fn labels_table(labels: &BTreeMap<String, String>, problems: &mut Vec<String>) -> Table {
    let mut t = Table::new();
    for (k, v) in labels {
        match check_label_key(k).and_then(|()| check_label_value(k, v)) {
            Ok(()) => {
                t.set(k, v);
            }
            Err(e) => problems.push(format!("label left out: {e}")),
        }
    }
    t
}

fn protocol(p: Option<&str>) -> Result<&'static str, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok("tcp"),
        "UDP" => Ok("udp"),
        "SCTP" => Ok("sctp"),
        other => Err(format!("unknown protocol `{other}`")),
    }
}

fn port_u16(n: i32, what: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{what} {n} is not a port (1..=65535)"))
}

pub(super) fn namespace(n: &Namespace, s: &mut Sections) -> Outcome {
    let mut problems = Vec::new();
    let name = n.metadata.name.clone().unwrap_or_default();
    let mut labels = n.metadata.labels.clone().unwrap_or_default();
    // Implicit in kldnet (and always equal to the name in Kubernetes).
    labels.remove(NS_NAME);
    let mut t = Table::new();
    t.set("name", &name);
    let l = labels_table(&labels, &mut problems);
    if !l.is_empty() {
        t.set("labels", l);
    }
    s.namespaces.push(t);
    Ok(problems)
}

pub(super) fn pod(ctx: &Ctx, p: &Pod, s: &mut Sections) -> Outcome {
    let mut problems = Vec::new();
    let spec = p.spec.as_ref().ok_or("no spec")?;
    if spec.host_network == Some(true) {
        return Err("hostNetwork pod: it uses the node's addresses and has the host identity, so it is no endpoint of its own".into());
    }
    let status = p.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    if matches!(phase.as_str(), "Succeeded" | "Failed") {
        return Err(format!(
            "phase {phase}: the pod has ended and its address may belong to another pod now"
        ));
    }
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.clone())
        .collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.clone());
    }
    let mut addresses = Vec::new();
    for ip in &ips {
        match ip.parse::<IpAddr>() {
            Ok(a) if !addresses.contains(&V::from(a.to_string())) => {
                addresses.push(V::from(a.to_string()))
            }
            Ok(_) => {}
            Err(_) => problems.push(format!("address `{ip}` is not an IP address")),
        }
    }
    if addresses.is_empty() {
        return Err(format!(
            "no IP address yet (phase {phase}; status.podIPs is empty)"
        ));
    }
    let node = ctx.node_field(spec.node_name.as_deref())?;
    let mut labels = p.metadata.labels.clone().unwrap_or_default();
    // Cilium gives every pod its service account as a label; CiliumNetworkPolicies select on it.
    labels.insert(
        CILIUM_SA.into(),
        spec.service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
    );
    let mut ports = Vec::new();
    let mut names = BTreeSet::new();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .chain(&spec.containers);
    for c in containers {
        for cp in c.ports.iter().flatten() {
            if cp.host_port.is_some() {
                problems.push(format!(
                    "hostPort {} of container {} is not translated (kldnet has no host port mapping)",
                    cp.host_port.unwrap_or_default(),
                    c.name
                ));
            }
            let Some(name) = &cp.name else { continue };
            if !names.insert(name.clone()) {
                problems.push(format!(
                    "port name `{name}` appears twice; the first one is used"
                ));
                continue;
            }
            let port = port_u16(cp.container_port, "containerPort")?;
            let mut t = Table::new();
            t.set("name", name)
                .set("port", port)
                .set("protocol", protocol(cp.protocol.as_deref())?);
            ports.push(V::T(t));
        }
    }
    let mut t = Table::new();
    t.set("name", p.metadata.name.clone().unwrap_or_default())
        .set(
            "namespace",
            p.metadata.namespace.clone().unwrap_or_default(),
        )
        .opt("node", node)
        .set("addresses", V::A(addresses))
        .set("labels", labels_table(&labels, &mut problems))
        .list("ports", ports);
    let annotations = p.metadata.annotations.clone().unwrap_or_default();
    if let Some(i) = annotations.get(INTERFACE_ANNOTATION) {
        if !i.is_empty() && i.len() <= 15 && !i.contains(['/', ':', ' ']) {
            t.set("interface", i);
        } else {
            problems.push(format!(
                "annotation {INTERFACE_ANNOTATION} `{i}` is not an interface name"
            ));
        }
    }
    for (key, field) in [
        ("kubernetes.io/egress-bandwidth", "egress_bandwidth"),
        ("kubernetes.io/ingress-bandwidth", "ingress_bandwidth"),
    ] {
        if let Some(v) = annotations.get(key) {
            match v.parse::<Bandwidth>() {
                Ok(_) => {
                    t.set(field, v);
                }
                Err(e) => problems.push(format!("annotation {key} not translated: {e}")),
            }
        }
    }
    s.endpoints.push(t);
    Ok(problems)
}

/// The address other nodes reach `n` on: its first InternalIP, else its first ExternalIP.
pub(super) fn node_address(n: &Node) -> Option<IpAddr> {
    let addrs = n.status.as_ref()?.addresses.as_ref()?;
    ["InternalIP", "ExternalIP"].iter().find_map(|ty| {
        addrs
            .iter()
            .filter(|a| a.type_ == *ty)
            .find_map(|a| a.address.parse().ok())
    })
}

pub(super) fn node(ctx: &Ctx, n: &Node, s: &mut Sections) -> Outcome {
    let mut problems = Vec::new();
    let name = n.metadata.name.clone().unwrap_or_default();
    let address =
        node_address(n).ok_or("no InternalIP or ExternalIP address in status.addresses")?;
    let spec = n.spec.clone().unwrap_or_default();
    let mut cidrs: Vec<String> = spec.pod_cidrs.clone().unwrap_or_default();
    if cidrs.is_empty() {
        cidrs.extend(spec.pod_cidr.clone());
    }
    let mut endpoint_cidrs = Vec::new();
    for c in cidrs {
        match c.parse::<Cidr>() {
            Ok(c) if !endpoint_cidrs.contains(&V::from(c.to_string())) => {
                endpoint_cidrs.push(V::from(c.to_string()))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("pod CIDR left out: {e}")),
        }
    }
    let mut t = Table::new();
    t.set("name", &name).set("address", address.to_string());
    t.list("endpoint_cidrs", endpoint_cidrs);
    if ctx.opts.node.as_deref() == Some(name.as_str()) {
        s.node = Some(t);
        return Ok(problems);
    }
    let annotations = n.metadata.annotations.clone().unwrap_or_default();
    if let Some(k) = annotations.get(WG_KEY_ANNOTATION) {
        if k.len() == 44 && k.ends_with('=') {
            t.set("wireguard_public_key", k);
        } else {
            problems.push(format!(
                "annotation {WG_KEY_ANNOTATION} is not a WireGuard public key"
            ));
        }
    }
    s.peers.push(t);
    Ok(problems)
}

fn ip_list(v: &[String], what: &str, problems: &mut Vec<String>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in v {
        match a.parse::<IpAddr>() {
            Ok(ip) if !out.contains(&ip) => out.push(ip),
            Ok(_) => {}
            Err(_) => problems.push(format!("{what} `{a}` is not an IP address")),
        }
    }
    out
}

pub(super) fn service(ctx: &Ctx, svc: &Service, s: &mut Sections) -> Outcome {
    let mut problems = Vec::new();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Err("type ExternalName is a DNS alias (CNAME) without a virtual IP".into());
    }
    if !matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer") {
        return Err(format!("unknown service type `{ty}`"));
    }
    let mut cluster_ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if cluster_ips.is_empty() {
        cluster_ips.extend(spec.cluster_ip.clone());
    }
    if cluster_ips.iter().any(|ip| ip == "None") {
        return Err("headless service (clusterIP: None): DNS only, no virtual IP".into());
    }
    let addresses = ip_list(&cluster_ips, "cluster IP", &mut problems);
    let mut external = ip_list(
        &spec.external_ips.clone().unwrap_or_default(),
        "external IP",
        &mut problems,
    );
    if ty == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        for i in &ingress {
            match (&i.ip, &i.hostname) {
                (Some(ip), _) => {
                    for a in ip_list(std::slice::from_ref(ip), "LoadBalancer IP", &mut problems) {
                        if !external.contains(&a) {
                            external.push(a);
                        }
                    }
                }
                (None, Some(h)) => problems.push(format!(
                    "LoadBalancer ingress hostname `{h}` not translated (kldnet serves addresses)"
                )),
                (None, None) => {}
            }
        }
        if ingress.is_empty() {
            problems.push("no LoadBalancer address assigned yet (status.loadBalancer.ingress is empty): served on its cluster IP and node ports only".into());
        }
        if spec
            .load_balancer_source_ranges
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            problems.push("loadBalancerSourceRanges not enforced: kldnet has no per-service source filter (use a policy)".into());
        }
    }
    let node_ports_wanted = matches!(ty, "NodePort" | "LoadBalancer")
        && spec.allocate_load_balancer_node_ports != Some(false);

    let selector = spec.selector.clone().filter(|m| !m.is_empty());
    let slices: Vec<&EndpointSlice> = if selector.is_none() {
        ctx.objects
            .iter()
            .filter_map(|o| match o {
                Object::EndpointSlice(es)
                    if es.metadata.namespace.as_deref() == Some(ns.as_str())
                        && es
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(SERVICE_NAME_LABEL))
                            == Some(&name) =>
                {
                    Some(es)
                }
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };

    let mut ports = Vec::new();
    let mut any_node_port = false;
    let svc_ports = spec.ports.clone().unwrap_or_default();
    if svc_ports.is_empty() {
        return Err("no ports".into());
    }
    for sp in &svc_ports {
        let proto = protocol(sp.protocol.as_deref())?;
        let mut t = Table::new();
        t.opt("name", sp.name.clone().filter(|n| !n.is_empty()));
        t.set("port", port_u16(sp.port, "port")?);
        // Selector-less services: the slices say which port each backend listens on.
        let from_slices: BTreeSet<i32> = slices
            .iter()
            .flat_map(|es| es.ports.iter().flatten())
            .filter(|p| {
                p.name.as_deref().unwrap_or("") == sp.name.as_deref().unwrap_or("")
                    && protocol(p.protocol.as_deref()).ok() == Some(proto)
            })
            .filter_map(|p| p.port)
            .collect();
        if let Some(first) = from_slices.first() {
            if from_slices.len() > 1 {
                problems.push(format!(
                    "EndpointSlices disagree on the target port of port {}: {from_slices:?}; {first} is used",
                    sp.port
                ));
            }
            t.set("target_port", port_u16(*first, "targetPort")?);
        } else {
            match &sp.target_port {
                Some(IntOrString::Int(n)) if *n != sp.port => {
                    t.set("target_port", port_u16(*n, "targetPort")?);
                }
                Some(IntOrString::Int(_)) | None => {}
                Some(IntOrString::String(n)) => match n.parse::<i32>() {
                    Ok(num) => {
                        t.set("target_port", port_u16(num, "targetPort")?);
                    }
                    Err(_) if selector.is_none() && !slices.is_empty() => {
                        return Err(format!(
                            "named targetPort `{n}` of a service without selector, and no EndpointSlice names port `{}`",
                            sp.name.clone().unwrap_or_default()
                        ));
                    }
                    Err(_) => {
                        t.set("target_port", n);
                    }
                },
            }
        }
        t.set("protocol", proto);
        if node_ports_wanted {
            match sp.node_port {
                Some(np) => {
                    t.set("node_port", port_u16(np, "nodePort")?);
                    any_node_port = true;
                }
                None => problems.push(format!(
                    "port {}: no nodePort allocated yet (set by the API server)",
                    sp.port
                )),
            }
        }
        ports.push(V::T(t));
    }
    if addresses.is_empty() && external.is_empty() && !any_node_port {
        return Err("no cluster IP yet (spec.clusterIP is assigned by the API server) and no external IP or node port: nothing to serve".into());
    }

    let mut t = Table::new();
    t.set("name", &name).set("namespace", &ns);
    t.set(
        "type",
        if any_node_port {
            "NodePort"
        } else {
            "ClusterIP"
        },
    );
    t.list(
        "addresses",
        addresses.iter().map(|a| V::from(a.to_string())).collect(),
    );
    t.list(
        "external_ips",
        external.iter().map(|a| V::from(a.to_string())).collect(),
    );
    t.set("ports", V::A(ports));
    if let Some(sel) = &selector {
        let mut st = Table::new();
        for (k, v) in sel {
            check_label_key(k).and_then(|()| check_label_value(k, v))?;
            st.set(k, v);
        }
        t.set("selector", st);
    } else {
        let family_v4 = addresses.first().or(external.first()).map(IpAddr::is_ipv4);
        t.list(
            "backends",
            slice_backends(ctx, &slices, family_v4, &mut problems),
        );
    }
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        t.set("session_affinity", "client-ip");
        if let Some(secs) = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
        {
            t.set("affinity_timeout", format!("{secs}s"));
        }
    }
    if spec.external_traffic_policy.as_deref() == Some("Local") {
        t.set("external_traffic_policy", "local");
    }
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        t.set("internal_traffic_policy", "local");
    }
    let labels = labels_table(
        &svc.metadata.labels.clone().unwrap_or_default(),
        &mut problems,
    );
    if !labels.is_empty() {
        t.set("labels", labels);
    }
    s.services.push(t);
    Ok(problems)
}

/// Backends of a selector-less service from its EndpointSlices: ready → active, serving
/// and terminating → terminating, not serving → left out (as kube-proxy does).
fn slice_backends(
    ctx: &Ctx,
    slices: &[&EndpointSlice],
    family_v4: Option<bool>,
    problems: &mut Vec<String>,
) -> Vec<V> {
    let mut out: BTreeMap<IpAddr, Table> = BTreeMap::new();
    for es in slices {
        let slice = es.metadata.name.clone().unwrap_or_default();
        if es.address_type == "FQDN" {
            problems.push(format!(
                "EndpointSlice {slice}: FQDN endpoints not translated"
            ));
            continue;
        }
        for ep in &es.endpoints {
            let c = ep.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(ready);
            let terminating = c.terminating.unwrap_or(false);
            let state = if ready && !terminating {
                "active"
            } else if serving {
                "terminating"
            } else {
                continue;
            };
            for a in &ep.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    problems.push(format!("EndpointSlice {slice}: `{a}` is not an IP address"));
                    continue;
                };
                if family_v4.is_some_and(|v4| v4 != ip.is_ipv4()) {
                    problems.push(format!(
                        "EndpointSlice {slice}: backend {ip} left out: not the IP family of the service's first address"
                    ));
                    continue;
                }
                let mut t = Table::new();
                t.set("address", ip.to_string());
                if state != "active" {
                    t.set("state", state);
                }
                match ctx.node_field(ep.node_name.as_deref()) {
                    Ok(n) => {
                        t.opt("node", n);
                    }
                    Err(e) => problems.push(format!("backend {ip}: node left out: it {e}")),
                }
                out.entry(ip).or_insert(t);
            }
        }
    }
    out.into_values().map(V::T).collect()
}

/// EndpointSlices are read through their Service; their own entry says how.
pub(super) fn endpoint_slice_status(ctx: &Ctx, es: &EndpointSlice) -> Status {
    let ns = es.metadata.namespace.as_deref();
    let Some(svc) = es
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return Status::Skipped(format!(
            "no {SERVICE_NAME_LABEL} label: belongs to no Service"
        ));
    };
    let owner = ctx.objects.iter().find_map(|o| match o {
        Object::Service(s)
            if s.metadata.namespace.as_deref() == ns
                && s.metadata.name.as_deref() == Some(svc.as_str()) =>
        {
            Some(s)
        }
        _ => None,
    });
    match owner {
        None => Status::Skipped(format!("its Service {svc} is not in the input")),
        Some(s)
            if s.spec
                .as_ref()
                .and_then(|sp| sp.selector.as_ref())
                .is_some_and(|m| !m.is_empty()) =>
        {
            Status::Ignored(format!(
                "Service {svc} has a selector: kldnet picks its backends from the endpoints by label"
            ))
        }
        Some(_) => Status::Ignored(format!("translated as the backends of Service {svc}")),
    }
}
