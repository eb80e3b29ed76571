// SPDX-License-Identifier: Apache-2.0
//! Per-connection latency with 1k / 10k policy rules: kldnet (BPF, LPM) vs the same
//! allow set as iptables rules, one chain per endpoint dispatched from FORWARD, as
//! kube-network-policies or Calico's iptables mode would program it. Everything runs in the
//! sandbox's private node namespace (never the host's firewall).
//!
//! `cargo test --release -p kldnet --test policy_bench -- --ignored --nocapture` (root).

mod common;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use common::*;
use kldnet_testkit::probe::Server;
use kldnet_testkit::{Proto, Sandbox, WorkloadSpec, probe, skip_unless_root};

const ENDPOINTS: usize = 1000;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);

/// Address of the i-th simulated endpoint (on another node: it only feeds identities).
fn peer(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 245, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn identities() -> String {
    let mut s = String::from(
        "[node]\nname = \"bench\"\naddress = \"192.0.2.10\"\nsocket_lb = false\n\n[flows]\nmetrics = \"\"\nui = \"\"\n\n[[peer]]\nname = \"other\"\naddress = \"192.0.2.11\"\n\n",
    );
    s.push_str("[[endpoint]]\nname = \"client\"\nnamespace = \"bench\"\ninterface = \"vcli\"\naddresses = [\"10.244.1.2\"]\nlabels = { app = \"client\" }\n\n");
    s.push_str("[[endpoint]]\nname = \"server\"\nnamespace = \"bench\"\ninterface = \"vsrv\"\naddresses = [\"10.244.1.3\"]\nlabels = { app = \"server\" }\n\n");
    for i in 0..ENDPOINTS - 2 {
        let _ = writeln!(
            s,
            "[[endpoint]]\nname = \"ep-{i}\"\nnamespace = \"bench\"\nnode = \"other\"\naddresses = [\"{}\"]\nlabels = {{ app = \"a{i}\" }}\n",
            peer(i)
        );
    }
    s
}

/// `rules` allow rules for the server: peer i % 998 on port 10000 + i / 998, then the
/// client's rule for port 80 (the last one, the worst case for a linear chain).
fn kldnet_policy(rules: usize) -> String {
    let mut s = String::from(
        "[[policy]]\nname = \"server\"\nnamespace = \"bench\"\nselector = { app = \"server\" }\n",
    );
    for i in 0..rules - 1 {
        let _ = writeln!(
            s,
            "[[policy.ingress]]\nfrom = [{{ selector = {{ app = \"a{}\" }} }}]\nports = [{{ port = {} }}]",
            i % (ENDPOINTS - 2),
            10000 + i / (ENDPOINTS - 2)
        );
    }
    s.push_str("[[policy.ingress]]\nfrom = [{ selector = { app = \"client\" } }]\nports = [{ port = 80 }]\n");
    s
}

/// The same allow set for iptables-restore: FORWARD dispatches to one chain per endpoint.
fn iptables_rules(rules: usize) -> String {
    let mut s = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
    for e in 0..ENDPOINTS {
        let _ = writeln!(s, ":EP-{e} - [0:0]");
    }
    s.push_str("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    // Dispatch: the server is the last endpoint.
    for e in 0..ENDPOINTS - 1 {
        let _ = writeln!(s, "-A FORWARD -d {}/32 -j EP-{e}", peer(e));
    }
    let _ = writeln!(s, "-A FORWARD -d {SERVER}/32 -j EP-{}", ENDPOINTS - 1);
    let srv = ENDPOINTS - 1;
    for i in 0..rules - 1 {
        let _ = writeln!(
            s,
            "-A EP-{srv} -s {}/32 -p tcp --dport {} -j ACCEPT",
            peer(i % (ENDPOINTS - 2)),
            10000 + i / (ENDPOINTS - 2)
        );
    }
    let _ = writeln!(s, "-A EP-{srv} -s {CLIENT}/32 -p tcp --dport 80 -j ACCEPT");
    let _ = writeln!(s, "-A EP-{srv} -j DROP");
    s.push_str("COMMIT\n");
    s
}

fn latency(sbx: &Sandbox, n: u32) -> Result<(u64, u64)> {
    let w = sbx.workload("client").unwrap().clone();
    let target = SocketAddr::new(SERVER.into(), 80);
    let r = sbx.run_in_netns(&w.netns, move || {
        probe(Proto::Tcp, target, n, Duration::from_secs(1))
    })?;
    ensure!(r.all_ok(), "probes failed: {:?}", r.failures.first());
    Ok((r.latency_us_p50, r.latency_us_p99))
}

fn iptables_restore(sbx: &Sandbox, rules: &str) -> Result<()> {
    let path = sbx.dir().join("rules.v4");
    std::fs::write(&path, rules)?;
    let out = sbx.exec_in(
        sbx.node_netns(),
        "iptables-restore",
        &[path.to_str().unwrap()],
    )?;
    ensure!(
        out.status.success(),
        "iptables-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
#[ignore = "benchmark: prints per-connection latency"]
fn bench_connection_latency_kldnet_vs_iptables() -> Result<()> {
    if skip_unless_root("bench_connection_latency_kldnet_vs_iptables") {
        return Ok(());
    }
    let mut sbx = Sandbox::new("polbench")?;
    sbx.add_workload(WorkloadSpec::new("client", "vcli", &[CLIENT]).vm())?;
    sbx.add_workload(WorkloadSpec::new("server", "vsrv", &[SERVER]).vm())?;
    sbx.write_config("kldnet.toml", &identities())?;
    let _daemon = sbx.start_daemon(kldnetd(), &[])?;
    let w = sbx.workload("server").unwrap().clone();
    let server = sbx.run_in_netns(&w.netns, || {
        Server::bind(Proto::Tcp, SocketAddr::new(SERVER.into(), 80))
    })??;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        let _ = server.run_until("srv", 600, &s2);
    });
    const N: u32 = 2000;
    let mut rows = Vec::new();
    let reload_ok = |what: &str| -> Result<()> {
        let r = reload(&sbx);
        ensure!(r.code == 0, "reload ({what}): {r}");
        println!("reload ({what}): {}", r.stdout.trim());
        Ok(())
    };
    sbx.write_config("policies.toml", "")?;
    reload_ok("no policy")?;
    latency(&sbx, 200)?; // warm up
    let (p50, p99) = latency(&sbx, N)?;
    rows.push(format!("| no policy | 0 | {p50} | {p99} |"));
    for rules in [1000usize, 10_000] {
        sbx.write_config("policies.toml", &kldnet_policy(rules))?;
        reload_ok(&format!("kldnet policy, {rules} rules"))?;
        let (p50, p99) = latency(&sbx, N)?;
        rows.push(format!("| kldnet (BPF, LPM) | {rules} | {p50} | {p99} |"));
    }
    // iptables: kldnet enforces nothing, the node namespace's FORWARD does.
    sbx.write_config("policies.toml", "")?;
    reload_ok("no policy")?;
    for rules in [1000usize, 10_000] {
        iptables_restore(&sbx, &iptables_rules(rules))?;
        let (p50, p99) = latency(&sbx, N)?;
        rows.push(format!(
            "| iptables, chain per endpoint ({} dispatch rules) | {rules} | {p50} | {p99} |",
            ENDPOINTS
        ));
    }
    iptables_restore(&sbx, "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")?;
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    println!("| datapath | rules | connect+reply p50 µs | p99 µs |\n|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
