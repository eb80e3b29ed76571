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

/// A service file for the test service `production/echo` at 10.96.77.7:80 with explicit
/// backends on port 8080.
fn echo_service(backends: &[&str]) -> String {
    let bes: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\", port = 8080 }}"))
        .collect();
    format!(
        "[[service]]\nname = \"echo\"\nnamespace = \"production\"\naddresses = [\"10.96.77.7\"]\n\
         ports = [{{ port = 80, protocol = \"tcp\" }}]\nbackends = [{}]\n",
        bes.join(", ")
    )
}

const ECHO_VIP: &str = "10.96.77.7:80";

/// Backend addresses of service `ns/name` in `kldnet service list -o json`, if listed.
fn service_backends(sbx: &kldnet_testkit::Sandbox, ns: &str, name: &str) -> Option<Vec<String>> {
    let out = cli(sbx, &["service", "list", "-o", "json"]);
    let v = out.json();
    let s = v
        .as_array()?
        .iter()
        .find(|s| s["namespace"] == ns && s["name"] == name)?
        .clone();
    Some(
        s["backends"]
            .as_array()?
            .iter()
            .filter_map(|b| b["address"].as_str().map(str::to_string))
            .collect(),
    )
}

/// A new file in the config dir is applied by the file watcher alone; removing a backend
/// stops new connections to it quickly.
#[test]
fn file_change_is_applied_without_signal() -> Result<()> {
    if skip_unless_root("file_change_is_applied_without_signal") {
        return Ok(());
    }
    let sbx = example_sandbox("lc-watch")?;
    let daemon = start(&sbx)?;
    let _servers = serve_tcp(&sbx, &["backend-1", "backend-2"], 8080)?;

    let written = Instant::now();
    sbx.write_config("zz-echo.toml", &echo_service(&["10.244.1.21", "10.244.1.22"]))?;
    let seen = poll(Duration::from_secs(2), || {
        service_backends(&sbx, "production", "echo")
    });
    let Some((bes, _)) = seen else {
        panic!(
            "production/echo not in `service list` 2 s after the file was written\n{}",
            kldnet_testkit::tail(&daemon.log(), 30)
        );
    };
    let visible_after = written.elapsed();
    assert_eq!(
        bes,
        ["10.244.1.21:8080/tcp", "10.244.1.22:8080/tcp"],
        "echo backends"
    );
    println!("new service file visible in `service list` after {visible_after:?}");

    let p = probe_tcp(&sbx, "frontend-1", ECHO_VIP, 20, 1000);
    assert!(
        p.all_ok() && p.count("backend-1") > 0 && p.count("backend-2") > 0,
        "20 connections to {ECHO_VIP}: expected all ok, spread over backend-1 and backend-2; got {}",
        p.raw
    );

    // Drop backend-1: new connections must stop going there.
    let written = Instant::now();
    sbx.write_config("zz-echo.toml", &echo_service(&["10.244.1.22"]))?;
    let mut rounds = 0;
    let clean = poll(Duration::from_secs(3), || {
        rounds += 1;
        let p = probe_tcp(&sbx, "frontend-1", ECHO_VIP, 20, 1000);
        (p.all_ok() && p.count("backend-2") == 20).then_some(p)
    });
    let latency = written.elapsed();
    let Some((_, _)) = clean else {
        panic!(
            "after removing backend-1, connections still reach it (or fail) 3 s later ({rounds} rounds)\n{}",
            kldnet_testkit::tail(&daemon.log(), 30)
        );
    };
    println!(
        "backend removal → 20/20 new connections on the remaining backend after {latency:?} ({rounds} probe rounds)"
    );
    assert!(
        latency < Duration::from_secs(1),
        "backend removal took effect after {latency:?}: expected < 1 s"
    );
    // And it stays that way.
    for _ in 0..3 {
        let p = probe_tcp(&sbx, "frontend-1", ECHO_VIP, 20, 1000);
        assert!(
            p.all_ok() && p.count("backend-1") == 0,
            "removed backend-1 must get no new connections: {}",
            p.raw
        );
    }
    // The example's own service was not disturbed.
    let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 10, 1000);
    assert!(p.all_ok(), "{BACKEND_VIP} still serves: {}", p.raw);
    Ok(())
}

/// SIGHUP reloads: a change the file watcher cannot see (the target of a symlink in the
/// config dir, as config-management tools and mounted ConfigMaps do) is picked up on SIGHUP.
#[test]
fn sighup_reloads() -> Result<()> {
    if skip_unless_root("sighup_reloads") {
        return Ok(());
    }
    let sbx = example_sandbox("lc-sighup")?;
    let mut daemon = start(&sbx)?;
    let _servers = serve_tcp(&sbx, &["backend-1", "backend-2"], 8080)?;

    // The real file lives outside the watched dir; the config dir holds a symlink to it.
    let outside = sbx.dir().join("managed");
    std::fs::create_dir_all(&outside)?;
    let target = outside.join("echo.toml");
    let write_target = |contents: &str| -> Result<()> {
        let tmp = outside.join(".echo.tmp");
        std::fs::write(&tmp, contents)?;
        std::fs::rename(&tmp, &target)?;
        Ok(())
    };
    write_target(&echo_service(&["10.244.1.21"]))?;
    std::os::unix::fs::symlink(&target, sbx.config_dir().join("zz-echo.toml"))?;
    // Creating the symlink is a change in the dir: the watcher applies it.
    let seen = poll(Duration::from_secs(2), || {
        service_backends(&sbx, "production", "echo")
    });
    assert_eq!(
        seen.map(|s| s.0),
        Some(vec!["10.244.1.21:8080/tcp".to_string()]),
        "production/echo after creating the symlink"
    );
    let st = status(&sbx);
    let gen_before = generation(&st);

    // Change the target: invisible to the watcher.
    write_target(&echo_service(&["10.244.1.22"]))?;
    std::thread::sleep(Duration::from_millis(500));
    let gen_quiet = generation(&status(&sbx));
    assert_eq!(
        gen_quiet, gen_before,
        "precondition: changing a symlink's target outside the config dir is not seen by the \
         watcher (else this test cannot tell SIGHUP from the watcher)"
    );

    let hup = Instant::now();
    daemon.send_signal(libc::SIGHUP)?;
    let bumped = poll(Duration::from_secs(2), || {
        let g = generation(&status(&sbx));
        (g > gen_before).then_some(g)
    });
    let Some((gen_after, _)) = bumped else {
        panic!(
            "generation still {gen_before} 2 s after SIGHUP\n{}",
            kldnet_testkit::tail(&daemon.log(), 30)
        );
    };
    println!(
        "SIGHUP: generation {gen_before} → {gen_after} after {:?}",
        hup.elapsed()
    );
    let st = status(&sbx);
    assert_eq!(st["state"], "running", "state after SIGHUP: {st:#}");
    assert_eq!(st["last_reload"]["ok"], true, "last reload ok: {st:#}");
    assert_eq!(
        service_backends(&sbx, "production", "echo"),
        Some(vec!["10.244.1.22:8080/tcp".to_string()]),
        "production/echo after SIGHUP"
    );
    let p = probe_tcp(&sbx, "frontend-1", ECHO_VIP, 10, 1000);
    assert!(
        p.all_ok() && p.count("backend-2") == 10,
        "after SIGHUP, {ECHO_VIP} goes to backend-2 only: {}",
        p.raw
    );
    assert!(
        daemon.log().contains("SIGHUP"),
        "daemon log names the SIGHUP reload"
    );
    Ok(())
}
