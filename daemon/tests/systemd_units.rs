// SPDX-License-Identifier: Apache-2.0
//! The systemd units in `systemd/`: `systemd-analyze verify` accepts them, they carry the
//! settings the docs promise, and kldnetd runs with exactly the unit's capability bounding
//! set (every capability in it is needed, and no more is).
//!
//! `systemd-analyze` tests skip when it is missing; capability tests need root.
//! Run: `cargo test -p kldnet --test systemd_units`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use kldnet_testkit::{Sandbox, skip_unless_root};

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(name)
}

fn read_unit(name: &str) -> String {
    std::fs::read_to_string(unit_path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// `Key=value` settings of a unit (values of repeated keys joined by a space).
fn settings(unit: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let e = out.entry(k.trim().to_string()).or_default();
            if !e.is_empty() {
                e.push(' ');
            }
            e.push_str(v.trim());
        }
    }
    out
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The built kube-adapter next to kldnetd, when the workspace build made it.
fn kube_adapter_bin() -> Option<PathBuf> {
    let p = kldnetd().with_file_name("kldnet-kube-adapter");
    p.exists().then_some(p)
}

/// Both units, with ExecStart pointing at the built binaries, pass `systemd-analyze verify`
/// without a single warning.
#[test]
fn units_pass_systemd_analyze_verify() -> Result<()> {
    if !have("systemd-analyze") {
        eprintln!("skipping units_pass_systemd_analyze_verify: systemd-analyze not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let adapter = kube_adapter_bin().unwrap_or_else(|| PathBuf::from("/bin/true"));
    for (name, from, to) in [
        (
            "kldnetd.service",
            "/usr/sbin/kldnetd",
            kldnetd().to_path_buf(),
        ),
        (
            "kldnet-kube-adapter.service",
            "/usr/bin/kldnet-kube-adapter",
            adapter,
        ),
    ] {
        let unit = read_unit(name).replace(from, &to.to_string_lossy());
        std::fs::write(dir.path().join(name), unit)?;
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("kldnetd.service"))
        .arg(dir.path().join("kldnet-kube-adapter.service"))
        .output()
        .context("run systemd-analyze")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about other units (e.g. the host's own units pulled in by ordering) are not ours.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("kldnet")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    Ok(())
}

/// What docs/operations.md and issue 7 promise about kldnetd.service.
#[test]
fn kldnetd_unit_settings() {
    let s = settings(&read_unit("kldnetd.service"));
    let get = |k: &str| s.get(k).map(String::as_str).unwrap_or("");
    assert_eq!(get("Type"), "notify");
    assert_eq!(get("ExecStart"), "/usr/sbin/kldnetd");
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert!(!get("WatchdogSec").is_empty(), "WatchdogSec");
    assert_eq!(get("Restart"), "on-failure");
    let prevent: Vec<&str> = get("RestartPreventExitStatus").split_whitespace().collect();
    assert!(
        prevent.contains(&kldnet::daemon::EXIT_DATAPATH.to_string().as_str()),
        "RestartPreventExitStatus must hold EXIT_DATAPATH: {prevent:?}"
    );
    assert!(
        !s.contains_key("ExecStopPost"),
        "the default keeps the dataplane through restarts: no ExecStopPost cleanup"
    );
    assert_eq!(get("ProtectSystem"), "strict");
    for p in ["/sys/fs/bpf", "/sys/fs/cgroup"] {
        assert!(get("ReadWritePaths").contains(p), "ReadWritePaths has {p}");
    }
    // Regression: ProtectKernelTunables=yes made /sys/fs/bpf read-only despite ReadWritePaths
    // (systemd 252), so kldnetd could not pin and exited 4 at boot.
    assert!(
        !s.contains_key("ProtectKernelTunables"),
        "ProtectKernelTunables makes /sys/fs/bpf read-only"
    );
    for d in [
        "ConfigurationDirectory",
        "RuntimeDirectory",
        "StateDirectory",
    ] {
        assert_eq!(get(d), "kldnet", "{d}");
    }
    assert!(get("Documentation").contains("man:kldnetd(8)"));
    let a = settings(&read_unit("kldnet-kube-adapter.service"));
    assert!(
        a.get("After")
            .is_some_and(|v| v.contains("kldnetd.service")),
        "kube-adapter ordered after kldnetd"
    );
}

/// The unit's capability set as setpriv arguments: "+bpf,+net_admin,…".
fn unit_caps() -> Vec<String> {
    let s = settings(&read_unit("kldnetd.service"));
    s["CapabilityBoundingSet"]
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// A script that runs kldnetd as root with only `caps` in its bounding set, as systemd
/// does for `CapabilityBoundingSet=` (root's effective set is then exactly these).
fn capped_kldnetd(sbx: &Sandbox, caps: &[String]) -> Result<PathBuf> {
    let set: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let script = sbx
        .dir()
        .join(format!("kldnetd-caps-{}.sh", caps.join("-")));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec setpriv --inh-caps=-all --bounding-set=-all,{} {} \"$@\"\n",
            set.join(","),
            kldnetd().display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// With exactly the unit's capabilities, kldnetd loads and attaches everything, serves a VIP,
/// reloads on SIGHUP, and adopts its pins after a restart.
#[test]
fn unit_capability_set_is_enough() -> Result<()> {
    if skip_unless_root("unit_capability_set_is_enough") || !have("setpriv") {
        return Ok(());
    }
    let caps = unit_caps();
    let sbx = example_sandbox("caps-ok")?;
    let capped = capped_kldnetd(&sbx, &caps)?;
    let _servers = serve_tcp(&sbx, &["backend-1", "backend-2"], 8080)?;
    let mut daemon = sbx.start_daemon(&capped, &["--dbus", "none"])?;

    let st = status(&sbx);
    assert_eq!(st["state"], "running", "status with caps {caps:?}: {st}");
    let progs = programs(&st);
    assert!(
        progs.iter().any(|(p, _)| p == "kld_sock4_connect")
            && progs.iter().any(|(p, _)| p == "kld_from_ep"),
        "programs attached with caps {caps:?}: {progs:?}"
    );
    let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 4, 1000);
    assert!(p.all_ok(), "VIP with caps {caps:?}: {}", p.raw);

    let gen_before = generation(&st);
    daemon.send_signal(libc::SIGHUP)?;
    sbx.write_config(
        "zz-extra.toml",
        "[[service]]\nname = \"capped\"\naddresses = [\"10.96.55.5\"]\n\
         ports = [{ port = 80 }]\nbackends = [{ address = \"10.244.1.21\", port = 8080 }]\n",
    )?;
    let reloaded = poll(Duration::from_secs(10), || {
        let st = status(&sbx);
        (generation(&st) > gen_before && st["state"] == "running").then_some(())
    });
    ensure_log(reloaded.is_some(), "reload with the unit's caps", &daemon)?;

    daemon.sigterm_and_wait()?;
    let daemon = sbx.start_daemon(&capped, &["--dbus", "none"])?;
    let st = status(&sbx);
    assert_eq!(st["state"], "running", "restart with caps {caps:?}: {st}");
    let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 4, 1000);
    assert!(p.all_ok(), "VIP after a capped restart: {}", p.raw);
    ensure_log(
        daemon.log().contains("datapath loaded"),
        "restart log",
        &daemon,
    )?;
    Ok(())
}

/// Without any one of the unit's capabilities kldnetd cannot start its datapath and exits
/// with EXIT_DATAPATH (which the unit's RestartPreventExitStatus does not restart).
#[test]
fn every_unit_capability_is_needed() -> Result<()> {
    if skip_unless_root("every_unit_capability_is_needed") || !have("setpriv") {
        return Ok(());
    }
    let caps = unit_caps();
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let sbx = example_sandbox("caps-less")?;
        let capped = capped_kldnetd(&sbx, &fewer)?;
        let started =
            sbx.start_daemon_with_timeout(&capped, &["--dbus", "none"], Duration::from_secs(10));
        let err = match started {
            Ok(_) => panic!(
                "kldnetd started without CAP_{}: is it needed?",
                drop.to_uppercase()
            ),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&format!("exit status: {}", kldnet::daemon::EXIT_DATAPATH)),
            "without CAP_{}: expected exit {}, got {err}",
            drop.to_uppercase(),
            kldnet::daemon::EXIT_DATAPATH
        );
    }
    Ok(())
}
