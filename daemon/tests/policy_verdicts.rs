// SPDX-License-Identifier: Apache-2.0
//! Compile-level policy verdicts: the 20 single-packet cases of kube-network-policies
//! (`../shared/testdata/kube-network-policies/packet_verdicts.yaml`), each translated
//! into a kldnet config dir, compiled offline and evaluated with `kldnet policy trace
//! --offline`'s code on the compiled maps (the datapath's own lookups). No root needed.
//!
//! Translation notes: `endPort: 65537` (upstream's out-of-range value) becomes 65535;
//! pods all live on this node, so both the egress side (source pod) and the ingress side
//! (destination pod) are enforced here, as the upstream evaluator does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kldnet::cli::policy::trace_offline;
use kldnet::compile::policy::trace::{TraceRequest, proto_from_name};
use serde_norway::Value;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/kube-network-policies/packet_verdicts.yaml")
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => panic!("not a scalar: {v:?}"),
    }
}

/// `{k: v}` → `{ "k" = "v" }`.
fn labels(v: &Value) -> String {
    let Some(m) = v.as_mapping() else {
        return "{}".into();
    };
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{:?} = {:?}", s(k), s(v)))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

fn selector(v: &Value) -> String {
    labels(v.get("matchLabels").unwrap_or(&Value::Null))
}

fn peer(p: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(sel) = p.get("podSelector") {
        parts.push(format!("selector = {}", selector(sel)));
    }
    if let Some(sel) = p.get("namespaceSelector") {
        parts.push(format!("namespace_selector = {}", selector(sel)));
    }
    if let Some(b) = p.get("ipBlock") {
        parts.push(format!("cidr = {:?}", s(&b["cidr"])));
        if let Some(ex) = b.get("except").and_then(|e| e.as_sequence()) {
            let ex: Vec<String> = ex.iter().map(|e| format!("{:?}", s(e))).collect();
            parts.push(format!("except = [{}]", ex.join(", ")));
        }
    }
    format!("{{ {} }}", parts.join(", "))
}

fn port(p: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(proto) = p.get("protocol") {
        parts.push(format!("protocol = {:?}", s(proto).to_lowercase()));
    }
    match p.get("port") {
        Some(Value::Number(n)) => parts.push(format!("port = {n}")),
        Some(Value::String(name)) => parts.push(format!("name = {name:?}")),
        _ => {}
    }
    if let Some(end) = p.get("endPort").and_then(|e| e.as_u64()) {
        parts.push(format!("end_port = {}", end.min(65535)));
    }
    format!("{{ {} }}", parts.join(", "))
}

fn rules(out: &mut String, kind: &str, peer_key: &str, rules: &Value) {
    for r in rules.as_sequence().into_iter().flatten() {
        let _ = writeln!(out, "[[policy.{kind}]]");
        if let Some(peers) = r.get(peer_key).and_then(|p| p.as_sequence()) {
            let peers: Vec<String> = peers.iter().map(peer).collect();
            let _ = writeln!(out, "{peer_key} = [{}]", peers.join(", "));
        }
        if let Some(ports) = r.get("ports").and_then(|p| p.as_sequence()) {
            let ports: Vec<String> = ports.iter().map(port).collect();
            let _ = writeln!(out, "ports = [{}]", ports.join(", "));
        }
    }
}

/// The kldnet TOML of one case.
fn config(doc: &Value, case: &Value) -> String {
    let mut out = String::from("[node]\nname = \"testnode\"\n\n");
    for (name, l) in doc["namespaces"].as_mapping().unwrap() {
        let _ = writeln!(
            out,
            "[[namespace]]\nname = {:?}\nlabels = {}\n",
            s(name),
            labels(l)
        );
    }
    for pod in case["pods"].as_sequence().unwrap() {
        let p = &doc["pods"][s(pod).as_str()];
        let _ = writeln!(
            out,
            "[[endpoint]]\nname = {:?}\nnamespace = {:?}\naddresses = [{:?}]\nlabels = {}\nports = [{{ name = \"http\", port = 80, protocol = \"tcp\" }}]\n",
            s(&p["name"]),
            s(&p["namespace"]),
            s(&p["ip"]),
            labels(&p["labels"])
        );
    }
    for name in case["policies"].as_sequence().unwrap() {
        let pol = &doc["policies"][s(name).as_str()];
        let spec = &pol["spec"];
        // Upstream reuses object names across fixtures; kldnet keys need them unique.
        let _ = writeln!(
            out,
            "[[policy]]\nname = {:?}\nnamespace = {:?}\nselector = {}",
            s(name).to_lowercase(),
            s(&pol["namespace"]),
            selector(&spec["podSelector"])
        );
        if let Some(types) = spec.get("policyTypes").and_then(|t| t.as_sequence()) {
            let t: Vec<String> = types
                .iter()
                .map(|t| format!("{:?}", s(t).to_lowercase()))
                .collect();
            let _ = writeln!(out, "policy_types = [{}]", t.join(", "));
        }
        rules(&mut out, "ingress", "from", &spec["ingress"]);
        rules(&mut out, "egress", "to", &spec["egress"]);
        out.push('\n');
    }
    out
}

#[test]
fn kube_network_policies_packet_verdicts() {
    let text = std::fs::read_to_string(testdata()).expect("read packet_verdicts.yaml");
    let doc: Value = serde_norway::from_str(&text).expect("parse yaml");
    let cases = doc["cases"].as_sequence().expect("cases");
    assert_eq!(cases.len(), 20, "upstream has 20 cases");
    let mut table = String::new();
    let mut failed = Vec::new();
    for case in cases {
        let name = s(&case["name"]);
        let dir = tempfile::tempdir().unwrap();
        let toml = config(&doc, case);
        std::fs::write(dir.path().join("case.toml"), &toml).unwrap();
        let pkt = &case["packet"];
        let (src, dst) = (s(&pkt["src"]), s(&pkt["dst"]));
        let (src_ip, _) = src.rsplit_once(':').unwrap();
        let (dst_ip, dst_port) = dst.rsplit_once(':').unwrap();
        let req = TraceRequest {
            from: Some(src_ip.to_string()),
            to: dst_ip.to_string(),
            proto: proto_from_name(&s(&pkt["proto"])).unwrap(),
            port: dst_port.parse().unwrap(),
            ..TraceRequest::default()
        };
        let want = case["expect"].as_bool().unwrap();
        let got = match trace_offline(&[dir.path().to_path_buf()], &req) {
            Ok(t) => t,
            Err(e) => panic!("{name}: {e}\nconfig:\n{toml}"),
        };
        let why: Vec<String> = got
            .steps
            .iter()
            .filter(|s| s.enforced)
            .map(|s| {
                format!(
                    "{} {}{}",
                    s.direction,
                    if s.allowed { "allow" } else { "deny" },
                    s.rule
                        .as_ref()
                        .map(|r| format!(" by {r}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let mark = if got.allowed == want { "ok " } else { "BAD" };
        let _ = writeln!(
            table,
            "{mark} {name:<55} {src:>22} -> {dst:<18} expect {:<5} got {:<5} [{}]",
            want,
            got.allowed,
            why.join("; ")
        );
        if got.allowed != want {
            failed.push(format!("{name}\nconfig:\n{toml}"));
        }
    }
    println!("{table}");
    assert!(
        failed.is_empty(),
        "verdicts differ:\n{table}\n{}",
        failed.join("\n")
    );
}
