// SPDX-License-Identifier: Apache-2.0
//! Every manifest of Cilium's connectivity test (`shared/testdata/cilium-connectivity`)
//! renders, or is reported per object with a reason; what is written validates.
//!
//! The manifests are Go templates (cilium-cli fills them in); [`expand`] fills them with
//! documentation addresses the way cilium-cli does, then the CLI renders them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/cilium-connectivity/manifests")
}

/// The template parameters cilium-cli passes (documentation addresses instead of real ones).
fn param(name: &str) -> Option<&'static str> {
    Some(match name {
        "TestNamespace" => "cilium-test",
        "ExternalTarget" => "one.one.one.one.",
        "ExternalOtherTarget" => "k8s.io.",
        "ExternalCIDRv4" => "198.51.100.0/24",
        "ExternalCIDRv6" => "2001:db8::/32",
        "ExternalIPv4" => "198.51.100.1",
        "ExternalIPv6" => "2001:db8::1",
        "ExternalOtherIPv4" => "198.51.100.2",
        "ExternalOtherIPv6" => "2001:db8::2",
        "ClusterNameLocal" => "default",
        "ClusterNameRemote" => "remote",
        "ExternalTargetCANamespace" => "kube-system",
        "ExternalTargetCAName" => "cabundle",
        "ExternalDeploymentPort" => "8080",
        "K8sCIDR" => "192.0.2.100/32",
        _ => return None,
    })
}

/// Range lists: each item is a map of fields; `{{.}}` is the `""` field.
fn list(expr: &str) -> Vec<BTreeMap<&'static str, &'static str>> {
    let one = |v| BTreeMap::from([("", v)]);
    match expr {
        ".NodeCIDRs" => vec![one("192.0.2.0/24")],
        ".ControlPlaneCIDRs" => vec![one("192.0.2.10/32")],
        ".NodesWithoutCiliumIPs" => vec![BTreeMap::from([("IP", "192.0.2.50"), ("Mask", "32")])],
        "." => vec![one("192.0.2.1/32")],
        other => panic!("unknown range list {other}"),
    }
}

enum Tok {
    Text(String),
    Action(String),
}

fn tokenize(t: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut rest = t;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let end = start + rest[start..].find("}}").expect("unclosed action");
        let mut inner = &rest[start + 2..end];
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        if let Some(i) = inner.strip_prefix('-') {
            inner = i;
            text = text.trim_end().to_string();
        }
        trim_next = false;
        if let Some(i) = inner.strip_suffix('-') {
            inner = i;
            trim_next = true;
        }
        out.push(Tok::Text(text));
        out.push(Tok::Action(inner.trim().to_string()));
        rest = &rest[end + 2..];
    }
    out.push(Tok::Text(if trim_next {
        rest.trim_start().to_string()
    } else {
        rest.to_string()
    }));
    out
}

fn eval(action: &str, item: Option<&BTreeMap<&str, &str>>) -> String {
    if let Some(item) = item {
        if action == "." {
            return item[""].to_string();
        }
        if let Some(f) = action.strip_prefix("$i.") {
            return item[f].to_string();
        }
    }
    if action.contains("generateDNSMatchPatternWithWildcard") {
        // cilium-cli derives a wildcard pattern from its fake external names.
        return match action.split('"').nth(1) {
            Some("any-prefix") => "*fake.example.com",
            Some("random") => "fa*e.example.com",
            _ => "*.fake.example.com",
        }
        .to_string();
    }
    if let Some(rest) = action.strip_prefix("trimSuffix ") {
        let (var, suffix) = rest.split_once(' ').unwrap();
        let v = param(var.trim_start_matches('.')).unwrap();
        return v
            .strip_suffix(suffix.trim_matches('"'))
            .unwrap_or(v)
            .to_string();
    }
    if let Some((var, f)) = action.split_once('|') {
        assert_eq!(f.trim(), "ipToCIDR");
        let v = param(var.trim().trim_start_matches('.')).unwrap();
        return format!("{v}/{}", if v.contains(':') { 128 } else { 32 });
    }
    param(action.trim_start_matches('.'))
        .unwrap_or_else(|| panic!("unknown template action {action}"))
        .to_string()
}

/// Fills in a cilium-cli manifest template.
fn expand(t: &str) -> String {
    let toks = tokenize(t);
    let mut out = String::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Text(s) => out.push_str(s),
            Tok::Action(a) if a.starts_with("range") => {
                let expr = a.trim_start_matches("range").trim();
                let expr = expr.split(":=").last().unwrap().trim();
                let end = (i..toks.len())
                    .find(|j| matches!(&toks[*j], Tok::Action(e) if e == "end"))
                    .unwrap();
                for item in list(expr) {
                    for t in &toks[i + 1..end] {
                        match t {
                            Tok::Text(s) => out.push_str(s),
                            Tok::Action(a) => out.push_str(&eval(a, Some(&item))),
                        }
                    }
                }
                i = end;
            }
            Tok::Action(a) => out.push_str(&eval(a, None)),
        }
        i += 1;
    }
    out
}

fn adapter() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kldnet-kube-adapter"))
}

#[test]
fn expander_fills_cilium_cli_templates() {
    assert_eq!(expand("a: {{.TestNamespace}}"), "a: cilium-test");
    assert_eq!(
        expand(r#"n-{{trimSuffix .ExternalTarget "."}}"#),
        "n-one.one.one.one"
    );
    assert_eq!(expand("{{ .ExternalIPv6 | ipToCIDR }}"), "2001:db8::1/128");
    assert_eq!(
        expand("to:\n{{- range .NodeCIDRs }}\n  - cidr: {{.}}\n{{- end }}\n"),
        "to:\n  - cidr: 192.0.2.0/24\n"
    );
}

#[test]
fn every_connectivity_manifest_renders_or_is_reported() {
    let src = manifests_dir();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let mut docs = 0;
    let mut names = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let text = expand(&std::fs::read_to_string(&p).unwrap());
        docs += text.matches("\nkind:").count() + usize::from(text.starts_with("kind:"));
        std::fs::write(input.join(p.file_name().unwrap()), text).unwrap();
        names.push(p);
    }
    assert!(names.len() >= 100, "{} manifests", names.len());
    let out = tmp.path().join("out");
    let r = Command::new(adapter())
        .args([
            "render",
            "-v",
            "-n",
            "cilium-test",
            "--cluster-name",
            "default",
            "-f",
        ])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    eprintln!("{}", stderr.lines().last().unwrap_or(""));
    // Some objects have no kldnet equivalent (egress gateways, mutual auth…): exit 3.
    assert_eq!(r.status.code(), Some(3), "{stderr}");
    // One verdict line per object (partial objects have one line per part left out).
    let objects: std::collections::BTreeSet<&str> = stderr
        .lines()
        .filter_map(|l| {
            let (obj, rest) = l.split_once(": ")?;
            ["translated", "partial: ", "skipped: ", "ignored: "]
                .iter()
                .any(|v| rest.starts_with(v))
                .then_some(obj)
        })
        .collect();
    let verdicts = stderr
        .lines()
        .filter(|l| {
            l.contains(": translated") || l.contains(": skipped: ") || l.contains(": ignored: ")
        })
        .count()
        + objects
            .iter()
            .filter(|o| stderr.contains(&format!("{o}: partial: ")))
            .count();
    assert!(!stderr.contains("invalid YAML"), "{stderr}");
    assert!(!stderr.contains("Document"), "{stderr}");
    // Every document has a verdict (duplicates across files are reported as such).
    assert!(
        verdicts >= docs,
        "{verdicts} verdicts for {docs} documents:\n{stderr}"
    );
    for l in stderr
        .lines()
        .filter(|l| l.contains(": skipped: ") || l.contains(": partial: "))
    {
        let why = l.rsplit_once(": ").unwrap().1;
        assert!(why.len() > 10, "reason too short: {l}");
    }
    // The kinds kldnet has no equivalent for are named as such.
    for kind in [
        "CiliumEgressGatewayPolicy",
        "CiliumLocalRedirectPolicy",
        "ClusterNetworkPolicy",
    ] {
        assert!(
            stderr.contains(&format!("{kind}/"))
                && stderr.contains(&format!("no equivalent of {kind}")),
            "{kind}: {stderr}"
        );
    }
    // Nothing the validator rejected, and what was written is a valid config dir.
    assert!(!stderr.contains("validation rejects"), "{stderr}");
    let (spec, diags) = kldnet_config::load_dirs(std::slice::from_ref(&out));
    assert_eq!(diags.errors(), 0, "{diags}");
    assert!(
        spec.policies.len() >= 80,
        "{} policies",
        spec.policies.len()
    );
}
