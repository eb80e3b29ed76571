// SPDX-License-Identifier: Apache-2.0
//! The web UI at `[flows].ui`: a live service map (workloads and identities as nodes, flows
//! as edges, green forwarded / red dropped) and a filterable flow table.
//!
//! Everything is embedded in the binary (no external assets, no CDN). The page carries the
//! current map and flows inline, so it renders without a round trip, then polls
//! `/api/graph` and `/api/flows` (filters applied by the daemon, as `kldnet observe` does).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::flows::model::Flow;
use crate::flows::{FlowQuery, Shared};
use crate::metrics::http::{self, Handler, Reply};

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Flows the table shows at most.
const TABLE_ROWS: u64 = 200;

/// A node of the service map.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub label: String,
    pub namespace: String,
    /// workload | identity | service | address
    pub kind: String,
}

/// An edge: every non-reply flow from `source` to `target` with one verdict.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Edge {
    pub source: String,
    pub target: String,
    /// FORWARDED, DROPPED, TRANSLATED …
    pub verdict: String,
    pub count: u64,
    /// Services the flows went through (`namespace/name`).
    pub services: Vec<String>,
    /// Drop reasons seen (Hubble names).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

fn node_of(f: &Flow, source: bool) -> Node {
    let (peer, ip) = if source {
        (f.src.as_deref(), f.src_ip())
    } else {
        (f.dst.as_deref(), f.dst_ip())
    };
    match peer {
        Some(p) if !p.name.is_empty() => Node {
            id: p.workload.to_string(),
            label: p.name.clone(),
            namespace: p.namespace.clone(),
            kind: "workload".into(),
        },
        Some(p) if p.labels.iter().any(|l| l.starts_with("reserved:")) => {
            let l = p
                .labels
                .iter()
                .find(|l| l.starts_with("reserved:"))
                .cloned()
                .unwrap_or_default();
            Node {
                id: l.clone(),
                label: l,
                namespace: String::new(),
                kind: "identity".into(),
            }
        }
        Some(p) => Node {
            id: format!("identity:{}", p.identity),
            label: format!("identity {} ({})", p.identity, p.labels.join(",")),
            namespace: p.namespace.clone(),
            kind: "identity".into(),
        },
        None => match (&f.service, source) {
            (Some(s), false) => Node {
                id: format!("service:{}/{}", s.namespace, s.name),
                label: format!("svc {}", s.name),
                namespace: s.namespace.clone(),
                kind: "service".into(),
            },
            _ => Node {
                id: ip.to_string(),
                label: ip.to_string(),
                namespace: String::new(),
                kind: "address".into(),
            },
        },
    }
}

/// The service map of the flows in the store.
pub fn graph<'a>(flows: impl Iterator<Item = &'a Flow>) -> Graph {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String, &'static str), Edge> = BTreeMap::new();
    for f in flows {
        // Requests only (replies would double the edges), and a flow between two local
        // workloads once: where it leaves the source, not again where it arrives.
        let arrival = f.ev.r#type == kldnet_bpf::abi::EVENT_TRACE
            && f.ev.reason == kldnet_bpf::abi::TRACE_TO_EP
            && f.src.as_ref().is_some_and(|p| p.id != 0);
        if f.is_reply() || arrival {
            continue;
        }
        let (s, d) = (node_of(f, true), node_of(f, false));
        let verdict = f.verdict_name();
        let e = edges
            .entry((s.id.clone(), d.id.clone(), verdict))
            .or_insert_with(|| Edge {
                source: s.id.clone(),
                target: d.id.clone(),
                verdict: verdict.to_string(),
                count: 0,
                services: Vec::new(),
                reasons: Vec::new(),
            });
        e.count += 1;
        if let Some(svc) = &f.service {
            let n = format!("{}/{}", svc.namespace, svc.name);
            if !e.services.contains(&n) {
                e.services.push(n);
            }
        }
        if f.drop_reason() != 0 {
            let r = crate::flows::hubble::drop_reason_name(f.drop_reason()).to_string();
            if !e.reasons.contains(&r) {
                e.reasons.push(r);
            }
        }
        nodes.entry(s.id.clone()).or_insert(s);
        nodes.entry(d.id.clone()).or_insert(d);
    }
    Graph {
        nodes: nodes.into_values().collect(),
        edges: edges.into_values().collect(),
    }
}

/// `/api/flows` query parameters → an observe query (same names as the CLI flags).
fn query_of(q: &str) -> FlowQuery {
    let mut fq = FlowQuery {
        last: Some(TABLE_ROWS),
        ..Default::default()
    };
    for (k, v) in http::query_pairs(q) {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "last" => fq.last = v.parse().ok().map(|n: u64| n.min(10_000)),
            "namespace" => fq.namespace.push(v),
            "pod" => fq.pod.push(v),
            "verdict" => fq.verdict.push(v),
            "protocol" => fq.protocol.push(v),
            "ip" => fq.ip.push(v),
            "label" => fq.label.push(v),
            "type" => fq.event_type.push(v),
            "service" => fq.service.push(v),
            "drop_reason_desc" => fq.drop_reason_desc.push(v),
            "port" => {
                if let Ok(p) = v.parse() {
                    fq.port.push(p)
                }
            }
            _ => {}
        }
    }
    fq
}

fn flows_json(shared: &Shared, q: FlowQuery) -> Result<String, String> {
    let filter = crate::flows::Filter::new(q)?;
    let limit = filter.query().last.map(|n| n as usize);
    let flows = shared.store.lock().expect("lock").matching(&filter, limit);
    let lines: Vec<_> = flows.iter().rev().map(Flow::to_hubble).collect();
    serde_json::to_string(&lines).map_err(|e| e.to_string())
}

fn graph_json(shared: &Shared) -> String {
    let store = shared.store.lock().expect("lock");
    serde_json::to_string(&graph(store.iter())).unwrap_or_else(|_| "{}".into())
}

/// The page with the current data inline (`</` escaped so it cannot close the script).
fn index(shared: &Shared) -> String {
    let data = format!(
        "{{\"node\":{},\"graph\":{},\"flows\":{}}}",
        serde_json::to_string(&*shared.snapshot().node).unwrap_or_default(),
        graph_json(shared),
        flows_json(shared, query_of("")).unwrap_or_else(|_| "[]".into())
    )
    .replace("</", "<\\/");
    INDEX.replace("{{DATA}}", &data)
}

/// The UI's HTTP handler.
pub fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |path: String, query: String| {
        let shared = shared.clone();
        Box::pin(async move {
            match path.as_str() {
                "/" | "/index.html" => Reply::ok("text/html; charset=utf-8", index(&shared)),
                "/app.js" => Reply::ok("text/javascript; charset=utf-8", APP_JS),
                "/app.css" => Reply::ok("text/css; charset=utf-8", APP_CSS),
                "/api/graph" => Reply::ok("application/json", graph_json(&shared)),
                "/api/flows" => match flows_json(&shared, query_of(&query)) {
                    Ok(j) => Reply::ok("application/json", j),
                    Err(e) => Reply::bad_request(e),
                },
                "/api/status" => Reply::ok(
                    "application/json",
                    serde_json::to_string(&shared.status()).unwrap_or_default(),
                ),
                _ => Reply::not_found(),
            }
        })
    })
}
