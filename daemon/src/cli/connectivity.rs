// SPDX-License-Identifier: Apache-2.0
//! `kldnet connectivity test`: a throwaway sandbox that exercises every service path.
//!
//! Like `kldnet demo`, it builds an isolated node (network namespaces, a cgroup, a private
//! bpffs, a temp config dir) and runs the kldnetd found next to this binary there, with a
//! small configuration of its own: a container client (in the socket-LB cgroup), a VM
//! client (outside it: per-packet LB at tc), two VM backends and an outside host behind
//! the uplink `uplink0`. Each check prints `[ok] name (details)` or `[FAIL] name: reason`,
//! then `N passed, N failed`; the exit code is 0 exactly when nothing failed.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use kldnet_testkit::{ChildGuard, ExternalSpec, Proto, Sandbox, WorkloadSpec, probe_cli};
use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct ConnectivityArgs {
    /// Leave the sandbox (and kldnetd) up after the checks, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Print the sandbox, the configuration and every probe's raw result.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

const NODE_ADDR: &str = "192.0.2.10";
const CLUSTER_IP: &str = "10.96.0.10";
const LB_IP: &str = "198.51.100.10";
const EMPTY_IP: &str = "10.96.0.99";
const NODE_PORT: u16 = 30080;
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
/// Connections per check.
const N: u32 = 20;
/// How fast a refused connect() must fail.
const FAIL_FAST: Duration = Duration::from_millis(100);

/// (name, host interface, address, labels, VM?)
const WORKLOADS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "client",
        "kldc0",
        "10.244.1.10",
        "{ app = \"client\" }",
        false,
    ),
    (
        "vm-client",
        "kldc1",
        "10.244.1.11",
        "{ app = \"vm-client\" }",
        true,
    ),
    (
        "backend-1",
        "kldc2",
        "10.244.1.21",
        "{ app = \"echo\" }",
        true,
    ),
    (
        "backend-2",
        "kldc3",
        "10.244.1.22",
        "{ app = \"echo\" }",
        true,
    ),
];
const OUTSIDE: (&str, &str, &str) = ("outside", "uplink0", "203.0.113.50");

pub fn run(args: ConnectivityArgs) -> i32 {
    match test(&args) {
        Ok(true) => EXIT_OK,
        Ok(false) => EXIT_FAILURE,
        Err(e) => {
            eprintln!("kldnet connectivity test: {e:#}");
            EXIT_FAILURE
        }
    }
}

fn config() -> String {
    let mut c = format!(
        "[node]\nname = \"connectivity\"\naddress = \"{NODE_ADDR}\"\n\
         endpoint_cidrs = [\"10.244.1.0/24\"]\ncluster_cidrs = [\"10.244.0.0/16\"]\n\
         uplinks = [\"{}\"]\n\n",
        OUTSIDE.1
    );
    for (name, ifname, addr, labels, _) in WORKLOADS {
        c += &format!(
            "[[endpoint]]\nname = \"{name}\"\ninterface = \"{ifname}\"\naddresses = [\"{addr}\"]\n\
             labels = {labels}\n\n"
        );
    }
    c += &format!(
        "[[service]]\nname = \"echo\"\naddresses = [\"{CLUSTER_IP}\"]\n\
         ports = [{{ name = \"http\", port = 80, target_port = {TCP_PORT}, protocol = \"tcp\" }}, \
         {{ name = \"dns\", port = 53, target_port = {UDP_PORT}, protocol = \"udp\" }}]\n\
         selector = {{ app = \"echo\" }}\n\n\
         [[service]]\nname = \"echo-public\"\ntype = \"LoadBalancer\"\naddresses = [\"{LB_IP}\"]\n\
         ports = [{{ port = 80, target_port = {TCP_PORT}, protocol = \"tcp\", node_port = {NODE_PORT} }}]\n\
         selector = {{ app = \"echo\" }}\nexternal_traffic_policy = \"local\"\n\n\
         [[service]]\nname = \"no-backends\"\naddresses = [\"{EMPTY_IP}\"]\n\
         ports = [{{ port = 80, target_port = {TCP_PORT}, protocol = \"tcp\" }}]\n\
         selector = {{ app = \"nobody\" }}\n"
    );
    c
}

/// Where a probe runs.
#[derive(Clone, Copy, Debug)]
enum From {
    /// A workload: in the LB cgroup when it is a container.
    Workload(&'static str),
    /// The outside host.
    Outside,
}

/// One probe's outcome: per-attempt lines and the report.
struct Probe {
    ok: u64,
    attempts: u64,
    replies: Vec<(String, u64)>,
    /// (microseconds, error or reply) per attempt.
    each: Vec<(u64, Result<String, String>)>,
    raw: String,
}

impl Probe {
    fn spread(&self) -> String {
        self.replies
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn first_failure(&self) -> String {
        self.each
            .iter()
            .find_map(|(_, r)| r.as_ref().err().cloned())
            .unwrap_or_else(|| "-".into())
    }
}

struct Run<'a> {
    sbx: &'a Sandbox,
    exe: std::path::PathBuf,
    verbose: bool,
    passed: u32,
    failed: u32,
}

impl Run<'_> {
    fn command(&self, from: From, args: &[String]) -> Result<Command> {
        Ok(match from {
            From::Workload(name) => {
                let w = self.sbx.workload(name).context("workload")?;
                self.sbx.workload_command(w, &self.exe, args)
            }
            From::Outside => {
                let e = self.sbx.external(OUTSIDE.0).context("outside host")?;
                self.sbx.external_command(e, &self.exe, args)
            }
        })
    }

    fn probe(&self, from: From, proto: Proto, target: SocketAddr, count: u32) -> Result<Probe> {
        let mut args = vec!["probe".to_string()];
        args.extend(probe_cli::connect_args(
            proto,
            target,
            count,
            Duration::from_secs(1),
        ));
        args.push("--each".into());
        let out = self
            .command(from, &args)?
            .output()
            .context("run kldnet probe")?;
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        if self.verbose {
            println!("    {from:?} → {target}/{proto}:");
            for l in raw.lines() {
                println!("      {l}");
            }
        }
        let mut each = Vec::new();
        let mut report = Value::Null;
        for line in raw.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if v.get("i").is_some() {
                let r = if v["ok"] == true {
                    Ok(v["reply"].as_str().unwrap_or("").to_string())
                } else {
                    Err(v["error"].as_str().unwrap_or("?").to_string())
                };
                each.push((v["us"].as_u64().unwrap_or(0), r));
            } else if v.get("attempts").is_some() {
                report = v;
            }
        }
        if report.is_null() {
            bail!(
                "probe printed no report (exit {:?}): {}{}",
                out.status.code(),
                raw,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut replies: Vec<(String, u64)> = report["replies"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        replies.sort();
        Ok(Probe {
            ok: report["ok"].as_u64().unwrap_or(0),
            attempts: report["attempts"].as_u64().unwrap_or(0),
            replies,
            each,
            raw,
        })
    }

    fn record(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(details) => {
                self.passed += 1;
                println!("[ok] {name} ({details})");
            }
            Err(reason) => {
                self.failed += 1;
                println!("[FAIL] {name}: {reason}");
            }
        }
    }

    /// Every attempt answered (from the address it was sent to) and every backend served.
    fn check_spread(
        &mut self,
        name: &str,
        from: From,
        proto: Proto,
        target: SocketAddr,
        how: &str,
    ) {
        let result = match self.probe(from, proto, target, N) {
            Err(e) => Err(format!("{e:#}")),
            Ok(p) if p.ok != p.attempts || p.attempts != u64::from(N) => Err(format!(
                "{}/{} answered from {target}; first failure: {}",
                p.ok,
                N,
                p.first_failure()
            )),
            Ok(p) if p.replies.len() < 2 => Err(format!(
                "{N}/{N} answered but only by {} (expected both backends)",
                p.spread()
            )),
            Ok(p) => Ok(format!(
                "{}/{N} {proto} to {target} {how}, backends {}",
                p.ok,
                p.spread()
            )),
        };
        self.record(name, result);
    }
}

fn test(args: &ConnectivityArgs) -> Result<bool> {
    if !kldnet_testkit::is_root() {
        bail!(
            "the connectivity test builds a throwaway sandbox (network namespaces, a cgroup, a \
             bpffs mount) and runs its own kldnetd: run it as root (sudo)"
        );
    }
    let exe = std::env::current_exe().context("locate kldnet")?;
    let kldnetd = exe.with_file_name("kldnetd");
    if !kldnetd.exists() {
        bail!(
            "kldnetd not found next to {} (build it: cargo build --bins)",
            exe.display()
        );
    }
    let started = Instant::now();
    let mut builder = Sandbox::builder("connectivity");
    builder.node_addr = NODE_ADDR.parse()?;
    let mut sbx = builder.build()?;
    for (name, ifname, addr, _, vm) in WORKLOADS {
        let spec = WorkloadSpec::new(name, ifname, &[addr.parse::<Ipv4Addr>()?]);
        sbx.add_workload(if *vm { spec.vm() } else { spec })?;
    }
    sbx.add_external(ExternalSpec::new(OUTSIDE.0, OUTSIDE.1, OUTSIDE.2.parse()?))?;
    let cfg = config();
    sbx.write_config("connectivity.toml", &cfg)?;
    if args.verbose {
        println!(
            "sandbox: node netns {} ({NODE_ADDR}), cgroup {}, bpffs {}, config {}",
            sbx.node_netns(),
            sbx.cgroup_dir().display(),
            sbx.bpf_root().display(),
            sbx.config_dir().display()
        );
        for (name, ifname, addr, _, vm) in WORKLOADS {
            let kind = if *vm {
                "VM (per-packet LB)"
            } else {
                "container (socket LB)"
            };
            println!("  workload {name:<10} {addr:<12} host side {ifname:<6} {kind}");
        }
        println!(
            "  outside  {:<10} {:<12} uplink {}",
            OUTSIDE.0, OUTSIDE.2, OUTSIDE.1
        );
        println!("--- connectivity.toml\n{cfg}---");
    }
    let daemon = sbx.start_daemon(&kldnetd, &[])?;
    let st = Command::new(&exe)
        .arg("--run-dir")
        .arg(sbx.run_dir())
        .args(["status", "--json"])
        .output()
        .context("kldnet status")?;
    let st: Value = serde_json::from_slice(&st.stdout).unwrap_or(Value::Null);
    if st["last_reload"]["ok"] != true {
        bail!(
            "kldnetd did not apply the test configuration: {}\n{}",
            st["last_reload"],
            kldnet_testkit::tail(&daemon.log(), 20)
        );
    }

    // Backends answer with their name on TCP 8080 and UDP 5353.
    let mut servers: Vec<ChildGuard> = Vec::new();
    for (name, _, addr, _, _) in WORKLOADS.iter().filter(|w| w.0.starts_with("backend")) {
        let w = sbx.workload(name).context("backend")?.clone();
        for (proto, port) in [(Proto::Tcp, TCP_PORT), (Proto::Udp, UDP_PORT)] {
            let mut a = vec!["probe".to_string()];
            a.extend(probe_cli::serve_args(
                proto,
                SocketAddr::new(addr.parse()?, port),
                name,
                3600,
            ));
            let mut child = sbx.spawn(sbx.workload_command(&w, &exe, &a))?;
            child.wait_for_stdout("listening", Duration::from_secs(5))?;
            servers.push(child);
        }
    }

    let mut run = Run {
        sbx: &sbx,
        exe: exe.clone(),
        verbose: args.verbose,
        passed: 0,
        failed: 0,
    };
    let cluster_tcp = SocketAddr::new(CLUSTER_IP.parse()?, 80);
    let cluster_udp = SocketAddr::new(CLUSTER_IP.parse()?, 53);
    run.check_spread(
        "process → ClusterIP",
        From::Workload("client"),
        Proto::Tcp,
        cluster_tcp,
        "via socket LB",
    );
    run.check_spread(
        "VM → ClusterIP",
        From::Workload("vm-client"),
        Proto::Tcp,
        cluster_tcp,
        "via per-packet LB",
    );
    run.check_spread(
        "outside → NodePort",
        From::Outside,
        Proto::Tcp,
        SocketAddr::new(NODE_ADDR.parse()?, NODE_PORT),
        "through uplink0",
    );
    run.check_spread(
        "outside → LoadBalancer IP",
        From::Outside,
        Proto::Tcp,
        SocketAddr::new(LB_IP.parse()?, 80),
        "through uplink0",
    );
    run.check_spread(
        "UDP service (process)",
        From::Workload("client"),
        Proto::Udp,
        cluster_udp,
        "sendto via socket LB",
    );
    run.check_spread(
        "UDP service (VM)",
        From::Workload("vm-client"),
        Proto::Udp,
        cluster_udp,
        "via per-packet LB",
    );
    let empty = SocketAddr::new(EMPTY_IP.parse()?, 80);
    // The process is refused by socket LB at connect(); the VM's SYN is answered at tc with
    // an ICMP port unreachable, which its kernel turns into ECONNREFUSED.
    for (from, name) in [
        ("client", "service without backends fails fast"),
        ("vm-client", "service without backends fails fast (VM)"),
    ] {
        let result = match run.probe(From::Workload(from), Proto::Tcp, empty, 3) {
            Err(e) => Err(format!("{e:#}")),
            Ok(p) => {
                let slowest = p.each.iter().map(|(us, _)| *us).max().unwrap_or(0);
                let all_refused = p.each.len() == 3
                    && p.each.iter().all(|(_, r)| {
                        r.as_ref()
                            .is_err_and(|e| e.contains("os error 111") || e.contains("refused"))
                    });
                if p.ok > 0 {
                    Err(format!(
                        "{} of 3 connections to {empty} were answered ({})",
                        p.ok,
                        p.raw.trim()
                    ))
                } else if !all_refused {
                    Err(format!("expected ECONNREFUSED, got: {}", p.first_failure()))
                } else if slowest > FAIL_FAST.as_micros() as u64 {
                    Err(format!(
                        "refused, but the slowest connect() took {} ms (limit {} ms)",
                        slowest / 1000,
                        FAIL_FAST.as_millis()
                    ))
                } else {
                    Ok(format!(
                        "3/3 connect() to {empty} refused, slowest {} µs",
                        slowest
                    ))
                }
            }
        };
        run.record(name, result);
    }
    let (passed, failed) = (run.passed, run.failed);
    if args.verbose {
        println!("(checks took {:?})", started.elapsed());
    }
    if args.keep {
        eprintln!(
            "sandbox is up: kldnet --run-dir {} status; node netns {}; Ctrl-C tears it down",
            sbx.run_dir().display(),
            sbx.node_netns()
        );
        wait_for_ctrl_c();
    }
    drop(servers);
    drop(daemon);
    drop(sbx);
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn wait_for_ctrl_c() {
    // SAFETY: sigwait on a set holding SIGINT and SIGTERM, blocked first so they queue.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
}
