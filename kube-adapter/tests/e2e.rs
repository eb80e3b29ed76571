// SPDX-License-Identifier: Apache-2.0
//! End to end: the manifests of a small app (a namespace, pods as netns workloads, a Service
//! with a named target port, a NetworkPolicy) rendered into a sandbox's config dir next to a
//! VM defined the kldnet way, loaded by a running kldnetd, probed with real traffic; then the
//! manifests change, are rendered again, and the traffic follows.
//!
//! Needs root and the `kldnetd`/`kldnet` binaries in the same target dir (`cargo build -p
//! kldnet`, or `cargo test --workspace`); without them it says why and passes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kldnet_testkit::probe::Server;
use kldnet_testkit::{Proto, Sandbox, WorkloadSpec, probe_cli, skip_unless_root};
use serde_json::Value;

/// A binary of the workspace next to this test's executable (`target/<profile>/NAME`).
fn sibling_bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join(name);
    p.exists().then_some(p)
}

const VIP: &str = "10.96.0.10:80";

/// Pods: (name, host interface, address, app label).
const PODS: &[(&str, &str, &str, &str)] = &[
    ("client", "vnet1", "10.244.1.10", "client"),
    ("other", "vnet2", "10.244.1.11", "other"),
    ("web-1", "vnet11", "10.244.1.21", "web"),
    ("web-2", "vnet12", "10.244.1.22", "web"),
];

fn pod_yaml(name: &str, ifname: &str, addr: &str, app: &str) -> String {
    // kldnetd does not find interfaces by route lookup yet: the CNI-recorded annotation names it.
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}, annotations: {{kldnet.io/interface: {ifname}}}}}\n\
         spec:\n  nodeName: node-a\n  containers: [{{name: c, image: x, ports: [{{name: http, containerPort: 8080}}]}}]\n\
         status: {{phase: Running, podIP: {addr}, podIPs: [{{ip: {addr}}}]}}\n---\n"
    )
}

/// The app's manifests; `web2` keeps pod web-2; `allowed` are the apps the policy admits.
fn manifests(web2: bool, allowed: &[&str]) -> String {
    let mut s = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDRs: [10.244.1.0/24]}\n\
         status: {addresses: [{type: InternalIP, address: 192.0.2.10}]}\n---\n",
    );
    for (name, ifname, addr, app) in PODS {
        if *name != "web-2" || web2 {
            s.push_str(&pod_yaml(name, ifname, addr, app));
        }
    }
    s.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
         spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}\n---\n",
    );
    let from: Vec<String> = allowed
        .iter()
        .map(|a| format!("{{podSelector: {{matchLabels: {{app: {a}}}}}}}"))
        .collect();
    s.push_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: web, namespace: shop}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{from: [{}], ports: [{{port: http}}]}}]\n",
        from.join(", ")
    ));
    s
}

/// The VM, defined by the host's admin in /etc/kldnet: same namespace and labels as the pods.
const VM_TOML: &str = "[[endpoint]]\nname = \"vm-1\"\nnamespace = \"shop\"\ninterface = \"vnet21\"\n\
                       addresses = [\"10.244.1.31\"]\nlabels = { app = \"web\" }\n\
                       ports = [{ name = \"http\", port = 8080, protocol = \"tcp\" }]\n";

fn render(sbx: &Sandbox, yaml: &str) -> Result<()> {
    let input = sbx.dir().join("app.yaml");
    std::fs::write(&input, yaml)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kldnet-kube-adapter"))
        .args(["render", "--node", "node-a", "--no-node-section", "-f"])
        .arg(&input)
        .arg("-o")
        .arg(sbx.config_dir())
        .output()?;
    if !out.status.success() {
        bail!("render failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn status(kldnet: &Path, sbx: &Sandbox) -> Value {
    let out = std::process::Command::new(kldnet)
        .arg("--run-dir")
        .arg(sbx.run_dir())
        .args(["status", "--json"])
        .output()
        .expect("kldnet status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `kldnet probe connect tcp` from workload `from`: (ok, replies by server name).
fn probe(kldnet: &Path, sbx: &Sandbox, from: &str, target: &str, count: u32) -> (u64, Value) {
    let w = sbx.workload(from).expect("workload").clone();
    let mut args = vec!["probe".to_string()];
    args.extend(probe_cli::connect_args(
        Proto::Tcp,
        target.parse().unwrap(),
        count,
        Duration::from_millis(400),
    ));
    let out = sbx
        .workload_command(&w, kldnet, &args)
        .output()
        .expect("probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or(Value::Null);
    (v["ok"].as_u64().unwrap_or(0), v["replies"].clone())
}

#[test]
fn rendered_manifests_serve_and_follow_changes() -> Result<()> {
    if skip_unless_root("rendered_manifests_serve_and_follow_changes") {
        return Ok(());
    }
    let (Some(kldnetd), Some(kldnet)) = (sibling_bin("kldnetd"), sibling_bin("kldnet")) else {
        eprintln!("skipping: kldnetd/kldnet not built in this target dir (cargo build -p kldnet)");
        return Ok(());
    };
    let mut sbx = Sandbox::new("kube-e2e")?;
    for (name, ifname, addr, _) in PODS {
        sbx.add_workload(WorkloadSpec::new(name, ifname, &[addr.parse()?]))?;
    }
    sbx.add_workload(WorkloadSpec::new("vm-1", "vnet21", &["10.244.1.31".parse()?]).vm())?;
    sbx.write_config(
        "kldnet.toml",
        "[node]\nname = \"node-a\"\naddress = \"192.0.2.10\"\nendpoint_cidrs = [\"10.244.1.0/24\"]\n",
    )?;
    sbx.write_config("vms.toml", VM_TOML)?;
    render(&sbx, &manifests(true, &["client"]))?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for name in ["web-1", "web-2", "vm-1"] {
        let w = sbx.workload(name).context("workload")?.clone();
        let bind = SocketAddr::new(w.addr().into(), 8080);
        let server = sbx.run_in_netns(&w.netns, || Server::bind(Proto::Tcp, bind))??;
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let _ = server.run_until(name, 120, &stop);
        }));
    }
    let _daemon = sbx.start_daemon(&kldnetd, &[])?;
    let result = (|| -> Result<()> {
        let st = status(&kldnet, &sbx);
        let generation = st["generation"].as_u64().unwrap_or(0);

        // The Service balances over both pods and the VM (selector resolution).
        let (ok, replies) = probe(&kldnet, &sbx, "client", VIP, 30);
        if ok != 30 {
            bail!("client → {VIP}: {ok}/30 ok, replies {replies}");
        }
        for who in ["web-1", "web-2", "vm-1"] {
            if replies[who].as_u64().unwrap_or(0) == 0 {
                bail!("client → {VIP}: no reply from {who}: {replies}");
            }
        }
        // The NetworkPolicy admits app=client only.
        let (ok, _) = probe(&kldnet, &sbx, "client", "10.244.1.21:8080", 3);
        if ok != 3 {
            bail!("client → web-1:8080 allowed by policy, got {ok}/3");
        }
        let (ok, _) = probe(&kldnet, &sbx, "other", "10.244.1.21:8080", 3);
        if ok != 0 {
            bail!("other → web-1:8080 denied by policy, got {ok}/3");
        }

        // The manifests change: web-2 is gone, the policy admits app=other too.
        render(&sbx, &manifests(false, &["client", "other"]))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while status(&kldnet, &sbx)["generation"].as_u64().unwrap_or(0) <= generation {
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not reload the rendered files: {}",
                    status(&kldnet, &sbx)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (ok, replies) = probe(&kldnet, &sbx, "client", VIP, 30);
        if ok != 30
            || replies["web-2"].as_u64().unwrap_or(0) != 0
            || replies["vm-1"].as_u64().unwrap_or(0) == 0
        {
            bail!(
                "after the change, client → {VIP}: {ok}/30 ok, replies {replies} (web-2 gone, vm-1 kept)"
            );
        }
        let (ok, _) = probe(&kldnet, &sbx, "other", "10.244.1.21:8080", 3);
        if ok != 3 {
            bail!("after the change, other → web-1:8080 allowed, got {ok}/3");
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let Err(e) = &result {
        eprintln!("daemon log:\n{}", kldnet_testkit::tail(&_daemon.log(), 60));
        eprintln!(
            "config dir: {:?}",
            std::fs::read_dir(sbx.config_dir()).map(|d| d.count())
        );
        return Err(anyhow::anyhow!("{e:#}"));
    }
    Ok(())
}
