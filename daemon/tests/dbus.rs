// SPDX-License-Identifier: Apache-2.0
//! The D-Bus interface `org.kldload.Kldnet1`, tested like a user: a real `dbus-daemon`
//! started by the test with the shipped policy file `systemd/org.kldload.Kldnet1.conf`,
//! kldnetd in a sandbox with `--dbus <that bus>`, and `busctl` as the client (as root, and as
//! `nobody` through setpriv to check the policy).
//!
//! Needs root, `dbus-daemon`, `busctl` and `setpriv` (Debian: dbus, systemd, util-linux);
//! skips with the reason otherwise. Run: `cargo test -p kldnet --test dbus`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::*;
use kldnet_testkit::{ChildGuard, Sandbox, skip_unless_root};
use serde_json::Value;

const NAME: &str = "org.kldload.Kldnet1";
const PATH: &str = "/org/kldload/Kldnet1";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn skip(test: &str) -> bool {
    if skip_unless_root(test) {
        return true;
    }
    for tool in ["dbus-daemon", "busctl", "setpriv"] {
        if !have(tool) {
            eprintln!(
                "skipping {test}: {tool} not installed (apt-get install dbus systemd util-linux)"
            );
            return true;
        }
    }
    false
}

/// The shipped bus policy.
fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/org.kldload.Kldnet1.conf")
}

/// A bus config with the system bus's default-deny policy (Debian's system.conf), the shipped
/// policy file included, listening on `socket`.
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
        socket = socket.display(),
        policy = policy_file().display()
    )
}

/// A private bus: its dir (world-traversable so `nobody` can connect), process and address.
struct Bus {
    _dir: tempfile::TempDir,
    _daemon: ChildGuard,
    address: String,
}

fn start_bus(sbx: &Sandbox) -> Result<Bus> {
    let dir = tempfile::Builder::new().prefix("kldnet-bus-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let config = dir.path().join("bus.conf");
    std::fs::write(&config, bus_config(&dir.path().join("socket")))?;
    let mut cmd = Command::new("dbus-daemon");
    cmd.arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--nopidfile", "--print-address"]);
    let mut daemon = sbx.spawn(cmd)?;
    daemon
        .wait_for_stdout("unix:", Duration::from_secs(10))
        .context("start dbus-daemon")?;
    let address = daemon
        .stdout()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(Bus {
        _dir: dir,
        _daemon: daemon,
        address,
    })
}

/// Result of one busctl run.
struct Busctl {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Busctl {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "busctl output is not JSON ({e}): {:?} stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }
}

/// `busctl --address=BUS --json=short ARGS…`, as root or (when `nobody`) as uid/gid 65534.
fn busctl(bus: &Bus, nobody: bool, args: &[&str]) -> Busctl {
    let mut cmd = if nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"]);
        c
    } else {
        Command::new("busctl")
    };
    cmd.arg(format!("--address={}", bus.address))
        .args(["--json=short", "--timeout=30"])
        .args(args);
    let out = cmd.output().expect("run busctl");
    Busctl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn get_property(bus: &Bus, prop: &str) -> Result<Value> {
    let out = busctl(bus, false, &["get-property", NAME, PATH, NAME, prop]);
    ensure!(out.ok, "get-property {prop}: {}", out.stderr);
    Ok(out.json()["data"].clone())
}

/// Polls property `prop` until `want` holds for it (10 s).
fn wait_property(bus: &Bus, prop: &str, want: impl Fn(&Value) -> bool) -> Result<Value> {
    let mut last = Value::Null;
    let found = poll(Duration::from_secs(10), || {
        last = get_property(bus, prop).unwrap_or(Value::Null);
        want(&last).then(|| last.clone())
    });
    match found {
        Some((v, _)) => Ok(v),
        None => bail!("property {prop} did not reach the expected value; last {last}"),
    }
}

/// `Reloaded` signals seen by `busctl monitor` so far: (ok, generation, summary).
fn reloaded_signals(monitor: &ChildGuard) -> Vec<(bool, u64, String)> {
    monitor
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["member"] == "Reloaded" && m["interface"] == NAME)
        .map(|m| {
            let d = &m["payload"]["data"];
            (
                d[0].as_bool().unwrap_or(false),
                d[1].as_u64().unwrap_or(0),
                d[2].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_signal(
    monitor: &ChildGuard,
    what: &str,
    want: impl Fn(&(bool, u64, String)) -> bool,
) -> Result<(bool, u64, String)> {
    match poll(Duration::from_secs(10), || {
        reloaded_signals(monitor).into_iter().find(|s| want(s))
    }) {
        Some((s, _)) => Ok(s),
        None => bail!(
            "no Reloaded signal {what} within 10 s; seen {:?}\n{}",
            reloaded_signals(monitor),
            monitor.output_tails()
        ),
    }
}

const SERVICE: &str = r#"[[service]]
name = "dbus-echo"
namespace = "default"
addresses = ["10.96.99.9"]
ports = [{ port = 80, protocol = "tcp" }]
backends = [{ address = "10.244.1.99", port = 8080 }]
"#;

/// Properties, Status(), Reload() and the Reloaded signal through a real bus, and the policy:
/// `nobody` reads properties but may not call methods.
#[test]
fn dbus_interface_through_a_real_bus() -> Result<()> {
    if skip("dbus_interface_through_a_real_bus") {
        return Ok(());
    }
    let sbx = Sandbox::new("dbus")?;
    sbx.write_config("kldnet.toml", "[node]\nname = \"dbus-node\"\n")?;
    let bus = start_bus(&sbx)?;
    let daemon = sbx.start_daemon(kldnetd(), &["--dbus", &bus.address])?;

    // Properties: the refresh after start reports the running state.
    let state = wait_property(&bus, "State", |v| v == "running")
        .with_context(|| kldnet_testkit::tail(&daemon.log(), 30))?;
    assert_eq!(state, "running");
    let version = get_property(&bus, "Version")?;
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "Version");
    let gen0 = get_property(&bus, "Generation")?
        .as_u64()
        .context("Generation is a u64")?;
    assert!(gen0 >= 1, "Generation after start: {gen0}");
    assert_eq!(
        get_property(&bus, "LastReloadError")?,
        "",
        "LastReloadError"
    );
    assert_eq!(get_property(&bus, "Services")?, 0, "Services");
    for p in ["EndpointsLocal", "Policies", "Identities"] {
        assert!(get_property(&bus, p)?.is_u64(), "{p} is a number");
    }

    // Status() is the JSON of `kldnet status --json`.
    let st = busctl(&bus, false, &["call", NAME, PATH, NAME, "Status"]);
    assert!(st.ok, "Status(): {}", st.stderr);
    let st: Value = serde_json::from_str(st.json()["data"][0].as_str().unwrap_or(""))
        .context("Status() returns JSON")?;
    assert_eq!(
        (
            st["state"].as_str(),
            st["generation"].as_u64(),
            st["node"].as_str()
        ),
        (Some("running"), Some(gen0), Some("dbus-node")),
        "Status(): {st}"
    );

    // Signals, watched like a user would.
    let mut monitor_cmd = Command::new("busctl");
    monitor_cmd.arg(format!("--address={}", bus.address)).args([
        "--json=short",
        "monitor",
        "--match",
        &format!("type='signal',interface='{NAME}',member='Reloaded'"),
    ]);
    let monitor = sbx.spawn(monitor_cmd)?;
    poll(Duration::from_secs(5), || {
        monitor.stderr().contains("Monitoring").then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));

    // Reload() of the unchanged config.
    let r = busctl(&bus, false, &["call", NAME, PATH, NAME, "Reload"]);
    assert!(r.ok, "Reload(): {}", r.stderr);
    let r = r.json();
    assert_eq!(r["type"], "bts", "Reload() signature: {r}");
    assert_eq!(
        (r["data"][0].as_bool(), r["data"][1].as_u64()),
        (Some(true), Some(gen0)),
        "Reload() of an unchanged config: {r}"
    );
    wait_signal(&monitor, "after Reload()", |s| s.0 && s.1 == gen0)?;

    // A new file: the watcher reloads, the properties and the signal follow.
    sbx.write_config("services.toml", SERVICE)?;
    let gen1 = wait_property(&bus, "Generation", |v| v.as_u64() > Some(gen0))?
        .as_u64()
        .unwrap_or(0);
    wait_property(&bus, "Services", |v| v == 1)?;
    wait_signal(&monitor, "for the new file", |s| s.0 && s.1 == gen1)?;

    // A bad file: degraded, the error visible, the old generation keeps serving.
    sbx.write_config("zz-bad.toml", "[[service]]\nname = 42\n")?;
    wait_property(&bus, "State", |v| v == "degraded")?;
    let err = get_property(&bus, "LastReloadError")?;
    assert!(
        err.as_str().is_some_and(|e| e.contains("zz-bad.toml")),
        "LastReloadError names the bad file: {err}"
    );
    assert_eq!(
        get_property(&bus, "Generation")?,
        gen1,
        "Generation after a failed reload"
    );
    wait_signal(&monitor, "for the failed reload", |s| !s.0)?;
    let r = busctl(&bus, false, &["call", NAME, PATH, NAME, "Reload"]).json();
    assert_eq!(r["data"][0], false, "Reload() with a bad file: {r}");

    // Policy: nobody may read, not act.
    let got = busctl(
        &bus,
        true,
        &["get-property", NAME, PATH, NAME, "Generation"],
    );
    assert!(got.ok, "nobody reads Generation: {}", got.stderr);
    for method in ["Reload", "Status"] {
        let denied = busctl(&bus, true, &["call", NAME, PATH, NAME, method]);
        assert!(
            !denied.ok && denied.stderr.contains("denied"),
            "nobody must not call {method}(): ok={} stdout {:?} stderr {:?}",
            denied.ok,
            denied.stdout,
            denied.stderr
        );
    }
    ensure_log(
        daemon.log().contains("D-Bus: serving org.kldload.Kldnet1"),
        "daemon log says it serves on D-Bus",
        &daemon,
    )?;
    Ok(())
}

/// `--dbus` with a bus nobody listens on: the daemon logs why and serves on its socket.
#[test]
fn daemon_runs_without_a_bus() -> Result<()> {
    if skip_unless_root("daemon_runs_without_a_bus") {
        return Ok(());
    }
    let sbx = Sandbox::new("nodbus")?;
    sbx.write_config("kldnet.toml", "[node]\nname = \"nodbus\"\n")?;
    let missing = sbx.dir().join("no-such-bus");
    let address = format!("unix:path={}", missing.display());
    let daemon = sbx.start_daemon(kldnetd(), &["--dbus", &address])?;
    let st = status(&sbx);
    assert_eq!(st["state"], "running", "status without a bus: {st}");
    ensure_log(
        poll(Duration::from_secs(5), || {
            daemon.log().contains("D-Bus: cannot serve").then_some(())
        })
        .is_some(),
        "daemon log says why D-Bus is off",
        &daemon,
    )?;
    Ok(())
}
