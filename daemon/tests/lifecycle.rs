// SPDX-License-Identifier: Apache-2.0
//! End-to-end tests of the daemon lifecycle: start, status, reload (file watch, SIGHUP,
//! `kldnet reload`), bad configs that must change nothing, restarts that keep traffic
//! flowing, cleanup, and interfaces that appear after the config.
//!
//! Every test runs its own sandbox (netns workloads, cgroup, private bpffs, config dir) and
//! needs root; without root each test prints why and passes. Run:
//! `cargo test -p kldnet --test lifecycle -- --test-threads=2`.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use kldnet_testkit::skip_unless_root;
use serde_json::Value;

/// Status, reload of an unchanged config and the list commands against the example config.
#[test]
fn starts_serves_status_and_reloads() -> Result<()> {
    if skip_unless_root("starts_serves_status_and_reloads") {
        return Ok(());
    }
    let sbx = example_sandbox("lc-status")?;
    let daemon = start(&sbx)?;

    let st = status(&sbx);
    let progs = programs(&st);
    let mut checks: Vec<(String, String, bool)> = vec![
        ("state".into(), "running".into(), st["state"] == "running"),
        (
            "generation".into(),
            ">= 1".into(),
            st["generation"].as_u64().unwrap_or(0) >= 1,
        ),
        (
            "kernel.bpffs".into(),
            "true".into(),
            st["kernel"]["bpffs"] == true,
        ),
        (
            "maps kld_lb4_svc entries".into(),
            "> 0".into(),
            map_entries(&st, "kld_lb4_svc").unwrap_or(0) > 0,
        ),
        (
            "program kld_sock4_connect".into(),
            "on the sandbox cgroup".into(),
            progs.iter().any(|(p, t)| {
                p == "kld_sock4_connect" && t.ends_with(&*sbx.cgroup_dir().to_string_lossy())
            }),
        ),
    ];
    for (_, ifname, _) in EXAMPLE_WORKLOADS {
        let target = format!("tc {ifname}-ingress");
        checks.push((
            format!("program kld_from_ep on {ifname}"),
            target.clone(),
            progs.iter().any(|(p, t)| p == "kld_from_ep" && *t == target),
        ));
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.2)
        .map(|(what, want, _)| format!("  {what}: expected {want}"))
        .collect();
    assert!(
        failed.is_empty(),
        "status --json does not match:\n{}\ngot:\n{}",
        failed.join("\n"),
        serde_json::to_string_pretty(&st)?
    );

    // Unchanged config: a reload is a no-op that says so.
    let gen_before = generation(&st);
    let r = reload(&sbx);
    assert!(
        r.code == 0 && r.stdout.contains("no changes"),
        "kldnet reload of an unchanged config: expected exit 0 and \"no changes\", got {r}"
    );
    let gen_after = generation(&status(&sbx));
    assert_eq!(
        gen_after, gen_before,
        "a no-op reload must not bump the generation"
    );

    // The list commands parse and hold the example's objects.
    let eps = cli(&sbx, &["endpoint", "list", "-o", "json"]);
    assert_eq!(eps.code, 0, "endpoint list: {eps}");
    let eps = eps.json();
    let ep = |ns: &str, name: &str| -> Option<Value> {
        eps.as_array()?
            .iter()
            .find(|e| e["namespace"] == ns && e["name"] == name)
            .cloned()
    };
    for (name, _, addr) in EXAMPLE_WORKLOADS {
        let ns = if *name == "intruder" {
            "staging"
        } else {
            "production"
        };
        let e = ep(ns, name).unwrap_or_else(|| panic!("endpoint {ns}/{name} missing in {eps:#}"));
        assert_eq!(e["local"], true, "{ns}/{name} local: {e}");
        assert_eq!(e["addresses"][0], *addr, "{ns}/{name} address: {e}");
    }
    let remote = ep("production", "reports-1").expect("remote endpoint production/reports-1");
    assert_eq!(remote["local"], false, "reports-1 is on host-b: {remote}");
    for name in ["backend-1", "backend-2"] {
        let e = ep("production", name).unwrap();
        assert_eq!(
            e["identity"], 1234,
            "production/{name} has the pinned identity 1234: {e}"
        );
    }

    let ids = cli(&sbx, &["identity", "list", "-o", "json"]);
    assert_eq!(ids.code, 0, "identity list: {ids}");
    let ids = ids.json();
    let pinned = ids
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == 1234))
        .unwrap_or_else(|| panic!("identity 1234 missing in {ids:#}"));
    let labels = pinned["labels"].to_string();
    assert!(
        pinned["namespace"] == "production"
            && labels.contains("backend")
            && labels.contains("api"),
        "identity 1234: expected production app=backend,tier=api, got {pinned}"
    );

    let svcs = cli(&sbx, &["service", "list", "-o", "json"]);
    assert_eq!(svcs.code, 0, "service list: {svcs}");
    let svcs = svcs.json();
    let backend = svcs
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["namespace"] == "production" && s["name"] == "backend")
        })
        .unwrap_or_else(|| panic!("service production/backend missing in {svcs:#}"));
    let bes: Vec<&str> = backend["backends"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["address"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        bes,
        ["10.244.1.21:8080/tcp", "10.244.1.22:8080/tcp"],
        "production/backend backends"
    );
    assert!(
        backend["frontends"].to_string().contains("10.96.120.45:80"),
        "production/backend frontend: {backend}"
    );
    ensure_log(
        daemon.log().contains("datapath loaded"),
        "daemon log mentions the datapath",
        &daemon,
    )?;
    Ok(())
}
