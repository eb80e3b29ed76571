// SPDX-License-Identifier: Apache-2.0
//! The web UI (issue 6) in headless Chromium (Debian `chromium`) against a sandbox with real
//! traffic: the rendered DOM holds the service map (green forwarded edges, red dropped
//! edges, workloads as nodes) and the flow table; the page loads nothing from outside the
//! daemon. A screenshot is kept in `target/ui-artifacts/service-map.png`.
//!
//! Chromium runs inside the sandbox's node namespace, where the daemon serves the UI on
//! 127.0.0.1:12000. Needs root; skips otherwise (and without chromium outside CI).

mod common;
mod flows_common;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use flows_common::*;
use kldnet_testkit::skip_unless_root;

/// Every `<tag …>` opening tag of the DOM (enough for assertions on attributes).
fn tags<'a>(dom: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        let t = &rest[i..];
        let end = t.find('>').unwrap_or(t.len());
        out.push(&t[..end]);
        rest = &t[end..];
    }
    out
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ui-artifacts")
}

fn chromium(sbx: &kldnet_testkit::Sandbox, extra: &[String]) -> Option<std::process::Output> {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        "--window-size=1400,1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.extend(extra.iter().cloned());
    args.push(format!("http://{UI}/"));
    let mut cmd = sbx.command_in(sbx.node_netns(), "chromium", &args, false);
    cmd.env("HOME", profile.path());
    match cmd.output() {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("run chromium: {e}"),
    }
}

#[test]
fn ui_renders_service_map_and_flow_table() -> Result<()> {
    if skip_unless_root("ui_renders_service_map_and_flow_table") {
        return Ok(());
    }
    let (sbx, _srv, daemon) = flows_sandbox("ui-map")?;
    assert_eq!(
        tcp_shots(
            &sbx,
            "vm1",
            &format!("{WEB_VIP}:80"),
            6,
            Duration::from_secs(2)
        )?,
        6
    );
    udp_shots(&sbx, "vm1", &format!("{EMPTY_VIP}:53"), 2)?;
    let flows = observe_until(&sbx, &["--last", "1000"], |f| {
        f.iter().any(|f| f["flow"]["verdict"] == "DROPPED")
    });
    assert!(!flows.is_empty(), "no flows to show");

    // No external assets: nothing but the daemon's own paths (and the SVG namespace).
    for path in ["/", "/app.js", "/app.css"] {
        let (code, body) = http_get(&sbx, UI, path)?;
        assert_eq!(code, 200, "GET {path}");
        let external: Vec<&str> = body
            .match_indices("http")
            .map(|(i, _)| &body[i..(i + 40).min(body.len())])
            .filter(|s| {
                (s.starts_with("http://") || s.starts_with("https://"))
                    && !s.starts_with("http://www.w3.org/2000/svg")
            })
            .collect();
        assert!(external.is_empty(), "{path} refers outside: {external:?}");
    }

    let Some(out) = chromium(&sbx, &["--dump-dom".into()]) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium missing in CI (.ci/run installs it)"
        );
        eprintln!("skipping ui test: chromium not installed (apt-get install chromium)");
        return Ok(());
    };
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("id=\"map\""),
        "chromium --dump-dom failed: {}\n{}\n--- kldnetd log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        kldnet_testkit::tail(&daemon.log(), 20)
    );
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("service-map.html"), &dom)?;

    // The map: workload nodes, green vm1 → backend edges, a red edge to the empty service.
    let nodes = tags(&dom, "g");
    // (Random balancing: which backends got connections varies.)
    for id in ["default/vm1", "default/b"] {
        assert!(
            nodes
                .iter()
                .any(|t| t.contains("class=\"node workload\"")
                    && t.contains(&format!("data-id=\"{id}"))),
            "node {id}… missing in the map:\n{dom}"
        );
    }
    let edges = tags(&dom, "line");
    let forwarded = edges.iter().find(|t| {
        t.contains("class=\"edge forwarded\"")
            && t.contains("data-src=\"default/vm1\"")
            && t.contains("data-dst=\"default/b")
    });
    assert!(
        forwarded.is_some(),
        "no forwarded vm1 → backend edge:\n{edges:#?}"
    );
    let dropped = edges.iter().find(|t| {
        t.contains("class=\"edge dropped\"")
            && t.contains("data-src=\"default/vm1\"")
            && t.contains("data-dst=\"service:default/empty\"")
    });
    assert!(
        dropped.is_some(),
        "no dropped vm1 → empty edge:\n{edges:#?}"
    );
    assert!(
        dom.contains(".edge.forwarded { stroke: #28a745; }") || dom.contains("app.css"),
        "styles are linked"
    );

    // The table: dropped rows with the reason, forwarded rows with both names.
    let rows = tags(&dom, "tr");
    assert!(
        rows.iter().any(|t| t.contains("verdict-DROPPED")
            && t.contains("data-src=\"default/vm1\"")
            && t.contains("data-drop-reason=\"SERVICE_BACKEND_NOT_FOUND\"")),
        "no dropped row:\n{rows:#?}"
    );
    assert!(
        rows.iter().any(|t| t.contains("verdict-FORWARDED")
            && t.contains("data-src=\"default/vm1\"")
            && t.contains("data-dst=\"default/b")),
        "no forwarded row:\n{rows:#?}"
    );
    assert!(dom.contains("flows shown"), "the status line is rendered");

    // The screenshot is an artifact for humans.
    let png = dir.join("service-map.png");
    let _ = std::fs::remove_file(&png);
    let shot = chromium(&sbx, &[format!("--screenshot={}", png.display())]).expect("chromium");
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "screenshot {} ({} bytes): {}",
        png.display(),
        bytes.len(),
        String::from_utf8_lossy(&shot.stderr)
    );
    println!("screenshot: {}", png.display());
    Ok(())
}

#[test]
fn ui_api_filters_like_observe() -> Result<()> {
    if skip_unless_root("ui_api_filters_like_observe") {
        return Ok(());
    }
    let (sbx, _srv, _daemon) = flows_sandbox("ui-api")?;
    udp_shots(&sbx, "vm1", &format!("{WEB_VIP}:53"), 2)?;
    udp_shots(&sbx, "vm1", &format!("{EMPTY_VIP}:53"), 3)?;
    observe_until(&sbx, &["--verdict", "DROPPED"], |f| f.len() >= 3);
    let (code, body) = http_get(&sbx, UI, "/api/flows?verdict=DROPPED")?;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let a = v.as_array().expect("array");
    assert_eq!(a.len(), 3, "{body}");
    assert!(
        a.iter().all(|f| f["flow"]["verdict"] == "DROPPED"),
        "{body}"
    );
    let (code, body) = http_get(&sbx, UI, "/api/flows?verdict=NOPE")?;
    assert_eq!(code, 400, "{body}");
    let (code, body) = http_get(&sbx, UI, "/api/graph")?;
    assert_eq!(code, 200);
    let g: serde_json::Value = serde_json::from_str(&body)?;
    assert!(
        g["edges"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["verdict"] == "DROPPED" && e["count"] == 3)),
        "{body}"
    );
    Ok(())
}
