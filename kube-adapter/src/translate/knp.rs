// SPDX-License-Identifier: Apache-2.0
//! networking.k8s.io/v1 NetworkPolicy → `[[policy]]`, field for field: podSelector,
//! policyTypes, ingress.from / egress.to (podSelector, namespaceSelector, ipBlock with
//! except) and ports (number or name, endPort, protocol).

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selectors::{NS_NAME, matches, selector_value, split};
use super::{Ctx, Outcome, Sections};
use crate::model::LabelSel;
use crate::toml_out::{Table, V};

/// A CIDR as kldnet wants it: host bits cleared (Kubernetes accepts `10.0.0.1/8` and means
/// `10.0.0.0/8`, as Go's `net.ParseCIDR` does).
pub(super) fn cidr(s: &str) -> Result<String, String> {
    let (addr, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: std::net::IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a CIDR"))?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = if len.is_empty() {
        max
    } else {
        len.parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{s}`: bad prefix length"))?
    };
    let bits: u128 = match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    // IPv4 sits in the top 32 bits, so one mask of the top `len` bits serves both families.
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    let net = bits & mask;
    let net_ip: std::net::IpAddr = if ip.is_ipv4() {
        std::net::Ipv4Addr::from((net >> 96) as u32).into()
    } else {
        std::net::Ipv6Addr::from(net).into()
    };
    Ok(format!("{net_ip}/{len}"))
}

/// A peer; `None` when it can match nothing here. Selectors get Cilium's label keys
/// (`io.kubernetes.pod.namespace`, `io.cilium.k8s.policy.cluster`…) as Cilium reads them.
fn peer(p: &NetworkPolicyPeer, ns: &str, cluster: &str) -> Result<Option<V>, String> {
    let mut t = Table::new();
    if let Some(b) = &p.ip_block {
        t.set("cidr", cidr(&b.cidr)?);
        let except: Result<Vec<V>, String> = b
            .except
            .iter()
            .flatten()
            .map(|e| cidr(e).map(V::S))
            .collect();
        t.list("except", except?);
        return Ok(Some(V::T(t)));
    }
    let pod = match &p.pod_selector {
        Some(ps) => {
            let c = split(&LabelSel::from(ps), cluster)?;
            if c.entity.is_some() {
                return Err("podSelector with reserved: labels has no kldnet equivalent".into());
            }
            if c.never {
                return Ok(None);
            }
            Some(c)
        }
        None => None,
    };
    let pod_ns = pod.as_ref().and_then(|c| c.ns.clone());
    let ns_sel = match (&p.namespace_selector, pod_ns) {
        (Some(n), extra) => {
            let mut n = LabelSel::from(n);
            if let Some(extra) = extra {
                n.match_labels.extend(extra.match_labels);
                n.match_expressions.extend(extra.match_expressions);
            }
            Some(n)
        }
        // Cilium scopes a podSelector-only peer to the policy's namespace; a namespace label
        // in matchLabels replaces that, one in matchExpressions narrows it.
        (None, Some(mut extra)) => {
            extra
                .match_labels
                .entry(NS_NAME.to_string())
                .or_insert_with(|| ns.to_string());
            Some(extra)
        }
        (None, None) => None,
    };
    if let Some(c) = &pod {
        t.set("selector", selector_value(&c.pod)?);
    }
    if let Some(n) = &ns_sel {
        t.set("namespace_selector", selector_value(n)?);
    }
    if t.is_empty() {
        return Err("a peer with no podSelector, namespaceSelector or ipBlock".into());
    }
    Ok(Some(V::T(t)))
}

/// A rule's peers: `None` = every peer; `Some([])` = the rule matches nothing.
fn peers(
    list: Option<&Vec<NetworkPolicyPeer>>,
    ns: &str,
    cluster: &str,
) -> Result<Option<Vec<V>>, String> {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for p in list {
        out.extend(peer(p, ns, cluster)?);
    }
    Ok(Some(out))
}

fn port(p: &NetworkPolicyPort) -> Result<V, String> {
    let mut t = Table::new();
    match &p.port {
        Some(IntOrString::Int(n)) => {
            let n = u16::try_from(*n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("port {n} is not a port"))?;
            t.set("port", n);
            if let Some(e) = p.end_port {
                let e = u16::try_from(e).map_err(|_| format!("endPort {e} is not a port"))?;
                if e != n {
                    t.set("end_port", e);
                }
            }
        }
        Some(IntOrString::String(name)) => {
            t.set("name", name);
        }
        None => {}
    }
    let proto = match p.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => "tcp",
        "UDP" => "udp",
        "SCTP" => "sctp",
        other => return Err(format!("unknown protocol `{other}`")),
    };
    t.set("protocol", proto);
    Ok(V::T(t))
}

pub(super) fn network_policy(ctx: &Ctx, np: &NetworkPolicy, s: &mut Sections) -> Outcome {
    let spec = np.spec.clone().unwrap_or_default();
    let ns = np.metadata.namespace.clone().unwrap_or_default();
    let cluster = ctx.opts.cluster_name.as_str();
    let subject = split(
        &LabelSel::from(&spec.pod_selector.clone().unwrap_or_default()),
        cluster,
    )
    .map_err(|e| format!("podSelector: {e}"))?;
    if subject.entity.is_some() || subject.never {
        return Err("podSelector selects no endpoint of this cluster".into());
    }
    if let Some(n) = &subject.ns {
        let mut labels = ctx.namespaces.get(&ns).cloned().unwrap_or_default();
        labels.insert(NS_NAME.into(), ns.clone());
        if !matches(n, &labels) {
            return Err(format!(
                "podSelector requires a namespace other than the policy's own ({ns}): it selects nothing"
            ));
        }
    }
    let mut t = Table::new();
    t.set("name", np.metadata.name.clone().unwrap_or_default())
        .set("namespace", &ns)
        .set("selector", selector_value(&subject.pod)?);
    let ingress = spec.ingress.clone().unwrap_or_default();
    let egress = spec.egress.clone().unwrap_or_default();
    // Kubernetes' default: Ingress always, Egress when there are egress rules.
    let types: Vec<String> = match &spec.policy_types {
        Some(t) => t.clone(),
        None if egress.is_empty() => vec!["Ingress".into()],
        None => vec!["Ingress".into(), "Egress".into()],
    };
    let mut pt = Vec::new();
    for ty in &types {
        match ty.as_str() {
            "Ingress" => pt.push(V::from("ingress")),
            "Egress" => pt.push(V::from("egress")),
            other => return Err(format!("unknown policyType `{other}`")),
        }
    }
    t.set("policy_types", V::A(pt));
    let mut rules = Vec::new();
    if types.iter().any(|t| t == "Ingress") {
        for r in &ingress {
            let mut rt = Table::new();
            match peers(r.from.as_ref(), &ns, cluster)? {
                None => {}
                Some(p) if p.is_empty() => continue, // matches nothing in this cluster
                Some(p) => {
                    rt.set("from", V::A(p));
                }
            }
            let ports: Vec<V> = r
                .ports
                .iter()
                .flatten()
                .map(port)
                .collect::<Result<_, _>>()?;
            rt.list("ports", ports);
            rules.push(V::T(rt));
        }
    }
    t.list("ingress", rules);
    let mut rules = Vec::new();
    if types.iter().any(|t| t == "Egress") {
        for r in &egress {
            let mut rt = Table::new();
            match peers(r.to.as_ref(), &ns, cluster)? {
                None => {}
                Some(p) if p.is_empty() => continue, // matches nothing in this cluster
                Some(p) => {
                    rt.set("to", V::A(p));
                }
            }
            let ports: Vec<V> = r
                .ports
                .iter()
                .flatten()
                .map(port)
                .collect::<Result<_, _>>()?;
            rt.list("ports", ports);
            rules.push(V::T(rt));
        }
    }
    t.list("egress", rules);
    s.policies.push(t);
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::cidr;

    #[test]
    fn cidrs_lose_host_bits_like_go_parse_cidr() {
        assert_eq!(cidr("10.0.0.1/8").unwrap(), "10.0.0.0/8");
        assert_eq!(cidr("192.0.2.7").unwrap(), "192.0.2.7/32");
        assert_eq!(cidr("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(cidr("2001:db8::1/32").unwrap(), "2001:db8::/32");
        assert!(cidr("10.0.0.0/33").is_err());
    }
}
