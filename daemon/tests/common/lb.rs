// SPDX-License-Identifier: Apache-2.0
//! Helpers for the service load-balancing end-to-end tests: a sandbox with containers,
//! VMs and an outside host, in-process servers, probes from every kind of client, and
//! the daemon's LB counters.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kldnet_testkit::probe::Server;
use kldnet_testkit::{
    Attempt, ExternalSpec, ProbeOptions, ProbeReport, Proto, Sandbox, WorkloadSpec, probe_with,
};
use serde_json::Value;

use super::{cli, kldnet, status};

/// Node name written into `[node]`.
pub const NODE: &str = "node-a";
/// The outside host's address.
pub const OUTSIDE_ADDR: &str = "203.0.113.50";
/// The uplink (node side of the outside host's veth).
pub const UPLINK: &str = "uplink0";

/// A workload of the standard LB sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Ep {
    pub name: &'static str,
    pub ifname: &'static str,
    pub addr: &'static str,
    /// Inline TOML table of labels.
    pub labels: &'static str,
    /// A "VM" (processes outside the LB cgroup: per-packet LB) rather than a container.
    pub vm: bool,
}

/// The standard LB sandbox: a container client, a VM client, three VM backends (`app=web`).
pub const EPS: &[Ep] = &[
    Ep {
        name: "c1",
        ifname: "vnet1",
        addr: "10.244.1.10",
        labels: "{ app = \"client\" }",
        vm: false,
    },
    Ep {
        name: "vm1",
        ifname: "vnet2",
        addr: "10.244.1.11",
        labels: "{ app = \"vmclient\" }",
        vm: true,
    },
    Ep {
        name: "b1",
        ifname: "vnet11",
        addr: "10.244.1.21",
        labels: "{ app = \"web\" }",
        vm: true,
    },
    Ep {
        name: "b2",
        ifname: "vnet12",
        addr: "10.244.1.22",
        labels: "{ app = \"web\" }",
        vm: true,
    },
    Ep {
        name: "b3",
        ifname: "vnet13",
        addr: "10.244.1.23",
        labels: "{ app = \"web\" }",
        vm: true,
    },
];

/// Address of the standard workload `name`.
pub fn addr_of(name: &str) -> Ipv4Addr {
    EPS.iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no workload {name}"))
        .addr
        .parse()
        .expect("address")
}

/// `ip:port` as a socket address.
pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

/// `[node]` with the sandbox's node address and the outside host's uplink.
pub fn node_toml() -> String {
    format!(
        "[node]\nname = \"{NODE}\"\naddress = \"192.0.2.10\"\nendpoint_cidrs = [\"10.244.1.0/24\"]\n\
         cluster_cidrs = [\"10.244.0.0/16\"]\nuplinks = [\"{UPLINK}\"]\n"
    )
}

/// A peer node (for backends on another node).
pub const PEER_TOML: &str = "[[peer]]\nname = \"node-b\"\naddress = \"192.0.2.11\"\n\
                             endpoint_cidrs = [\"10.244.2.0/24\"]\n";

/// `[[endpoint]]` of every standard workload.
pub fn endpoints_toml() -> String {
    EPS.iter()
        .map(|e| {
            format!(
                "[[endpoint]]\nname = \"{}\"\ninterface = \"{}\"\naddresses = [\"{}\"]\nlabels = {}\n\n",
                e.name, e.ifname, e.addr, e.labels
            )
        })
        .collect()
}

/// The standard LB sandbox (workloads of [`EPS`], the outside host on [`UPLINK`]) with
/// `kldnet.toml`, `endpoints.toml` and `services.toml` written; the daemon is not started.
pub fn lb_sandbox(label: &str, services: &str) -> Result<Sandbox> {
    let mut sbx = Sandbox::new(label)?;
    for e in EPS {
        let spec = WorkloadSpec::new(e.name, e.ifname, &[e.addr.parse()?]);
        sbx.add_workload(if e.vm { spec.vm() } else { spec })?;
    }
    sbx.add_external(ExternalSpec::new("outside", UPLINK, OUTSIDE_ADDR.parse()?))?;
    sbx.write_config("kldnet.toml", &node_toml())?;
    sbx.write_config("endpoints.toml", &endpoints_toml())?;
    sbx.write_config("services.toml", services)?;
    Ok(sbx)
}

/// In-process servers bound inside workload namespaces; stopped (and joined) on drop.
///
/// TCP: every connection gets `<name>\n` at once, then each line it sends comes back as
/// `<name> <line>\n` until it closes (so a connection can be long-lived). UDP: every
/// datagram gets `<name>\n` from the address it was sent to.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// (server name, peer address) of every accepted TCP connection.
    peers: Arc<std::sync::Mutex<Vec<(String, SocketAddr)>>>,
}

impl Servers {
    pub fn new() -> Servers {
        Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            peers: Arc::default(),
        }
    }

    /// Peer addresses of the TCP connections server `name` accepted so far.
    pub fn tcp_peers(&self, name: &str) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .expect("peers")
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .collect()
    }

    /// Serves `proto` on `<workload address>:port` in workload `name`, replying `name`.
    pub fn add(&mut self, sbx: &Sandbox, name: &str, proto: Proto, port: u16) -> Result<()> {
        let w = sbx
            .workload(name)
            .with_context(|| format!("no workload {name}"))?
            .clone();
        let bind = SocketAddr::new(w.addr().into(), port);
        let stop = self.stop.clone();
        let reply = name.to_string();
        match proto {
            Proto::Udp => {
                let s = sbx.run_in_netns(&w.netns, || Server::bind(Proto::Udp, bind))??;
                self.threads.push(std::thread::spawn(move || {
                    let _ = s.run_until(&reply, 600, &stop);
                }));
            }
            Proto::Tcp => {
                let l = sbx.run_in_netns(&w.netns, || TcpListener::bind(bind))??;
                l.set_nonblocking(true)?;
                let peers = self.peers.clone();
                self.threads
                    .push(std::thread::spawn(move || tcp_echo(l, reply, stop, peers)));
            }
        }
        Ok(())
    }

    /// TCP and UDP servers on `port` in each named workload.
    pub fn both(sbx: &Sandbox, names: &[&str], tcp: u16, udp: u16) -> Result<Servers> {
        let mut s = Servers::new();
        for n in names {
            s.add(sbx, n, Proto::Tcp, tcp)?;
            s.add(sbx, n, Proto::Udp, udp)?;
        }
        Ok(s)
    }
}

impl Default for Servers {
    fn default() -> Self {
        Servers::new()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_echo(
    l: TcpListener,
    name: String,
    stop: Arc<AtomicBool>,
    peers: Arc<std::sync::Mutex<Vec<(String, SocketAddr)>>>,
) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, peer)) => {
                if let Ok(mut p) = peers.lock() {
                    p.push((name.clone(), peer));
                }
                let name = name.clone();
                let stop = stop.clone();
                conns.push(std::thread::spawn(move || echo_conn(s, &name, &stop)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        conns.retain(|c: &JoinHandle<()>| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

fn echo_conn(mut s: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    if s.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    if s.write_all(format!("{name} {text}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// One client attempt with its wall-clock start.
#[derive(Debug, Clone)]
pub struct Shot {
    pub unix_ms: u64,
    pub us: u64,
    /// Reply text, or the error.
    pub outcome: Result<String, String>,
}

impl From<&Attempt> for Shot {
    fn from(a: &Attempt) -> Shot {
        Shot {
            unix_ms: a.unix_ms,
            us: a.elapsed_us,
            outcome: a.outcome.clone(),
        }
    }
}

/// What a batch of attempts saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub shots: Vec<Shot>,
}

impl Tally {
    pub fn attempts(&self) -> usize {
        self.shots.len()
    }
    pub fn ok(&self) -> usize {
        self.shots.iter().filter(|s| s.outcome.is_ok()).count()
    }
    pub fn failures(&self) -> Vec<String> {
        self.shots
            .iter()
            .filter_map(|s| {
                s.outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("@{}: {e}", s.unix_ms))
            })
            .collect()
    }
    pub fn replies(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in &self.shots {
            if let Ok(r) = &s.outcome {
                *m.entry(r.clone()).or_default() += 1;
            }
        }
        m
    }
    pub fn count(&self, who: &str) -> usize {
        self.replies().get(who).copied().unwrap_or(0)
    }
    /// Reply texts in order (errors as `!error`).
    pub fn sequence(&self) -> Vec<String> {
        self.shots
            .iter()
            .map(|s| match &s.outcome {
                Ok(r) => r.clone(),
                Err(e) => format!("!{e}"),
            })
            .collect()
    }
    /// `b1:20 b2:19 … (failures N)`.
    pub fn summary(&self) -> String {
        let r: Vec<String> = self
            .replies()
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let f = self.failures();
        format!(
            "{} attempts, {} ok [{}]{}",
            self.attempts(),
            self.ok(),
            r.join(" "),
            f.first()
                .map(|x| format!(", {} failed, first: {x}", f.len()))
                .unwrap_or_default()
        )
    }
}

/// Kinds of client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `kldnet probe` subprocess in the workload's netns and in the LB cgroup (socket LB).
    Container,
    /// In-process in the workload's or outside host's netns, outside the cgroup (tc LB).
    Packet,
}

/// Longest a batch of attempts may run (a broken path must not keep a test busy for
/// `count × timeout`): attempts stop being started after this.
pub const SHOOT_CAP: Duration = Duration::from_secs(30);

/// Probes `target` from netns `ns` as `client`; every attempt is recorded. Stops starting
/// attempts after [`SHOOT_CAP`] unless `opts.duration` says otherwise.
#[allow(clippy::too_many_arguments)]
pub fn shoot(
    sbx: &Sandbox,
    ns: &str,
    client: Client,
    proto: Proto,
    target: SocketAddr,
    count: u32,
    timeout: Duration,
    opts: &ProbeOptions,
) -> Tally {
    let mut capped = opts.clone();
    capped.duration.get_or_insert(SHOOT_CAP);
    let opts = &capped;
    match client {
        Client::Packet => {
            let mut t = Tally::default();
            let ns = ns.to_string();
            let opts = opts.clone();
            let shots = sbx
                .run_in_netns(&ns, move || {
                    let mut v = Vec::new();
                    let _: ProbeReport = probe_with(proto, target, count, timeout, &opts, |a| {
                        v.push(Shot::from(a))
                    });
                    v
                })
                .expect("enter netns");
            t.shots = shots;
            t
        }
        Client::Container => {
            let out = sbx
                .command_in(
                    ns,
                    kldnet(),
                    &container_args(proto, target, count, timeout, opts),
                    true,
                )
                .output()
                .expect("run kldnet probe");
            parse_shots(&String::from_utf8_lossy(&out.stdout))
        }
    }
}

/// `kldnet probe connect … --each` arguments.
pub fn container_args(
    proto: Proto,
    target: SocketAddr,
    count: u32,
    timeout: Duration,
    opts: &ProbeOptions,
) -> Vec<String> {
    let mut args = vec!["probe".to_string()];
    args.extend(kldnet_testkit::probe_cli::connect_args(
        proto, target, count, timeout,
    ));
    args.push("--each".into());
    if !opts.interval.is_zero() {
        args.extend([
            "--interval-ms".into(),
            opts.interval.as_millis().to_string(),
        ]);
    }
    if let Some(d) = opts.duration {
        args.extend(["--duration-ms".into(), d.as_millis().to_string()]);
    }
    if let Some(p) = opts.source_port {
        args.extend(["--source-port".into(), p.to_string()]);
    }
    args
}

/// Attempt lines (`{"i":…}`) of a `--each` probe's stdout.
pub fn parse_shots(stdout: &str) -> Tally {
    let mut t = Tally::default();
    for line in stdout.lines().filter(|l| l.starts_with("{\"i\":")) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let outcome = if v["ok"] == true {
            Ok(v["reply"].as_str().unwrap_or("").to_string())
        } else {
            Err(v["error"].as_str().unwrap_or("?").to_string())
        };
        t.shots.push(Shot {
            unix_ms: v["unix_ms"].as_u64().unwrap_or(0),
            us: v["us"].as_u64().unwrap_or(0),
            outcome,
        });
    }
    t
}

/// Background client: new connections every `interval` for `duration`.
pub struct Looper {
    handle: Option<JoinHandle<Tally>>,
    child: Option<kldnet_testkit::ChildGuard>,
    deadline: Instant,
}

impl Looper {
    /// Starts a client loop from netns `ns` (see [`Client`]).
    pub fn start(
        sbx: &Sandbox,
        ns: &str,
        client: Client,
        proto: Proto,
        target: SocketAddr,
        interval: Duration,
        duration: Duration,
    ) -> Result<Looper> {
        let opts = ProbeOptions {
            source_port: None,
            interval,
            duration: Some(duration),
        };
        let timeout = Duration::from_secs(1);
        let count = u32::MAX;
        let deadline = Instant::now() + duration + Duration::from_secs(10);
        match client {
            Client::Packet => {
                let fd = kldnet_testkit::netns::open_netns(ns)?;
                let handle = std::thread::spawn(move || {
                    // SAFETY: setns on this thread only, with a valid namespace fd.
                    let rc = unsafe {
                        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET)
                    };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    let mut v = Vec::new();
                    probe_with(proto, target, count, timeout, &opts, |a| {
                        v.push(Shot::from(a))
                    });
                    Tally { shots: v }
                });
                Ok(Looper {
                    handle: Some(handle),
                    child: None,
                    deadline,
                })
            }
            Client::Container => {
                let args = container_args(proto, target, count, timeout, &opts);
                let child = sbx.spawn(sbx.command_in(ns, kldnet(), &args, true))?;
                Ok(Looper {
                    handle: None,
                    child: Some(child),
                    deadline,
                })
            }
        }
    }

    /// Waits for the loop to end and returns what it saw.
    pub fn finish(mut self) -> Result<Tally> {
        if let Some(h) = self.handle.take() {
            return h
                .join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"));
        }
        let mut child = self.child.take().context("no client")?;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if child.wait_timeout(left)?.is_none() {
            let _ = child.terminate();
            bail!(
                "client loop did not finish in time\n{}",
                child.output_tails()
            );
        }
        Ok(parse_shots(&child.stdout()))
    }
}

/// Generation and last-reload status of the daemon.
pub fn generation_now(sbx: &Sandbox) -> u64 {
    status(sbx)["generation"].as_u64().unwrap_or(0)
}

/// Waits until the daemon's generation moves past `before` with a successful reload;
/// returns how long that took.
pub fn wait_applied(sbx: &Sandbox, before: u64, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let st = status(sbx);
        let g = st["generation"].as_u64().unwrap_or(0);
        if g > before {
            if st["last_reload"]["ok"] != true {
                bail!("reload failed: {}", st["last_reload"]);
            }
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!(
                "generation still {g} (want > {before}) after {timeout:?}; last reload {}",
                st["last_reload"]
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `file` and waits until the daemon applied it.
pub fn apply(sbx: &Sandbox, file: &str, contents: &str) -> Result<Duration> {
    let before = generation_now(sbx);
    sbx.write_config(file, contents)?;
    wait_applied(sbx, before, Duration::from_secs(10))
}

/// Sum over CPUs of `kld_counters[idx]` (the datapath's health counters).
pub fn counter(sbx: &Sandbox, idx: u32) -> Result<u64> {
    let path = super::pin_dir(sbx).join(kldnet_bpf::abi::MAP_COUNTERS);
    let data =
        aya::maps::MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
    let arr: aya::maps::PerCpuArray<_, u64> =
        aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
    let vals = arr.get(&idx, 0)?;
    Ok(vals.iter().sum())
}

/// `kldnet service list` and `kldnet bpf lb list` (for failure messages).
pub fn lb_dump(sbx: &Sandbox) -> String {
    let s = cli(sbx, &["service", "list"]);
    let l = cli(sbx, &["bpf", "lb", "list"]);
    format!(
        "--- kldnet service list\n{}--- kldnet bpf lb list\n{}",
        s.stdout, l.stdout
    )
}

/// A table: header and rows, columns padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out += &line(r.clone());
        out.push('\n');
    }
    out
}

/// Starts kldnetd and checks that the first reload applied the config.
pub fn start_ok(sbx: &Sandbox) -> Result<kldnet_testkit::DaemonGuard> {
    let d = super::start(sbx)?;
    let st = status(sbx);
    if st["last_reload"]["ok"] != true || st["generation"].as_u64().unwrap_or(0) == 0 {
        bail!(
            "kldnetd did not apply the test config: last_reload {}\n{}",
            st["last_reload"],
            kldnet_testkit::tail(&d.log(), 20)
        );
    }
    Ok(d)
}
