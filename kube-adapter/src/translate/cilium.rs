// SPDX-License-Identifier: Apache-2.0
//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy → `[[policy]]`.
//!
//! Names: `cnp.NAME` / `ccnp.NAME` (`…NAME.N` for the N-th element of `specs`), so a
//! NetworkPolicy and a CiliumNetworkPolicy of the same name do not collide. A clusterwide
//! policy becomes one policy per namespace it can select (kldnet policies are namespaced).
//!
//! Cilium semantics kept: a rule with neither peers nor ports (`ingress: [{}]`) matches
//! nothing but still turns on default-deny; a rule with ports and no peers matches every
//! peer; `fromEndpoints` without a namespace label means the policy's namespace (CNP) or
//! every namespace (CCNP); deny rules also turn on default-deny for their direction.
//! What cannot be expressed is dropped **failing closed** (an allow rule is removed, its
//! direction stays default-deny) and reported.

use std::collections::BTreeMap;

use super::knp::cidr;
use super::selectors::{CiliumSel, NS_NAME, matches, selector_value, split};
use super::{Ctx, Outcome, Sections};
use crate::model::{
    CidrRule, CiliumPolicy, CiliumRule, CiliumRuleSpec, LabelSel, Object, PortRule,
};
use crate::toml_out::{Table, V};

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Ingress,
    IngressDeny,
    Egress,
    EgressDeny,
}

impl Dir {
    fn key(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::IngressDeny => "ingress_deny",
            Dir::Egress => "egress",
            Dir::EgressDeny => "egress_deny",
        }
    }
    fn cilium(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::IngressDeny => "ingressDeny",
            Dir::Egress => "egress",
            Dir::EgressDeny => "egressDeny",
        }
    }
    fn deny(self) -> bool {
        matches!(self, Dir::IngressDeny | Dir::EgressDeny)
    }
    fn egress(self) -> bool {
        matches!(self, Dir::Egress | Dir::EgressDeny)
    }
}

pub(super) fn policy(ctx: &Ctx, p: &CiliumPolicy, clusterwide: bool, s: &mut Sections) -> Outcome {
    let base = if clusterwide { "ccnp" } else { "cnp" };
    let name = &p.metadata.name;
    let specs: Vec<&CiliumRuleSpec> = p.spec.iter().chain(&p.specs).collect();
    if specs.is_empty() {
        return Err("neither spec nor specs".into());
    }
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (pname, at) = if specs.len() == 1 {
            (format!("{base}.{name}"), String::new())
        } else {
            (format!("{base}.{name}.{i}"), format!("specs[{i}]: "))
        };
        let mut spec_problems = Vec::new();
        let policies = translate_spec(
            ctx,
            spec,
            clusterwide,
            p.metadata.namespace.as_deref(),
            &pname,
            &mut spec_problems,
        )
        .map_err(|e| format!("{at}{e}"))?;
        problems.extend(spec_problems.into_iter().map(|e| format!("{at}{e}")));
        out.extend(policies);
    }
    s.policies.extend(out);
    Ok(problems)
}

fn translate_spec(
    ctx: &Ctx,
    spec: &CiliumRuleSpec,
    clusterwide: bool,
    namespace: Option<&str>,
    pname: &str,
    problems: &mut Vec<String>,
) -> Result<Vec<Table>, String> {
    let unknown: Vec<&String> = spec.other.keys().filter(|k| *k != "log").collect();
    if !unknown.is_empty() {
        return Err(format!("field(s) {unknown:?} have no kldnet equivalent"));
    }
    if spec.node_selector.is_some() {
        return Err(
            "host policy (nodeSelector): kldnet policies select endpoints, not nodes".into(),
        );
    }
    let subject = spec
        .endpoint_selector
        .as_ref()
        .ok_or("no endpointSelector")?;
    let subject =
        split(subject, &ctx.opts.cluster_name).map_err(|e| format!("endpointSelector: {e}"))?;
    if let Some(e) = &subject.entity {
        return Err(format!(
            "endpointSelector selects the reserved identity `{e}`: kldnet policies select endpoints"
        ));
    }
    if subject.never {
        return Err(format!(
            "endpointSelector requires a cluster other than `{}`: it selects nothing here",
            ctx.opts.cluster_name
        ));
    }
    if let Some(dd) = &spec.enable_default_deny
        && (dd.ingress == Some(false) || dd.egress == Some(false))
    {
        return Err(
            "enableDefaultDeny false: kldnet has no allow rules that leave default-deny off".into(),
        );
    }
    let namespaces = subject_namespaces(ctx, &subject, clusterwide, namespace)?;
    let selector = selector_value(&subject.pod).map_err(|e| format!("endpointSelector: {e}"))?;

    let mut t = Table::new();
    let mut types = Vec::new();
    let mut rule_sets: Vec<(&'static str, Vec<V>)> = Vec::new();
    for (dir, rules) in [
        (Dir::Ingress, &spec.ingress),
        (Dir::Egress, &spec.egress),
        (Dir::IngressDeny, &spec.ingress_deny),
        (Dir::EgressDeny, &spec.egress_deny),
    ] {
        let Some(rules) = rules.as_ref().filter(|r| !r.is_empty()) else {
            continue;
        };
        let ty = if dir.egress() { "egress" } else { "ingress" };
        if !types.contains(&V::from(ty)) {
            types.push(V::from(ty));
        }
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            out.extend(rule(ctx, dir, i, r, clusterwide, problems)?);
        }
        rule_sets.push((dir.key(), out));
    }
    if types.is_empty() {
        return Ok(Vec::new());
    }
    types.sort_by_key(|v| if *v == V::from("ingress") { 0 } else { 1 });
    t.set("selector", selector).set("policy_types", V::A(types));
    for (k, rules) in rule_sets {
        t.list(k, rules);
    }
    Ok(namespaces
        .into_iter()
        .map(|ns| {
            let mut p = Table::new();
            p.set("name", pname).set("namespace", ns);
            p.0.extend(t.0.iter().cloned());
            p
        })
        .collect())
}

/// The namespaces a policy's endpointSelector can select in.
fn subject_namespaces(
    ctx: &Ctx,
    subject: &CiliumSel,
    clusterwide: bool,
    namespace: Option<&str>,
) -> Result<Vec<String>, String> {
    let everything = LabelSel::default();
    let ns_sel = subject.ns.as_ref().unwrap_or(&everything);
    if !clusterwide {
        let ns = namespace.unwrap_or("default");
        let mut labels = ctx.namespaces.get(ns).cloned().unwrap_or_default();
        labels.insert(NS_NAME.into(), ns.into());
        if !matches(ns_sel, &labels) {
            return Err(format!(
                "endpointSelector requires a namespace other than the policy's own ({ns}): it selects nothing"
            ));
        }
        return Ok(vec![ns.to_string()]);
    }
    let mut candidates = ctx.namespaces.clone();
    // Namespaces named outright count even when the input holds no object of theirs.
    let named = ns_sel.match_labels.get(NS_NAME).into_iter().chain(
        ns_sel
            .match_expressions
            .iter()
            .filter(|e| e.key == NS_NAME && e.operator == "In")
            .flat_map(|e| &e.values),
    );
    for n in named {
        candidates
            .entry(n.clone())
            .or_insert_with(|| BTreeMap::from([(NS_NAME.to_string(), n.clone())]));
    }
    let out: Vec<String> = candidates
        .into_iter()
        .filter(|(_, labels)| matches(ns_sel, labels))
        .map(|(n, _)| n)
        .collect();
    if out.is_empty() {
        return Err("clusterwide policy: no namespace in the input matches its endpointSelector (kldnet policies are per namespace; watch mode knows every namespace)".into());
    }
    Ok(out)
}

fn entity_peer(e: &str) -> Option<V> {
    let mut t = Table::new();
    match e {
        "host" | "world" | "cluster" | "remote-node" | "all" => {
            t.set("entity", e);
        }
        "world-ipv4" => {
            t.set("cidr", "0.0.0.0/0");
        }
        "world-ipv6" => {
            t.set("cidr", "::/0");
        }
        _ => return None,
    }
    Some(V::T(t))
}

/// Why an entity is not translated.
fn entity_reason(e: &str) -> String {
    match e {
        "kube-apiserver" => {
            "entity kube-apiserver: kldnet does not know the API server's addresses".into()
        }
        "health" | "init" | "unmanaged" | "ingress" => {
            format!("entity {e}: kldnet has no such reserved identity")
        }
        other => format!("unknown entity `{other}`"),
    }
}

fn endpoint_peer(sel: &LabelSel, clusterwide: bool, cluster: &str) -> Result<Option<V>, String> {
    let c = split(sel, cluster)?;
    if c.never {
        return Ok(None);
    }
    if let Some(e) = &c.entity {
        return entity_peer(e).map(Some).ok_or_else(|| entity_reason(e));
    }
    let mut t = Table::new();
    match &c.ns {
        Some(ns) => {
            if c.pod != LabelSel::default() {
                t.set("selector", selector_value(&c.pod)?);
            }
            t.set("namespace_selector", selector_value(ns)?);
        }
        None => {
            t.set("selector", selector_value(&c.pod)?);
            if clusterwide {
                t.set("namespace_selector", Table::new());
            }
        }
    }
    Ok(Some(V::T(t)))
}

fn cidr_groups<'a>(ctx: &'a Ctx, r: &CidrRule) -> Vec<&'a crate::model::CidrGroup> {
    ctx.objects
        .iter()
        .filter_map(|o| match o {
            Object::CidrGroup(g) => Some(g),
            _ => None,
        })
        .filter(|g| {
            r.cidr_group_ref.as_deref() == Some(g.metadata.name.as_str())
                || r.cidr_group_selector
                    .as_ref()
                    .is_some_and(|s| matches(s, &g.metadata.labels))
        })
        .collect()
}

fn cidr_set_peers(ctx: &Ctx, r: &CidrRule, peers: &mut Vec<V>, dropped: &mut Vec<String>) {
    let mut bases = Vec::new();
    if let Some(c) = &r.cidr {
        bases.push(c.clone());
    }
    if r.cidr_group_ref.is_some() || r.cidr_group_selector.is_some() {
        let groups = cidr_groups(ctx, r);
        if groups.is_empty() {
            dropped.push(match &r.cidr_group_ref {
                Some(n) => format!("CiliumCIDRGroup {n} is not in the input"),
                None => "no CiliumCIDRGroup in the input matches cidrGroupSelector".into(),
            });
        }
        for g in groups {
            bases.extend(g.spec.external_cidrs.iter().cloned());
        }
    }
    let except: Vec<String> = r.except.iter().filter_map(|e| cidr(e).ok()).collect();
    if except.len() != r.except.len() {
        dropped.push(format!("except {:?} holds an invalid CIDR", r.except));
    }
    for b in bases {
        let Ok(base) = cidr(&b) else {
            dropped.push(format!("`{b}` is not a CIDR"));
            continue;
        };
        let bc: kldnet_config::types::Cidr = base.parse().expect("normalised CIDR");
        let mut t = Table::new();
        t.set("cidr", &base);
        // kldnet wants each except inside its cidr; others concern another block of the set.
        let ex: Vec<V> = except
            .iter()
            .filter(|e| e.parse().is_ok_and(|e| bc.covers(&e) && e != bc))
            .map(V::from)
            .collect();
        t.list("except", ex);
        peers.push(V::T(t));
    }
}

/// Port entries of one `toPorts` element.
fn ports(pr: &PortRule) -> Result<Vec<V>, String> {
    let mut out = Vec::new();
    for pp in &pr.ports {
        let protos: Vec<&str> = match pp.protocol.as_deref().unwrap_or("ANY") {
            "TCP" => vec!["tcp"],
            "UDP" => vec!["udp"],
            "SCTP" => vec!["sctp"],
            "ANY" => vec!["tcp", "udp", "sctp"],
            other => return Err(format!("protocol `{other}` has no kldnet equivalent")),
        };
        let port = pp.port.as_deref().unwrap_or("").trim();
        let mut base = Table::new();
        if port.is_empty() || port == "0" {
            if pp.protocol.as_deref().unwrap_or("ANY") == "ANY" {
                base.set("protocol", "any");
                out.push(V::T(base));
                continue;
            }
        } else if let Ok(n) = port.parse::<u16>() {
            base.set("port", n);
            if let Some(e) = pp.end_port.filter(|e| *e != i64::from(n) && *e != 0) {
                base.set(
                    "end_port",
                    u16::try_from(e).map_err(|_| format!("endPort {e} is not a port"))?,
                );
            }
        } else {
            base.set("name", port);
        }
        for p in protos {
            let mut t = base.clone();
            t.set("protocol", p);
            out.push(V::T(t));
        }
    }
    Ok(out)
}

/// One Cilium rule → kldnet rules (one per `toPorts` element, plus one for `icmps`).
fn rule(
    ctx: &Ctx,
    dir: Dir,
    i: usize,
    r: &CiliumRule,
    clusterwide: bool,
    problems: &mut Vec<String>,
) -> Result<Vec<V>, String> {
    let at = format!("{}[{i}]", dir.cilium());
    if let Some(k) = ["fromRequires", "toRequires"]
        .iter()
        .find(|k| r.other.contains_key(**k))
    {
        return Err(format!(
            "{at}: {k} narrows every rule that selects these endpoints; kldnet has no equivalent"
        ));
    }
    let fail = |problems: &mut Vec<String>, why: String| {
        problems.push(if dir.deny() {
            format!("{at} dropped: {why} (the deny is narrower than intended)")
        } else {
            format!("{at} dropped, failing closed: {why}")
        });
        Ok(Vec::new())
    };
    let (eps, cidrs, sets, ents) = if dir.egress() {
        (&r.to_endpoints, &r.to_cidr, &r.to_cidr_set, &r.to_entities)
    } else {
        (
            &r.from_endpoints,
            &r.from_cidr,
            &r.from_cidr_set,
            &r.from_entities,
        )
    };
    let wrong_side = if dir.egress() {
        r.from_endpoints.is_some()
            || r.from_cidr.is_some()
            || r.from_cidr_set.is_some()
            || r.from_entities.is_some()
    } else {
        r.to_endpoints.is_some()
            || r.to_cidr.is_some()
            || r.to_cidr_set.is_some()
            || r.to_entities.is_some()
            || r.to_fqdns.is_some()
    };
    if wrong_side {
        return fail(
            problems,
            format!("peers of the other direction in an {} rule", dir.cilium()),
        );
    }
    if let Some(k) = r.other.keys().next() {
        let why = match k.as_str() {
            "authentication" => "authentication (mutual auth) is not supported".to_string(),
            "toServices" => {
                "toServices is not translated (name the backends with toEndpoints)".to_string()
            }
            "fromNodes" | "toNodes" => {
                format!("{k}: kldnet peers are endpoints, CIDRs and entities")
            }
            "fromGroups" | "toGroups" => {
                format!("{k} (cloud provider groups) has no kldnet equivalent")
            }
            other => format!("field `{other}` has no kldnet equivalent"),
        };
        return fail(problems, why);
    }

    // Peers.
    let mut peers = Vec::new();
    let mut dropped = Vec::new();
    let mut has_l3 = false;
    for sel in eps.iter().flatten() {
        has_l3 = true;
        match endpoint_peer(sel, clusterwide, &ctx.opts.cluster_name) {
            Ok(Some(p)) => peers.push(p),
            Ok(None) => {}
            Err(e) => dropped.push(e),
        }
    }
    for c in cidrs.iter().flatten() {
        has_l3 = true;
        match cidr(c) {
            Ok(c) => {
                let mut t = Table::new();
                t.set("cidr", c);
                peers.push(V::T(t));
            }
            Err(e) => dropped.push(e),
        }
    }
    for set in sets.iter().flatten() {
        has_l3 = true;
        cidr_set_peers(ctx, set, &mut peers, &mut dropped);
    }
    for e in ents.iter().flatten() {
        has_l3 = true;
        match entity_peer(e) {
            Some(p) => peers.push(p),
            None => dropped.push(entity_reason(e)),
        }
    }
    if dir.egress() {
        for f in r.to_fqdns.iter().flatten() {
            has_l3 = true;
            if dir.deny() {
                dropped.push("toFQDNs in a deny rule".into());
                continue;
            }
            let mut t = Table::new();
            match (&f.match_name, &f.match_pattern) {
                (Some(n), _) => t.set("fqdn", n.trim_end_matches('.')),
                (None, Some(p)) => t.set("fqdn_pattern", p.trim_end_matches('.')),
                (None, None) => {
                    dropped.push("toFQDNs entry with neither matchName nor matchPattern".into());
                    continue;
                }
            };
            peers.push(V::T(t));
        }
    }
    for d in &dropped {
        problems.push(format!("{at}: peer left out: {d}"));
    }
    let has_l4 = r.to_ports.as_ref().is_some_and(|p| !p.is_empty())
        || r.icmps.as_ref().is_some_and(|p| !p.is_empty());
    if has_l3 && peers.is_empty() {
        if !dropped.is_empty() {
            return fail(problems, "none of its peers can be expressed".into());
        }
        return Ok(Vec::new()); // matches nothing here (e.g. another cluster's endpoints)
    }
    if !has_l3 && !has_l4 {
        return Ok(Vec::new()); // `{}`: Cilium's "select nothing", default-deny only
    }
    let peer_key = if dir.egress() { "to" } else { "from" };
    let with_peers = |t: &mut Table| {
        if has_l3 {
            t.set(peer_key, V::A(peers.clone()));
        }
    };

    let mut out = Vec::new();
    let to_ports = r.to_ports.clone().unwrap_or_default();
    if to_ports.is_empty() && r.icmps.as_ref().is_none_or(|v| v.is_empty()) {
        let mut t = Table::new();
        with_peers(&mut t);
        out.push(V::T(t));
    }
    for (j, pr) in to_ports.iter().enumerate() {
        let pat = format!("{at}.toPorts[{j}]");
        let dropped_entry = |problems: &mut Vec<String>, why: String| {
            problems.push(if dir.deny() {
                format!("{pat} dropped: {why} (the deny is narrower than intended)")
            } else {
                format!("{pat} dropped, failing closed: {why}")
            });
        };
        if let Some(k) = pr.other.keys().next() {
            dropped_entry(
                problems,
                format!("`{k}` (TLS interception, SNI, listeners) has no kldnet equivalent"),
            );
            continue;
        }
        let port_list = match ports(pr) {
            Ok(p) => p,
            Err(e) => {
                dropped_entry(problems, e);
                continue;
            }
        };
        let mut t = Table::new();
        with_peers(&mut t);
        t.list("ports", port_list);
        if let Some(l7) = &pr.rules {
            if dir.deny() {
                dropped_entry(problems, "L7 rules in a deny rule".into());
                continue;
            }
            if let Some(k) = l7.other.keys().next() {
                dropped_entry(
                    problems,
                    format!("L7 rules `{k}` have no kldnet equivalent (http and dns do)"),
                );
                continue;
            }
            match http_rules(l7.http.as_deref().unwrap_or_default()) {
                Ok(h) => {
                    t.list("http", h);
                }
                Err(e) => {
                    dropped_entry(problems, e);
                    continue;
                }
            }
            let dns = l7.dns.as_deref().unwrap_or_default();
            if !dns.is_empty() {
                if !dir.egress() {
                    dropped_entry(problems, "dns rules in an ingress rule".into());
                    continue;
                }
                let mut d = Vec::new();
                for f in dns {
                    let mut dt = Table::new();
                    match (&f.match_name, &f.match_pattern) {
                        (Some(n), _) => dt.set("match_name", n.trim_end_matches('.')),
                        (None, Some(p)) => dt.set("match_pattern", p.trim_end_matches('.')),
                        (None, None) => continue,
                    };
                    d.push(V::T(dt));
                }
                t.list("dns", d);
            }
        }
        out.push(V::T(t));
    }
    if let Some(icmps) = r.icmps.as_ref().filter(|v| !v.is_empty()) {
        if icmps.iter().any(|i| !i.fields.is_empty()) {
            problems.push(format!(
                "{at}.icmps: ICMP type filters widened to all ICMP (kldnet matches ICMP without types)"
            ));
        }
        let mut t = Table::new();
        with_peers(&mut t);
        let mut p = Table::new();
        p.set("protocol", "icmp");
        t.set("ports", V::A(vec![V::T(p)]));
        out.push(V::T(t));
    }
    Ok(out)
}

fn http_rules(rules: &[crate::model::HttpRule]) -> Result<Vec<V>, String> {
    let mut out = Vec::new();
    for h in rules {
        let mut headers: Vec<V> = h.headers.iter().map(V::from).collect();
        for (k, v) in &h.other {
            if k != "headerMatches" {
                return Err(format!("http field `{k}` has no kldnet equivalent"));
            }
            for m in v.as_array().into_iter().flatten() {
                let name = m.get("name").and_then(|n| n.as_str());
                let value = m.get("value").and_then(|n| n.as_str());
                if m.get("secret").is_some() || m.get("mismatch").is_some() || name.is_none() {
                    return Err(
                        "headerMatches with secrets or mismatch actions have no kldnet equivalent"
                            .into(),
                    );
                }
                headers.push(V::S(match value {
                    Some(v) => format!("{}: {v}", name.unwrap_or_default()),
                    None => name.unwrap_or_default().to_string(),
                }));
            }
        }
        let mut t = Table::new();
        t.opt("method", h.method.clone())
            .opt("path", h.path.clone())
            .opt("host", h.host.clone())
            .list("headers", headers);
        out.push(V::T(t));
    }
    Ok(out)
}
