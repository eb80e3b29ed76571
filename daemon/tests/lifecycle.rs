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
            progs
                .iter()
                .any(|(p, t)| p == "kld_from_ep" && *t == target),
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
        assert_eq!(
            e["ingress_enforced"], true,
            "production/{name} is selected by an ingress policy: {e}"
        );
        assert!(
            e["policies"]
                .as_array()
                .is_some_and(|p| p.iter().any(|n| n == "production/backend-ingress")),
            "production/{name} lists production/backend-ingress: {e}"
        );
    }
    let table = cli(&sbx, &["endpoint", "list"]);
    assert!(
        table.stdout.contains("POLICY (ingress)") && table.stdout.contains("Enabled"),
        "endpoint list shows enforcement: {table}"
    );

    let ids = cli(&sbx, &["identity", "list", "-o", "json"]);
    assert_eq!(ids.code, 0, "identity list: {ids}");
    let ids = ids.json();
    let pinned = ids
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == 1234))
        .unwrap_or_else(|| panic!("identity 1234 missing in {ids:#}"));
    let labels = pinned["labels"].to_string();
    assert!(
        pinned["namespace"] == "production" && labels.contains("backend") && labels.contains("api"),
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
    sbx.write_config(
        "zz-echo.toml",
        &echo_service(&["10.244.1.21", "10.244.1.22"]),
    )?;
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

/// One bad configuration: a file added next to the good example files.
struct BadCase {
    what: &'static str,
    file: &'static str,
    contents: &'static str,
}

const BAD_CASES: &[BadCase] = &[
    BadCase {
        what: "TOML syntax error",
        file: "zz-syntax.toml",
        contents: "[[service]\nname = \"x\"\n",
    },
    BadCase {
        what: "half-written file, truncated mid-table",
        file: "zz-half.toml",
        contents: "[[service]]\nname = \"half\"\nnamespace = \"production\"\naddresses = [\"10.96.9.9\"]\n\
                   ports = [{ port = 80, target_port = 80",
    },
    BadCase {
        what: "unknown key",
        file: "zz-unknown-key.toml",
        contents: "[[service]]\nname = \"typo\"\nnamespace = \"production\"\nadresses = [\"10.96.9.9\"]\n\
                   ports = [{ port = 80 }]\nselector = { app = \"backend\" }\n",
    },
    BadCase {
        what: "bad CIDR",
        file: "zz-bad-cidr.toml",
        contents: "[[lb_pool]]\nname = \"broken\"\ncidrs = [\"198.51.100.0/33\"]\n",
    },
    BadCase {
        what: "duplicate service name across two files",
        file: "zz-dup-service.toml",
        contents: "[[service]]\nname = \"backend\"\nnamespace = \"production\"\naddresses = [\"10.96.9.9\"]\n\
                   ports = [{ port = 80 }]\nselector = { app = \"backend\" }\n",
    },
    BadCase {
        what: "VIP overlap with production/backend",
        file: "zz-vip-overlap.toml",
        contents: "[[service]]\nname = \"thief\"\nnamespace = \"production\"\naddresses = [\"10.96.120.45\"]\n\
                   ports = [{ port = 80 }]\nselector = { app = \"frontend\" }\n",
    },
    BadCase {
        what: "route naming a service that does not exist",
        file: "zz-dangling-route.toml",
        contents: "[[route]]\nname = \"dangling\"\nnamespace = \"production\"\nservice = \"nope\"\nport = 80\n",
    },
    BadCase {
        what: "endpoint on an unknown node",
        file: "zz-unknown-node.toml",
        contents: "[[endpoint]]\nname = \"ghost\"\nnamespace = \"production\"\nnode = \"host-z\"\n\
                   addresses = [\"10.244.2.99\"]\n",
    },
    BadCase {
        what: "wrong type",
        file: "zz-wrong-type.toml",
        contents: "[[service]]\nname = \"typed\"\nnamespace = \"production\"\naddresses = [\"10.96.9.9\"]\n\
                   ports = [{ port = \"eighty\" }]\nselector = { app = \"backend\" }\n",
    },
    BadCase {
        what: "duplicate pinned identity id",
        file: "zz-dup-identity.toml",
        contents: "[[identity]]\nid = 1234\nnamespace = \"production\"\nlabels = { app = \"other\" }\n",
    },
];

/// True when `line` is `PATH:LINE:COL: error: …` with PATH ending in one of `files`.
fn error_line_names(line: &str, files: &[String]) -> bool {
    let Some((loc, _)) = line.split_once(": error: ") else {
        return false;
    };
    let mut parts = loc.rsplitn(3, ':');
    let (Some(col), Some(ln), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    col.parse::<u32>().is_ok()
        && ln.parse::<u32>().is_ok()
        && files
            .iter()
            .any(|f| path == f || path.ends_with(&format!("/{f}")))
}

/// State the daemon must keep while a bad config sits in its dir.
struct Baseline {
    maps: MapBytes,
    generation: u64,
}

/// With the bad `files` in place: reload fails naming them, status is degraded, maps are
/// byte-identical, traffic works; then `remove` them and the daemon recovers.
fn check_rejected(
    sbx: &kldnet_testkit::Sandbox,
    base: &Baseline,
    what: &str,
    files: &[String],
) -> Result<()> {
    let r = reload(sbx);
    let named = r.stdout.lines().find(|l| error_line_names(l, files));
    println!("[{what}] {}", named.unwrap_or("-"));
    assert!(
        r.code == 1 && named.is_some(),
        "[{what}] kldnet reload: expected exit 1 and a `FILE:LINE:COL: error:` line naming one of {files:?}; got {r}"
    );
    let st = status(sbx);
    let last = &st["last_reload"];
    let diags = last["diagnostics"].to_string();
    assert!(
        st["state"] == "degraded"
            && last["ok"] == false
            && files.iter().any(|f| diags.contains(f.as_str()))
            && generation(&st) == base.generation,
        "[{what}] status: expected state degraded, last_reload.ok false with the error, generation {}; got state {} ok {} generation {} diagnostics {diags}",
        base.generation,
        st["state"],
        last["ok"],
        st["generation"]
    );
    let now = dump_maps(sbx, STATE_MAPS)?;
    let d = diff_maps(&base.maps, &now);
    assert!(
        d.is_empty(),
        "[{what}] maps changed although the reload failed:\n{d}"
    );
    let p = probe_tcp(sbx, "frontend-1", BACKEND_VIP, 3, 1000);
    assert!(
        p.all_ok(),
        "[{what}] traffic to {BACKEND_VIP} while degraded: {}",
        p.raw
    );
    Ok(())
}

fn check_recovered(sbx: &kldnet_testkit::Sandbox, base: &Baseline, what: &str) -> Result<()> {
    let r = reload(sbx);
    assert!(
        r.code == 0,
        "[{what}] reload after removing the bad file: expected exit 0, got {r}"
    );
    let st = status(sbx);
    assert_eq!(
        st["state"], "running",
        "[{what}] state after recovery: {st:#}"
    );
    let d = diff_maps(&base.maps, &dump_maps(sbx, STATE_MAPS)?);
    assert!(d.is_empty(), "[{what}] maps changed after recovery:\n{d}");
    Ok(())
}

/// A bad config in any form is rejected as a whole: the error names the file, status says
/// degraded, the maps keep every byte, traffic keeps flowing; removing it recovers.
#[test]
fn bad_config_keeps_serving_state_byte_identical() -> Result<()> {
    if skip_unless_root("bad_config_keeps_serving_state_byte_identical") {
        return Ok(());
    }
    let sbx = example_sandbox("lc-badcfg")?;
    let daemon = start(&sbx)?;
    let _servers = serve_tcp(&sbx, &["backend-1", "backend-2"], 8080)?;
    let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 10, 1000);
    assert!(p.all_ok(), "traffic before the bad configs: {}", p.raw);

    let base = Baseline {
        maps: dump_maps(&sbx, STATE_MAPS)?,
        generation: generation(&status(&sbx)),
    };
    let sizes: Vec<String> = base
        .maps
        .iter()
        .map(|(m, e)| format!("{m}={}", e.len()))
        .collect();
    println!("baseline maps: {}", sizes.join(" "));
    assert!(
        !base.maps["kld_lb4_svc"].is_empty(),
        "baseline kld_lb4_svc is empty"
    );

    for case in BAD_CASES {
        sbx.write_config(case.file, case.contents)?;
        check_rejected(&sbx, &base, case.what, &[case.file.to_string()])?;
        sbx.remove_config(case.file)?;
        check_recovered(&sbx, &base, case.what)?;
    }
    println!("{} hand-written bad configs rejected", BAD_CASES.len());

    // The config crate's bad-input corpus, each case next to the good example files.
    let corpus = corpus_dir();
    let mut cases: Vec<_> = match std::fs::read_dir(&corpus) {
        Ok(d) => d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    cases.sort();
    let (mut fed, mut skipped) = (0, 0);
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expected = std::fs::read_to_string(case.join("expected.txt")).unwrap_or_default();
        if expected.trim().is_empty() {
            skipped += 1;
            continue;
        }
        let mut tomls: Vec<_> = std::fs::read_dir(case)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        tomls.sort();
        // A broken guard file stays in place while the case's files arrive one by one, so
        // the watcher never sees a partial (and possibly valid) set of them.
        let guard = "zz-0-guard.toml";
        sbx.write_config(guard, "[[broken\n")?;
        let mut files = Vec::new();
        for t in &tomls {
            let file = format!(
                "zz-corpus-{name}-{}",
                t.file_name().unwrap().to_string_lossy()
            );
            sbx.write_config(&file, &std::fs::read_to_string(t)?)?;
            files.push(file);
        }
        sbx.remove_config(guard)?;
        check_rejected(&sbx, &base, &format!("corpus {name}"), &files)?;
        for f in &files {
            sbx.remove_config(f)?;
        }
        check_recovered(&sbx, &base, &format!("corpus {name}"))?;
        fed += 1;
    }
    println!(
        "corpus {}: {fed} cases rejected with maps unchanged, {skipped} skipped (empty expected.txt)",
        corpus.display()
    );
    let st = status(&sbx);
    assert_eq!(
        generation(&st),
        base.generation,
        "no bad config may bump the generation"
    );
    ensure_log(
        daemon.log().contains("keeps serving"),
        "daemon log says the previous generation keeps serving",
        &daemon,
    )?;
    Ok(())
}

/// Tally of the background probe loop.
#[derive(Debug, Default)]
struct LoopTally {
    attempts: u64,
    failures: Vec<String>,
    /// Attempt start times (since the loop started) with their outcome.
    timeline: Vec<(Duration, bool)>,
}

/// Probes `target` from a workload with one new TCP connection every ~20 ms until `stop`
/// is set or `limit` passes. Each attempt is its own `kldnet probe` process in the
/// workload's netns and the LB cgroup, so socket LB translates it.
fn probe_loop(
    netns: String,
    cgroup_procs: std::path::PathBuf,
    target: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> std::thread::JoinHandle<LoopTally> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut t = LoopTally::default();
        let args = [
            "probe",
            "connect",
            "tcp",
            target,
            "--count",
            "1",
            "--timeout-ms",
            "1000",
            "--json",
        ];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < limit {
            let at = started.elapsed();
            let out =
                kldnet_testkit::command_in(&netns, kldnet(), &args, Some(cgroup_procs.as_path()))
                    .output();
            t.attempts += 1;
            let ok = match &out {
                Ok(o) => o.status.success(),
                Err(_) => false,
            };
            if !ok {
                let why = match out {
                    Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                t.failures.push(format!("at {at:?}: {why}"));
            }
            t.timeline.push((at, ok));
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    })
}

/// `kldnet bpf lb list -o json` entries as (key, value), sorted.
fn lb_entries(sbx: &kldnet_testkit::Sandbox) -> Vec<(String, String)> {
    let out = cli(sbx, &["bpf", "lb", "list", "-o", "json"]);
    assert_eq!(out.code, 0, "bpf lb list: {out}");
    let mut v: Vec<(String, String)> = out
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap_or("").to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Stopping (SIGTERM) or killing (SIGKILL) the daemon does not interrupt service traffic:
/// maps and links stay pinned; the next daemon adopts them with no changes.
#[test]
fn restart_keeps_traffic_and_adopts_state() -> Result<()> {
    if skip_unless_root("restart_keeps_traffic_and_adopts_state") {
        return Ok(());
    }
    let sbx = example_sandbox("lc-restart")?;
    let mut daemon = start(&sbx)?;
    let _servers = serve_tcp(&sbx, &["backend-1", "backend-2"], 8080)?;
    let lb_before = lb_entries(&sbx);
    let maps_before = dump_maps(&sbx, STATE_MAPS)?;
    let backends_before: Vec<_> = lb_before
        .iter()
        .filter(|(k, _)| k.starts_with("backend "))
        .cloned()
        .collect();
    assert!(
        backends_before.len() >= 2,
        "backends in bpf lb list: {lb_before:?}"
    );

    let frontend = workload(&sbx, "frontend-1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let looper = probe_loop(
        frontend.netns.clone(),
        sbx.cgroup_dir().join("cgroup.procs"),
        BACKEND_VIP,
        stop.clone(),
        Duration::from_secs(15),
    );
    std::thread::sleep(Duration::from_millis(500));

    let mut windows = Vec::new();
    // Two ways down: a clean stop, and a crash.
    for (how, sig) in [("SIGTERM", libc::SIGTERM), ("SIGKILL", libc::SIGKILL)] {
        let down = started.elapsed();
        let t0 = Instant::now();
        if sig == libc::SIGTERM {
            let st = daemon.sigterm_and_wait()?;
            assert!(st.success(), "kldnetd exit after SIGTERM: {st}");
        } else {
            daemon.kill9()?;
        }
        assert!(
            pin_dir(&sbx).join("kld_lb4_svc").exists(),
            "maps stay pinned after {how}"
        );
        std::thread::sleep(Duration::from_secs(1));
        daemon = start(&sbx)?;
        let gap = t0.elapsed();
        let up = started.elapsed();
        windows.push((how, down, up));
        let st = status(&sbx);
        let last = &st["last_reload"];
        println!(
            "{how}: daemon down for {gap:?} (incl. 1 s wait); first reload after restart: {} in {} µs",
            last["summary"], last["duration_us"]
        );
        assert!(
            last["ok"] == true && last["summary"] == "no changes" && st["state"] == "running",
            "after {how} + restart: expected first reload ok with \"no changes\" (adopted state = desired), got state {} last_reload {last}",
            st["state"]
        );
        let lb_after = lb_entries(&sbx);
        let backends_after: Vec<_> = lb_after
            .iter()
            .filter(|(k, _)| k.starts_with("backend "))
            .cloned()
            .collect();
        assert_eq!(
            backends_after, backends_before,
            "backend ids after {how} + restart (expected = before)"
        );
        assert_eq!(
            lb_after, lb_before,
            "bpf lb list after {how} + restart (expected = before)"
        );
        let d = diff_maps(&maps_before, &dump_maps(&sbx, STATE_MAPS)?);
        assert!(d.is_empty(), "maps changed across {how} + restart:\n{d}");
        let progs = programs(&st);
        assert!(
            progs.iter().any(|(p, _)| p == "kld_sock4_connect")
                && progs
                    .iter()
                    .any(|(p, t)| p == "kld_from_ep" && t == "tc vnet1-ingress"),
            "programs after {how} + restart: {progs:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tally = looper.join().expect("probe loop");
    let during_down: usize = windows
        .iter()
        .map(|(_, down, up)| {
            tally
                .timeline
                .iter()
                .filter(|(at, _)| at >= down && at <= up)
                .count()
        })
        .sum();
    println!(
        "probe loop: {} connections, {} failed, {during_down} made while the daemon was down",
        tally.attempts,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "connections to {BACKEND_VIP} failed across restarts (expected 0 failures of {}):\n{}",
        tally.attempts,
        tally.failures.join("\n")
    );
    assert!(
        during_down >= 10,
        "expected ≥ 10 connections while the daemon was down, got {during_down} (probe loop too slow?)"
    );
    Ok(())
}

/// `kldnetd cleanup` removes every pin: maps gone, no program left on the cgroup or the
/// interfaces, VIPs no longer translated.
#[test]
fn cleanup_removes_everything() -> Result<()> {
    if skip_unless_root("cleanup_removes_everything") {
        return Ok(());
    }
    let sbx = example_sandbox("lc-cleanup")?;
    let mut daemon = start(&sbx)?;
    let _servers = serve_tcp(&sbx, &["backend-1", "backend-2"], 8080)?;
    let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 5, 1000);
    assert!(p.all_ok(), "traffic before cleanup: {}", p.raw);
    let st = daemon.sigterm_and_wait()?;
    assert!(st.success(), "kldnetd exit after SIGTERM: {st}");
    let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 5, 1000);
    assert!(
        p.all_ok(),
        "traffic with the daemon stopped (pins keep it): {}",
        p.raw
    );
    let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if let Some(bt) = bpftool {
        let out = std::process::Command::new(bt)
            .args(["cgroup", "show"])
            .arg(sbx.cgroup_dir())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("kld_sock4_connect"),
            "precondition: bpftool sees the socket-LB programs before cleanup, got:\n{text}"
        );
    }
    for (_, ifname, _) in EXAMPLE_WORKLOADS {
        let progs = tcx_programs(&sbx, ifname)?;
        assert!(
            progs.iter().any(|p| p == "ingress:kld_from_ep")
                && progs.iter().any(|p| p == "egress:kld_to_ep"),
            "precondition: tcx programs on {ifname} before cleanup, got {progs:?}"
        );
    }

    let out = std::process::Command::new(kldnetd())
        .arg("--bpf-root")
        .arg(sbx.bpf_root())
        .arg("--run-dir")
        .arg(sbx.run_dir())
        .arg("cleanup")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("kldnetd cleanup: {}", stdout.trim());
    assert!(
        out.status.success(),
        "kldnetd cleanup: expected exit 0, got {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let pins = pin_dir(&sbx);
    assert!(
        !pins.exists(),
        "{} still exists after cleanup: {:?}",
        pins.display(),
        std::fs::read_dir(&pins).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    if let Some(bt) = bpftool {
        let show = || -> String {
            let out = std::process::Command::new(bt)
                .args(["cgroup", "show"])
                .arg(sbx.cgroup_dir())
                .output()
                .expect("run bpftool");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        // Unpinning releases the links asynchronously in the kernel (deferred bpf_link put):
        // give the detach a moment.
        let gone = poll(Duration::from_secs(3), || {
            show().trim().is_empty().then_some(())
        });
        println!(
            "cgroup programs detached {:?} after cleanup",
            gone.map(|g| g.1)
        );
        let text = show();
        assert!(
            text.trim().is_empty(),
            "bpftool cgroup show {}: expected nothing attached, got:\n{text}",
            sbx.cgroup_dir().display()
        );
    } else {
        println!("bpftool not found: cgroup attachment check skipped");
    }
    // Unpinning releases the links asynchronously in the kernel (deferred bpf_link put):
    // give the detach a moment.
    for (_, ifname, _) in EXAMPLE_WORKLOADS {
        let gone = poll(Duration::from_secs(3), || {
            tcx_programs(&sbx, ifname).ok().filter(|p| p.is_empty())
        });
        if let Some((_, t)) = gone {
            println!("tcx programs on {ifname} detached {t:?} after cleanup");
        }
        let progs = tcx_programs(&sbx, ifname)?;
        assert!(
            progs.is_empty(),
            "tcx programs on {ifname} after cleanup: expected none, got {progs:?}"
        );
    }
    let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 3, 300);
    assert!(
        p.ok == 0 && p.replies.is_empty(),
        "after cleanup {BACKEND_VIP} must not be translated to a backend: {}",
        p.raw
    );
    // Direct traffic (no LB involved) still works: the sandbox itself is fine.
    let p = probe_tcp(&sbx, "frontend-1", "10.244.1.21:8080", 2, 1000);
    assert!(
        p.all_ok(),
        "direct traffic to backend-1 after cleanup: {}",
        p.raw
    );
    Ok(())
}

/// An endpoint whose interface does not exist yet is a warning, not an error; once the
/// interface appears, a reload attaches it.
#[test]
fn missing_interface_is_a_warning_and_attaches_later() -> Result<()> {
    if skip_unless_root("missing_interface_is_a_warning_and_attaches_later") {
        return Ok(());
    }
    // The example config, but the workload behind vnet4 (staging/intruder) comes later.
    let mut sbx = kldnet_testkit::Sandbox::new("lc-late-if")?;
    for (name, ifname, addr) in EXAMPLE_WORKLOADS.iter().filter(|w| w.1 != "vnet4") {
        sbx.add_workload(kldnet_testkit::WorkloadSpec::new(
            name,
            ifname,
            &[addr.parse()?],
        ))?;
    }
    sbx.copy_config_from(&examples_dir())?;
    let mut daemon = start(&sbx)?;

    let st = status(&sbx);
    let last = &st["last_reload"];
    let diags: Vec<String> = last["diagnostics"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let warning = diags
        .iter()
        .find(|d| d.contains(": warning: ") && d.contains("staging/intruder"));
    assert!(
        last["ok"] == true && st["state"] == "running" && warning.is_some(),
        "start without vnet4: expected reload ok, state running and a warning naming staging/intruder; got state {} last_reload {last:#}",
        st["state"]
    );
    println!("warning: {}", warning.unwrap());
    let on = |st: &Value, target: &str| programs(st).iter().any(|(_, t)| t == target);
    assert!(
        !on(&st, "tc vnet4-ingress"),
        "nothing can be attached to the missing vnet4: {:?}",
        programs(&st)
    );
    let r = reload(&sbx);
    assert!(
        r.code == 0 && r.stdout.contains("staging/intruder"),
        "kldnet reload with vnet4 still missing: expected exit 0 and the warning, got {r}"
    );

    sbx.add_workload(kldnet_testkit::WorkloadSpec::new(
        "intruder",
        "vnet4",
        &["10.244.1.40".parse()?],
    ))?;
    let r = reload(&sbx);
    assert!(
        r.code == 0 && !r.stdout.contains("no changes"),
        "kldnet reload once vnet4 exists: expected exit 0 and a change, got {r}"
    );
    let st = status(&sbx);
    let progs = programs(&st);
    for (prog, target) in [
        ("kld_from_ep", "tc vnet4-ingress"),
        ("kld_to_ep", "tc vnet4-egress"),
    ] {
        assert!(
            progs.iter().any(|(p, t)| p == prog && t == target),
            "after vnet4 appeared: expected {prog} on {target}, got {progs:?}"
        );
    }
    assert!(
        !st["last_reload"]["diagnostics"]
            .to_string()
            .contains("staging/intruder"),
        "the warning is gone once vnet4 exists: {}",
        st["last_reload"]
    );
    let eps = cli(&sbx, &["endpoint", "list", "-o", "json"]).json();
    let intruder = eps
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "intruder"))
        .cloned()
        .unwrap_or_default();
    let ifindex = workload(&sbx, "intruder").host_ifindex;
    assert_eq!(
        intruder["ifindex"], ifindex,
        "endpoint staging/intruder ifindex (expected vnet4's): {intruder}"
    );
    let running = daemon.try_wait()?.is_none();
    ensure_log(running, "daemon still running", &daemon)?;
    Ok(())
}

/// Endpoints that name no `interface` are attached where the node routes their address
/// (the host side of their veth), as the kube-adapter's pods are.
#[test]
fn endpoint_interface_is_found_by_route() -> Result<()> {
    if skip_unless_root("endpoint_interface_is_found_by_route") {
        return Ok(());
    }
    let sbx = example_sandbox("route-lookup")?;
    let identities = std::fs::read_to_string(examples_dir().join("identities.toml"))?;
    let without: String = identities
        .lines()
        .filter(|l| !l.trim_start().starts_with("interface"))
        .map(|l| format!("{l}\n"))
        .collect();
    sbx.write_config("identities.toml", &without)?;
    let _daemon = start(&sbx)?;
    let st = status(&sbx);
    let progs = programs(&st);
    for ifname in ["vnet1", "vnet2", "vnet3", "vnet4"] {
        let attached = progs
            .iter()
            .any(|(p, t)| p == "kld_from_ep" && t.contains(ifname));
        assert!(
            attached,
            "kld_from_ep not on {ifname} found by route; programs: {progs:?}"
        );
    }
    let diags = st["last_reload"]["diagnostics"].to_string();
    assert!(!diags.contains("no interface found"), "{diags}");
    Ok(())
}
