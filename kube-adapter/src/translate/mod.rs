// SPDX-License-Identifier: Apache-2.0
//! Kubernetes objects → kldnet TOML sections. Pure: the same objects and options give the
//! same text, byte for byte (objects are processed sorted by kind, namespace and name).

mod cilium;
mod infra;
mod knp;
mod selectors;
mod workloads;

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ObjRef, Object};
use crate::report::{Report, Status};
use crate::toml_out::{Table, section};

/// Translation settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// This node's name (Kubernetes `nodeName`). Its pods get no `node`; its Node object
    /// becomes `[node]`. `None`: every Node becomes a `[[peer]]`.
    pub node: Option<String>,
    /// The cluster name Cilium selectors compare `io.cilium.k8s.policy.cluster` with.
    pub cluster_name: String,
    /// Write `[node]` from this node's Node object (off when /etc/kldnet has its own).
    pub node_section: bool,
    /// Write `[bgp]` from a CiliumBGPPeeringPolicy (off when /etc/kldnet has its own).
    pub bgp_section: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            node: None,
            cluster_name: "default".into(),
            node_section: true,
            bgp_section: true,
        }
    }
}

/// The translated sections, one text per output file (key: file stem suffix).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// `nodes`, `namespaces`, `endpoints`, `services`, `policies`, `bgp` → TOML text;
    /// sections with nothing to say are absent.
    pub files: BTreeMap<&'static str, String>,
    pub report: Report,
    /// Per file: (first line, last line, object) of each section written, lines counted
    /// from 1 in `files`' text; maps a diagnostic back to the object it is about.
    pub origins: BTreeMap<&'static str, Vec<(usize, usize, ObjRef)>>,
}

/// The first line of every file written.
pub const HEADER: &str = "# Written by kldnet-kube-adapter from Kubernetes objects: do not edit (changes are overwritten).\n\n";

/// What the objects of one input set know about each other.
pub(crate) struct Ctx<'a> {
    pub opts: &'a Options,
    /// Namespace name → labels (implicit `kubernetes.io/metadata.name` added).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Names of Node objects.
    pub nodes: BTreeSet<String>,
    pub objects: &'a [Object],
}

impl Ctx<'_> {
    /// The `node` value for a workload on `node_name`: none for this node.
    pub fn node_field(&self, node_name: Option<&str>) -> Result<Option<String>, String> {
        match node_name {
            None => Ok(None),
            Some(n) if self.opts.node.as_deref() == Some(n) => Ok(None),
            Some(n) if self.nodes.contains(n) => Ok(Some(n.to_string())),
            Some(n) => Err(format!(
                "runs on node `{n}`, which has no Node object (kldnet needs it as a [[peer]])"
            )),
        }
    }
}

/// Collected sections.
#[derive(Default)]
pub(crate) struct Sections {
    pub node: Option<Table>,
    pub peers: Vec<Table>,
    pub namespaces: Vec<Table>,
    pub endpoints: Vec<Table>,
    pub services: Vec<Table>,
    pub policies: Vec<Table>,
    pub bgp: Option<Table>,
    pub lb_pools: Vec<Table>,
    /// The object each table came from, per section (same order as the tables).
    origins: BTreeMap<&'static str, Vec<ObjRef>>,
}

impl Sections {
    /// Records `r` as the origin of every table added since the last call.
    fn tag(&mut self, r: &ObjRef) {
        let lens = [
            ("node", usize::from(self.node.is_some())),
            ("peer", self.peers.len()),
            ("namespace", self.namespaces.len()),
            ("endpoint", self.endpoints.len()),
            ("service", self.services.len()),
            ("policy", self.policies.len()),
            ("bgp", usize::from(self.bgp.is_some())),
            ("lb_pool", self.lb_pools.len()),
        ];
        for (k, n) in lens {
            let o = self.origins.entry(k).or_default();
            while o.len() < n {
                o.push(r.clone());
            }
        }
    }

    fn origin(&self, section: &str, i: usize) -> ObjRef {
        self.origins[section][i].clone()
    }
}

/// The result of translating one object.
pub(crate) type Outcome = Result<Vec<String>, String>;

/// Translates a set of objects. Duplicates (same kind, namespace and name) keep the first.
pub fn translate(objects: &[Object], opts: &Options) -> Output {
    let mut sorted: Vec<(ObjRef, &Object)> = objects.iter().map(|o| (o.obj_ref(), o)).collect();
    sorted.sort_by(|a, b| {
        kind_rank(&a.0.kind)
            .cmp(&kind_rank(&b.0.kind))
            .then(a.0.cmp(&b.0))
    });

    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut nodes = BTreeSet::new();
    for (r, o) in &sorted {
        if let Some(ns) = &r.namespace {
            namespaces.entry(ns.clone()).or_default();
        }
        match o {
            Object::Namespace(n) => {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                namespaces.entry(r.name.clone()).or_default().extend(labels);
            }
            // Only nodes that become a [[peer]] (or [node]) can be named by endpoints.
            Object::Node(n) if workloads::node_address(n).is_some() => {
                nodes.insert(r.name.clone());
            }
            _ => {}
        }
    }
    for (name, labels) in namespaces.iter_mut() {
        labels.insert("kubernetes.io/metadata.name".into(), name.clone());
    }
    let ctx = Ctx {
        opts,
        namespaces,
        nodes,
        objects,
    };

    let mut s = Sections::default();
    let mut report = Report::default();
    let mut seen = BTreeSet::new();
    for (r, o) in sorted {
        if !seen.insert(r.clone()) {
            report.push(
                r,
                Status::Skipped("defined twice in the input; the first one is used".into()),
            );
            continue;
        }
        let outcome: Result<Status, String> = match o {
            Object::Namespace(n) => workloads::namespace(n, &mut s).map(partial),
            Object::Pod(p) => workloads::pod(&ctx, p, &mut s).map(partial),
            Object::Node(_)
                if opts.node.as_deref() == Some(r.name.as_str()) && !opts.node_section =>
            {
                Ok(Status::Ignored(
                    "this node: [node] is left to /etc/kldnet (--no-node-section)".into(),
                ))
            }
            Object::Node(n) => workloads::node(&ctx, n, &mut s).map(partial),
            Object::BgpPeering(_) if !opts.bgp_section => Ok(Status::Ignored(
                "[bgp] is left to /etc/kldnet (--no-bgp-section)".into(),
            )),
            Object::Service(svc) => workloads::service(&ctx, svc, &mut s).map(partial),
            Object::EndpointSlice(es) => Ok(workloads::endpoint_slice_status(&ctx, es)),
            Object::NetworkPolicy(np) => knp::network_policy(&ctx, np, &mut s).map(partial),
            Object::Cnp(p) => cilium::policy(&ctx, p, false, &mut s).map(partial),
            Object::Ccnp(p) => cilium::policy(&ctx, p, true, &mut s).map(partial),
            Object::CidrGroup(_) => Ok(Status::Ignored(
                "used where a policy references it (cidrGroupRef, cidrGroupSelector)".into(),
            )),
            Object::LbPool(p) => infra::lb_pool(p, &mut s).map(partial),
            Object::BgpPeering(b) => match infra::bgp_not_here(&ctx, b) {
                Some(why) => Ok(Status::Ignored(why)),
                None => infra::bgp(&ctx, b, &mut s).map(partial),
            },
            Object::Other { obj, network } => Ok(if *network {
                Status::Skipped(format!("kldnet has no equivalent of {}", obj.kind))
            } else {
                Status::Ignored(format!("{} is not a networking kind", obj.kind))
            }),
        };
        s.tag(&r);
        report.push(
            r,
            match outcome {
                Ok(st) => st,
                Err(why) => Status::Skipped(why),
            },
        );
    }
    let (files, origins) = emit(&s);
    Output {
        files,
        report,
        origins,
    }
}

fn partial(problems: Vec<String>) -> Status {
    if problems.is_empty() {
        Status::Translated
    } else {
        Status::Partial(problems)
    }
}

/// Processing order: what others refer to first (namespaces, nodes), so reports read top-down.
fn kind_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "Node" => 1,
        "Pod" => 2,
        "Service" => 3,
        "EndpointSlice" => 4,
        "CiliumCIDRGroup" => 5,
        "NetworkPolicy" => 6,
        "CiliumNetworkPolicy" => 7,
        "CiliumClusterwideNetworkPolicy" => 8,
        "CiliumLoadBalancerIPPool" => 9,
        "CiliumBGPPeeringPolicy" => 10,
        _ => 11,
    }
}

type Origins = BTreeMap<&'static str, Vec<(usize, usize, ObjRef)>>;

fn emit(s: &Sections) -> (BTreeMap<&'static str, String>, Origins) {
    let mut files = BTreeMap::new();
    let mut origins: Origins = BTreeMap::new();
    let mut text = String::new();
    let mut spans = Vec::new();
    let add = |text: &mut String,
               spans: &mut Vec<(usize, usize, ObjRef)>,
               header: &str,
               array: bool,
               t: &Table,
               sub: &[&str],
               origin: ObjRef| {
        let first = text.lines().count() + 1;
        section(text, header, array, t, sub);
        spans.push((first, text.lines().count(), origin));
    };
    let mut flush =
        |name: &'static str, text: &mut String, spans: &mut Vec<(usize, usize, ObjRef)>| {
            if !text.is_empty() {
                files.insert(name, std::mem::take(text));
                origins.insert(name, std::mem::take(spans));
            }
        };
    if let Some(n) = &s.node {
        add(
            &mut text,
            &mut spans,
            "node",
            false,
            n,
            &[],
            s.origin("node", 0),
        );
    }
    for (i, p) in s.peers.iter().enumerate() {
        add(
            &mut text,
            &mut spans,
            "peer",
            true,
            p,
            &[],
            s.origin("peer", i),
        );
    }
    flush("nodes", &mut text, &mut spans);
    for (i, n) in s.namespaces.iter().enumerate() {
        add(
            &mut text,
            &mut spans,
            "namespace",
            true,
            n,
            &[],
            s.origin("namespace", i),
        );
    }
    flush("namespaces", &mut text, &mut spans);
    for (i, e) in s.endpoints.iter().enumerate() {
        add(
            &mut text,
            &mut spans,
            "endpoint",
            true,
            e,
            &[],
            s.origin("endpoint", i),
        );
    }
    flush("endpoints", &mut text, &mut spans);
    for (i, e) in s.services.iter().enumerate() {
        add(
            &mut text,
            &mut spans,
            "service",
            true,
            e,
            &[],
            s.origin("service", i),
        );
    }
    flush("services", &mut text, &mut spans);
    for (i, p) in s.policies.iter().enumerate() {
        let sub = ["ingress", "egress", "ingress_deny", "egress_deny"];
        add(
            &mut text,
            &mut spans,
            "policy",
            true,
            p,
            &sub,
            s.origin("policy", i),
        );
    }
    flush("policies", &mut text, &mut spans);
    if let Some(b) = &s.bgp {
        add(
            &mut text,
            &mut spans,
            "bgp",
            false,
            b,
            &["neighbor", "advertisement"],
            s.origin("bgp", 0),
        );
    }
    for (i, p) in s.lb_pools.iter().enumerate() {
        add(
            &mut text,
            &mut spans,
            "lb_pool",
            true,
            p,
            &[],
            s.origin("lb_pool", i),
        );
    }
    flush("bgp", &mut text, &mut spans);
    (files, origins)
}
