// SPDX-License-Identifier: Apache-2.0
//! Shared helpers for the end-to-end daemon tests: a sandbox wired for the example
//! configuration, the `kldnet` CLI against it, traffic probes and raw map dumps.

#![allow(dead_code)]

pub mod lb;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kldnet_testkit::{ChildGuard, DaemonGuard, Proto, Sandbox, Workload, WorkloadSpec, probe_cli};
use serde_json::Value;

/// The `kldnet` CLI binary built with these tests.
pub fn kldnet() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kldnet"))
}

/// The `kldnetd` daemon binary built with these tests.
pub fn kldnetd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kldnetd"))
}

/// `<workspace>/examples/etc/kldnet`.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/etc/kldnet")
}

/// `<workspace>/config/tests/corpus`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/corpus")
}

/// The example's VIP of production/backend (ClusterIP, port 80 → 8080).
pub const BACKEND_VIP: &str = "10.96.120.45:80";

/// Local endpoints of the example config: (name, host interface, address).
pub const EXAMPLE_WORKLOADS: &[(&str, &str, &str)] = &[
    ("frontend-1", "vnet1", "10.244.1.10"),
    ("backend-1", "vnet2", "10.244.1.21"),
    ("backend-2", "vnet3", "10.244.1.22"),
    ("intruder", "vnet4", "10.244.1.40"),
];

/// A sandbox with one workload per local endpoint of the example and the example config
/// copied into its config dir (the daemon is not started).
pub fn example_sandbox(label: &str) -> Result<Sandbox> {
    let mut sbx = Sandbox::new(label)?;
    for (name, ifname, addr) in EXAMPLE_WORKLOADS {
        let addr: Ipv4Addr = addr.parse()?;
        sbx.add_workload(WorkloadSpec::new(name, ifname, &[addr]))?;
    }
    sbx.copy_config_from(&examples_dir())?;
    Ok(sbx)
}

/// Starts kldnetd in the sandbox.
pub fn start(sbx: &Sandbox) -> Result<DaemonGuard> {
    sbx.start_daemon(kldnetd(), &[])
}

/// The workload called `name` (panics when missing: a test bug).
pub fn workload(sbx: &Sandbox, name: &str) -> Workload {
    sbx.workload(name)
        .unwrap_or_else(|| panic!("no workload {name}"))
        .clone()
}

/// Result of one CLI run.
#[derive(Debug)]
pub struct Cli {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    /// stdout as JSON (panics with the output when it does not parse).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "kldnet output is not JSON ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Display for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn to_cli(out: Output) -> Cli {
    Cli {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `kldnet --run-dir <sandbox run dir> ARGS…` in the host namespace.
pub fn cli(sbx: &Sandbox, args: &[&str]) -> Cli {
    let out = std::process::Command::new(kldnet())
        .arg("--run-dir")
        .arg(sbx.run_dir())
        .args(args)
        .output()
        .expect("run kldnet");
    to_cli(out)
}

/// `kldnet status --json` (exit 0 running, 1 degraded: both print the JSON).
pub fn status(sbx: &Sandbox) -> Value {
    let out = cli(sbx, &["status", "--json"]);
    assert!(
        out.code == 0 || out.code == 1,
        "kldnet status --json: {out}"
    );
    out.json()
}

/// Generation from a status object.
pub fn generation(st: &Value) -> u64 {
    st["generation"].as_u64().expect("status.generation")
}

/// `kldnet reload`.
pub fn reload(sbx: &Sandbox) -> Cli {
    cli(sbx, &["reload"])
}

/// Polls `f` every 10 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some((v, started.elapsed()));
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a TCP server in each named workload on `<its address>:port`, replying with the
/// workload's name; waits until each listens.
pub fn serve_tcp(sbx: &Sandbox, names: &[&str], port: u16) -> Result<Vec<ChildGuard>> {
    let mut servers = Vec::new();
    for name in names {
        let w = workload(sbx, name);
        let bind = SocketAddr::new(w.addr().into(), port);
        let mut args = vec!["probe".to_string()];
        args.extend(probe_cli::serve_args(Proto::Tcp, bind, &w.name, 60));
        let mut child = sbx.spawn(sbx.workload_command(&w, kldnet(), &args))?;
        child
            .wait_for_stdout("listening", Duration::from_secs(5))
            .with_context(|| format!("server in {name}"))?;
        servers.push(child);
    }
    Ok(servers)
}

/// The outcome of `kldnet probe connect tcp TARGET --count N --json` run in a workload.
#[derive(Debug, Clone)]
pub struct Probe {
    pub attempts: u64,
    pub ok: u64,
    pub replies: BTreeMap<String, u64>,
    pub failures: Vec<String>,
    pub raw: String,
}

impl Probe {
    pub fn count(&self, who: &str) -> u64 {
        self.replies.get(who).copied().unwrap_or(0)
    }
    pub fn all_ok(&self) -> bool {
        self.attempts > 0 && self.ok == self.attempts
    }
}

/// Runs a TCP probe from workload `from` to `target` (`count` new connections).
pub fn probe_tcp(sbx: &Sandbox, from: &str, target: &str, count: u32, timeout_ms: u64) -> Probe {
    let w = workload(sbx, from);
    let target: SocketAddr = target.parse().expect("target address");
    let mut args = vec!["probe".to_string()];
    args.extend(probe_cli::connect_args(
        Proto::Tcp,
        target,
        count,
        Duration::from_millis(timeout_ms),
    ));
    let out = sbx
        .workload_command(&w, kldnet(), &args)
        .output()
        .expect("run kldnet probe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout.lines().last().unwrap_or("").to_string();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "probe output is not JSON ({e}): {stdout:?} stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Probe {
        attempts: v["attempts"].as_u64().unwrap_or(0),
        ok: v["ok"].as_u64().unwrap_or(0),
        replies: v["replies"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
        failures: v["failures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default(),
        raw: line,
    }
}

/// Maps whose bytes a failed reload must leave untouched.
pub const STATE_MAPS: &[&str] = &[
    kldnet_bpf::abi::MAP_LB4_SVC,
    kldnet_bpf::abi::MAP_LB4_BE,
    kldnet_bpf::abi::MAP_LB4_RNAT,
    kldnet_bpf::abi::MAP_IPCACHE,
    kldnet_bpf::abi::MAP_ENDPOINTS,
    kldnet_bpf::abi::MAP_POLICY,
];

/// Raw (key, value) bytes of every entry, sorted, per map.
pub type MapBytes = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

/// The pin dir of the daemon's maps: `<bpf_root>/v<ABI>`.
pub fn pin_dir(sbx: &Sandbox) -> PathBuf {
    sbx.bpf_root().join(format!("v{}", kldnet_bpf::ABI_VERSION))
}

/// Dumps `maps` from the pin dir with raw bpf(2).
pub fn dump_maps(sbx: &Sandbox, maps: &[&str]) -> Result<MapBytes> {
    let dir = pin_dir(sbx);
    let mut out = BTreeMap::new();
    for name in maps {
        let path = dir.join(name);
        let data = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("open pinned map {}", path.display()))?;
        let info = data.info().with_context(|| format!("info of {name}"))?;
        let mut entries = kldnet::datapath::sys::dump(
            data.fd().as_fd(),
            info.key_size() as usize,
            info.value_size() as usize,
        )
        .with_context(|| format!("dump {name}"))?;
        entries.sort();
        out.insert(name.to_string(), entries);
    }
    Ok(out)
}

/// Describes how two dumps differ (empty when identical).
pub fn diff_maps(before: &MapBytes, after: &MapBytes) -> String {
    let mut out = String::new();
    for (name, b) in before {
        let a = after.get(name).cloned().unwrap_or_default();
        if *b == a {
            continue;
        }
        let bset: std::collections::BTreeSet<_> = b.iter().collect();
        let aset: std::collections::BTreeSet<_> = a.iter().collect();
        for gone in bset.difference(&aset) {
            out += &format!("  {name}: - key {:02x?} value {:02x?}\n", gone.0, gone.1);
        }
        for new in aset.difference(&bset) {
            out += &format!("  {name}: + key {:02x?} value {:02x?}\n", new.0, new.1);
        }
    }
    out
}

/// Names of programs attached per target, from a status object: (program, target).
pub fn programs(st: &Value) -> Vec<(String, String)> {
    st["programs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["program"].as_str().unwrap_or("").to_string(),
                        p["target"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Entries of map `name` in a status object.
pub fn map_entries(st: &Value, name: &str) -> Option<u64> {
    st["maps"].as_array()?.iter().find(|m| m["name"] == name)?["entries"].as_u64()
}

/// Fails with the daemon log when `cond` is false.
pub fn ensure_log(cond: bool, what: &str, daemon: &DaemonGuard) -> Result<()> {
    if !cond {
        bail!(
            "{what}\n--- kldnetd log tail ---\n{}",
            kldnet_testkit::tail(&daemon.log(), 40)
        );
    }
    Ok(())
}

/// Names of the tcx programs on `ifname` (ingress and egress) in the sandbox's node netns,
/// queried with BPF_PROG_QUERY.
pub fn tcx_programs(sbx: &Sandbox, ifname: &str) -> Result<Vec<String>> {
    use aya::programs::SchedClassifier;
    use aya::programs::tc::TcAttachType;
    let ifname = ifname.to_string();
    sbx.run_in_netns(sbx.node_netns(), move || -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (dir, at) in [
            ("ingress", TcAttachType::Ingress),
            ("egress", TcAttachType::Egress),
        ] {
            let (_, progs) = SchedClassifier::query_tcx(&ifname, at)
                .with_context(|| format!("query tcx {dir} of {ifname}"))?;
            for p in progs {
                names.push(format!("{dir}:{}", p.name_as_str().unwrap_or("?")));
            }
        }
        Ok(names)
    })?
}
