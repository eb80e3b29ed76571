// SPDX-License-Identifier: Apache-2.0
//! `kldnet demo`: the example configuration in an isolated sandbox, with real traffic.
//!
//! Every local endpoint of the example becomes a network namespace wired to a node
//! namespace by a veth named like its `interface`; kldnetd runs in the node namespace
//! with its own bpffs, cgroup and config dir. Backends serve TCP/UDP and answer with
//! their name; the frontend connects to the service VIPs and the demo shows the spread.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use kldnet_testkit::{Proto, Sandbox, WorkloadSpec, probe_cli};

use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Config dir to run (default: ./examples/etc/kldnet, else the packaged examples).
    #[arg(long = "config-dir")]
    pub config_dir: Option<PathBuf>,
    /// Keep the sandbox up this many seconds after the traffic (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
}

const PACKAGED_EXAMPLES: &str = "/usr/share/doc/kldnet/examples/etc/kldnet";

pub fn run(args: DemoArgs) -> i32 {
    match demo(args) {
        Ok(true) => EXIT_OK,
        Ok(false) => EXIT_FAILURE,
        Err(e) => {
            eprintln!("kldnet demo: {e:#}");
            EXIT_FAILURE
        }
    }
}

fn find_config(arg: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = arg {
        return Ok(dir);
    }
    for candidate in ["examples/etc/kldnet", PACKAGED_EXAMPLES] {
        if Path::new(candidate).join("kldnet.toml").exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!("no example config found: run from the source tree or pass --config-dir")
}

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn demo(args: DemoArgs) -> Result<bool> {
    if !kldnet_testkit::is_root() {
        bail!(
            "the demo creates network namespaces, a cgroup and a bpffs mount: run it as root (sudo)"
        );
    }
    let config_dir = find_config(args.config_dir)?;
    let (spec, diags) = kldnet_config::load_dirs(std::slice::from_ref(&config_dir));
    if diags.has_errors() {
        print!("{diags}");
        bail!("{} does not pass `kldnet check`", config_dir.display());
    }
    let exe = std::env::current_exe().context("locate kldnet")?;
    let kldnetd = exe.with_file_name("kldnetd");
    if !kldnetd.exists() {
        bail!(
            "kldnetd not found next to {} (build it: cargo build --bins)",
            exe.display()
        );
    }

    step(&format!("sandbox for {}", config_dir.display()));
    let node = spec.node();
    let mut builder = Sandbox::builder("demo");
    if let Some(IpAddr::V4(a)) = node.address {
        builder.node_addr = a;
    }
    let mut sbx = builder.build()?;
    let this_node = spec.node_name("");
    for ep in spec
        .endpoints
        .iter()
        .filter(|e| e.node.as_ref().is_none_or(|n| *n == this_node))
    {
        let addrs: Vec<_> = ep
            .addresses
            .iter()
            .filter_map(|a| {
                if let IpAddr::V4(v) = a {
                    Some(*v)
                } else {
                    None
                }
            })
            .collect();
        let ifname = ep
            .interface
            .clone()
            .unwrap_or_else(|| format!("kld{}", sbx.workloads().len()));
        let w = sbx.add_workload(WorkloadSpec::new(&ep.name, &ifname, &addrs))?;
        println!(
            "  workload {:<12} {}/{:<12} {:<14} host side {}",
            w.name,
            ep.namespace,
            ep.name,
            format!("{:?}", addrs),
            ifname
        );
    }
    sbx.copy_config_from(&config_dir)?;
    println!(
        "  node netns {}, cgroup {}, bpffs {}",
        sbx.node_netns(),
        sbx.cgroup_dir().display(),
        sbx.bpf_root().display()
    );

    step("kldnetd");
    let daemon = sbx.start_daemon(&kldnetd, &[])?;
    println!(
        "  started, pid {} (log: {})",
        daemon.pid(),
        daemon.log_path().display()
    );

    // Backends answer with their name on their named ports (TCP 8080, UDP 5353).
    let mut servers = Vec::new();
    for w in sbx.workloads().to_vec() {
        for (proto, port) in [(Proto::Tcp, 8080), (Proto::Udp, 5353)] {
            let bind = SocketAddr::new(IpAddr::V4(w.addr()), port);
            let cmd = sbx.workload_command(
                &w,
                &exe,
                &with_probe(probe_cli::serve_args(proto, bind, &w.name, 600)),
            );
            let mut child = sbx.spawn(cmd)?;
            child.wait_for_stdout("listening", Duration::from_secs(5))?;
            servers.push(child);
        }
    }

    let socket = sbx.socket_path();
    let run_dir = sbx.run_dir();
    step(&format!("kldnet --run-dir {} status", run_dir.display()));
    super::show::status(&socket, false);
    step("kldnet service list");
    super::show::services(&socket, super::Output::Table);

    let mut ok = true;
    if let Some(client) = sbx
        .workloads()
        .iter()
        .find(|w| w.name.starts_with("frontend"))
        .cloned()
    {
        for svc in spec
            .services
            .iter()
            .filter(|s| s.service_type == kldnet_config::schema::ServiceType::ClusterIP)
        {
            for port in &svc.ports {
                let Some(IpAddr::V4(vip)) = svc.addresses.first().copied() else {
                    continue;
                };
                let proto = if port.protocol == kldnet_config::types::Protocol::Udp {
                    Proto::Udp
                } else {
                    Proto::Tcp
                };
                let target = SocketAddr::new(IpAddr::V4(vip), port.port);
                step(&format!(
                    "{} → service {}/{} at {target}/{proto} (20 new connections)",
                    client.name, svc.namespace, svc.name
                ));
                let args = with_probe(probe_cli::connect_args(
                    proto,
                    target,
                    20,
                    Duration::from_secs(2),
                ));
                let out = sbx
                    .workload_command(&client, &exe, &args)
                    .output()
                    .context("run probe")?;
                let line = String::from_utf8_lossy(&out.stdout);
                println!("  {}", line.trim());
                ok &= out.status.success();
            }
        }
    }

    step("kldnet bpf lb list");
    super::show::map_dump(&socket, "lb", super::Output::Table);

    // Live flows of that traffic, plus one connection the policies deny.
    if let Some(intruder) = sbx.workloads().iter().find(|w| w.name == "intruder") {
        let target = SocketAddr::from(([10, 96, 120, 45], 80));
        step(&format!(
            "{} → {target} (a policy denies it)",
            intruder.name
        ));
        let args = with_probe(probe_cli::connect_args(
            Proto::Tcp,
            target,
            1,
            Duration::from_millis(500),
        ));
        let out = sbx.workload_command(intruder, &exe, &args).output();
        let line = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        println!("  {}", line.unwrap_or_default().trim());
    }
    std::thread::sleep(Duration::from_millis(300));
    step("kldnet observe --last 20");
    super::observe::print_last(&socket, 20);

    let wait = args.duration.map(Duration::from_secs);
    match wait {
        Some(d) if d.is_zero() => {}
        Some(d) => {
            println!(
                "\nsandbox stays up for {}s; try: kldnet --run-dir {} status",
                d.as_secs(),
                run_dir.display()
            );
            std::thread::sleep(d);
        }
        None => {
            println!(
                "\nsandbox is up; try: sudo kldnet --run-dir {} status   (Ctrl-C tears it down)",
                run_dir.display()
            );
            wait_for_ctrl_c();
        }
    }
    step("teardown");
    let started = Instant::now();
    drop(servers);
    drop(daemon);
    drop(sbx);
    println!(
        "  removed namespaces, cgroup, bpffs and files in {} ms",
        started.elapsed().as_millis()
    );
    println!(
        "\n{}",
        if ok {
            "demo passed"
        } else {
            "demo FAILED: some connections did not get through"
        }
    );
    Ok(ok)
}

fn with_probe(mut args: Vec<String>) -> Vec<String> {
    args.insert(0, "probe".into());
    args
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
