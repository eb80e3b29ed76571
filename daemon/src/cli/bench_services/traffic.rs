// SPDX-License-Identifier: Apache-2.0
//! (c) connect() latency to the last service and (e) throughput through a VIP, with real
//! traffic in one sandbox: a backend namespace, one client namespace per load balancer.
//!
//! ```text
//!  plain   (10.2.0.1)  no LB: the baseline, connects straight to the backend
//!  legacy  (10.2.0.3)  kube-proxy iptables rules, iptables-legacy, nat OUTPUT
//!  iptnft  (10.2.0.4)  the same rules through iptables-nft
//!  nft     (10.2.0.5)  kube-proxy nftables rules (verdict map), nat output hook
//!  pod     (10.2.0.2)  in the sandbox cgroup: kldnet socket LB at connect()
//!  vm      (10.2.0.6)  outside the cgroup: kldnet per-packet LB at tc on its veth
//!  backend (10.1.0.1…) accept loops on :8080, iperf3 on 10.1.0.1:5201
//! ```
//! All cross the sandbox's node namespace, where kldnetd runs with every service; the
//! netfilter rules live in the client namespaces only (as kube-proxy's OUTPUT rules serve
//! a host's own processes).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kldnet_testkit::{ChildGuard, DaemonGuard, Sandbox, Workload, WorkloadSpec};

use super::program::Netfilter;
use super::rules::{self, BenchService};

/// Port the backends accept connections on.
const SERVER_PORT: u16 = 8080;
/// The iperf3 service: its own VIP with one backend (iperf3's control and data
/// connections must reach the same server).
const IPERF_VIP: Ipv4Addr = Ipv4Addr::new(10, 95, 0, 1);
const IPERF_PORT: u16 = 5201;
/// Untimed connects a client makes first.
pub const WARMUP: u32 = 20;

/// How a client reaches the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lb {
    Direct,
    Netfilter(Netfilter),
    Socket,
    Tc,
}

impl Lb {
    pub fn label(self) -> &'static str {
        match self {
            Lb::Direct => "direct (no LB)",
            Lb::Netfilter(nf) => nf.label(),
            Lb::Socket => "kldnet socket LB",
            Lb::Tc => "kldnet tc per-packet LB",
        }
    }
}

struct Client {
    lb: Lb,
    w: Workload,
}

/// Percentiles of one set of connect() samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// connect() calls that timed out (2 s), not in the percentiles.
    pub timeouts: u32,
}

impl Latency {
    fn of((mut v, timeouts): (Vec<u64>, u32)) -> Latency {
        v.sort_unstable();
        if v.is_empty() {
            return Latency {
                timeouts,
                ..Latency::default()
            };
        }
        let pct = |p: usize| v[((p * v.len()).div_ceil(100)).max(1) - 1];
        Latency {
            p50_ns: pct(50),
            p99_ns: pct(99),
            timeouts,
        }
    }
}

/// (c) for one client: through its LB to the last service, and straight to the backend.
#[derive(Clone, Debug)]
pub struct ConnectRow {
    pub lb: Lb,
    pub vip: Latency,
    pub direct: Latency,
}

/// The sandbox and what runs in it. Drop stops the servers, then the sandbox removes
/// namespaces, cgroup, bpffs and processes.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
    iperf: Option<ChildGuard>,
    daemon: Option<DaemonGuard>,
    clients: Vec<Client>,
    /// Load balancers left out at the current size (their programming timed out).
    skipped: Vec<Lb>,
    backend: Workload,
    backends: Vec<SocketAddrV4>,
    exe: PathBuf,
    kldnetd: PathBuf,
    sbx: Sandbox,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        drop(self.iperf.take());
        drop(self.daemon.take());
    }
}

/// Accepts and drops connections until `stop`. The backlog is raised to 4096 and the
/// queue drained on every wake-up: connects arrive every ~30 µs, and a server thread
/// starved for a few ms on a busy machine must not overflow the queue (dropped SYNs
/// would show up as 1 s retransmits in the client's latency).
pub fn accept_loop(l: TcpListener, stop: Arc<AtomicBool>) {
    // SAFETY: listen(2) on our listening socket only changes its backlog.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    let _ = l.set_nonblocking(true);
    let mut pfd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, 200) } > 0 {
            while l.accept().is_ok() {}
        }
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, v: &T) -> io::Result<()> {
    // SAFETY: v points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `count` sequential blocking connect()s to `target` (after [`WARMUP`] untimed ones), each
/// closed with an RST (SO_LINGER 0: no TIME_WAIT piling up). Returns nanoseconds per
/// successful connect() and how many timed out (2 s); any other error is fatal.
pub fn connect_loop(target: SocketAddrV4, count: u32) -> Result<(Vec<u64>, u32)> {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: target.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*target.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let mut out = Vec::with_capacity(count as usize);
    let mut timeouts = 0;
    for i in 0..count + WARMUP {
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            bail!("socket: {}", io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A blocking connect() gives up after SO_SNDTIMEO.
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)?;
        let t = Instant::now();
        // SAFETY: sa is a valid sockaddr_in of the size passed.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let d = t.elapsed();
        if rc != 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EINPROGRESS) | Some(libc::ETIMEDOUT)
            ) {
                timeouts += 1;
                continue;
            }
            bail!("connect {target} (attempt {i}): {e}");
        }
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
        drop(fd);
        if i >= WARMUP {
            out.push(d.as_nanos() as u64);
        }
    }
    Ok((out, timeouts))
}

/// Node and endpoint configuration of the sandbox's kldnetd.
fn node_toml(endpoints: &[&Workload]) -> String {
    let mut s =
        String::from("[node]\nname = \"bench\"\naddress = \"192.0.2.10\"\nsocket_lb = true\n\n");
    for w in endpoints {
        let addrs: Vec<String> = w.addrs.iter().map(|a| format!("\"{a}\"")).collect();
        s.push_str(&format!(
            "[[endpoint]]\nname = \"{}\"\nnamespace = \"{}\"\ninterface = \"{}\"\naddresses = [{}]\nlabels = {{ app = \"{}\" }}\n\n",
            w.name,
            rules::NAMESPACE,
            w.host_ifname,
            addrs.join(", "),
            w.name
        ));
    }
    s
}

impl Traffic {
    /// Builds the sandbox with `backends` backend addresses and starts their servers.
    pub fn create(backends: u32, exe: &Path, kldnetd: &Path) -> Result<Traffic> {
        let mut sbx = Sandbox::builder("bench-services").build()?;
        let be_addrs: Vec<Ipv4Addr> = (1..=backends.max(1))
            .map(|j| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + j))
            .collect();
        let backend =
            sbx.add_workload(WorkloadSpec::new("backend", "kbbackend", &be_addrs).vm())?;
        let mut clients = Vec::new();
        for (lb, name, octet) in [
            (Lb::Direct, "plain", 1u8),
            (Lb::Netfilter(Netfilter::IptablesLegacy), "legacy", 3),
            (Lb::Netfilter(Netfilter::IptablesNft), "iptnft", 4),
            (Lb::Netfilter(Netfilter::Nftables), "nft", 5),
            (Lb::Socket, "pod", 2),
            (Lb::Tc, "vm", 6),
        ] {
            let spec = WorkloadSpec::new(
                name,
                &format!("kb{name}"),
                &[Ipv4Addr::new(10, 2, 0, octet)],
            );
            let spec = if lb == Lb::Socket { spec } else { spec.vm() };
            let w = sbx.add_workload(spec)?;
            clients.push(Client { lb, w });
        }
        let endpoints: Vec<&Workload> = clients
            .iter()
            .filter(|c| matches!(c.lb, Lb::Socket | Lb::Tc))
            .map(|c| &c.w)
            .chain([&backend])
            .collect();
        sbx.write_config("node.toml", &node_toml(&endpoints))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Vec::new();
        for a in &be_addrs {
            let bind = SocketAddrV4::new(*a, SERVER_PORT);
            let l = sbx
                .run_in_netns(&backend.netns, || TcpListener::bind(bind))?
                .with_context(|| format!("listen on {bind}"))?;
            let stop = stop.clone();
            servers.push(std::thread::spawn(move || accept_loop(l, stop)));
        }
        Ok(Traffic {
            stop,
            servers,
            iperf: None,
            daemon: None,
            clients,
            skipped: Vec::new(),
            backends: be_addrs
                .iter()
                .map(|a| SocketAddrV4::new(*a, SERVER_PORT))
                .collect(),
            backend,
            exe: exe.to_path_buf(),
            kldnetd: kldnetd.to_path_buf(),
            sbx,
        })
    }

    /// The real servers, as backends of the last service.
    pub fn backends(&self) -> &[SocketAddrV4] {
        &self.backends
    }

    fn iperf_service(&self) -> BenchService {
        BenchService {
            name: "iperf".into(),
            vip: IPERF_VIP,
            port: IPERF_PORT,
            backends: vec![SocketAddrV4::new(
                self.backends[0].ip().to_owned(),
                IPERF_PORT,
            )],
        }
    }

    /// Programs `svcs` (plus the iperf3 service, first) into every load balancer: the
    /// client namespaces' netfilter rules and kldnetd (started on first use, reloaded after).
    /// Back ends in `skip` are left out (emptied); commands are killed after `limit`.
    pub fn configure(
        &mut self,
        svcs: &[BenchService],
        skip: &[Netfilter],
        limit: Duration,
    ) -> Result<()> {
        let mut all = vec![self.iperf_service()];
        all.extend_from_slice(svcs);
        let jumps = self.sbx.dir().join("jumps.rules");
        std::fs::write(&jumps, rules::iptables_jumps())?;
        self.skipped = skip.iter().map(|nf| Lb::Netfilter(*nf)).collect();
        for c in &self.clients {
            if let Lb::Netfilter(nf) = c.lb {
                let text = if skip.contains(&nf) {
                    nf.full_text(&[])
                } else {
                    nf.full_text(&all)
                };
                let file = self.sbx.dir().join(format!("{}.rules", nf.short()));
                std::fs::write(&file, text)?;
                nf.replace(&c.w.netns, &file, &jumps, limit)
                    .with_context(|| format!("program {} in {}", nf.label(), c.w.netns))?;
            }
        }
        self.sbx
            .write_config("services.toml", &rules::kldnet_toml(&all))?;
        if self.daemon.is_none() {
            let d = self.sbx.start_daemon_with_timeout(
                &self.kldnetd,
                &["--dbus", "none"],
                Duration::from_secs(300),
            )?;
            self.daemon = Some(d);
        }
        // Synchronous reload: when it returns, every service is in the maps.
        let socket = self.sbx.socket_path();
        match crate::api::call(
            &socket,
            &crate::api::Request::Reload,
            Duration::from_secs(300),
        ) {
            Ok(crate::api::Response::Reload(r)) if r.ok => {}
            Ok(other) => bail!("kldnetd reload: {other:?}"),
            Err(e) => bail!("kldnetd reload: {e:#}"),
        }
        let services = match crate::api::call(
            &socket,
            &crate::api::Request::Services,
            Duration::from_secs(60),
        ) {
            Ok(crate::api::Response::Services { services }) => services.len(),
            other => bail!("kldnetd services: {other:?}"),
        };
        ensure!(
            services == all.len(),
            "kldnetd serves {services} services, expected {}",
            all.len()
        );
        Ok(())
    }

    fn client(&self, lb: Lb) -> &Client {
        self.clients
            .iter()
            .find(|c| c.lb == lb)
            .expect("every Lb has a client")
    }

    /// Runs the connect loop in a child process inside the client's namespace (and the LB
    /// cgroup for the pod), so socket LB sees a real process in the right cgroup.
    fn samples(&self, c: &Client, target: SocketAddrV4, count: u32) -> Result<(Vec<u64>, u32)> {
        let args = [
            "bench".to_string(),
            "services".into(),
            "--connect-loop".into(),
            target.to_string(),
            "--connects".into(),
            count.to_string(),
        ];
        let out = self
            .sbx
            .command_in(&c.w.netns, &self.exe, &args, c.w.in_lb_cgroup)
            .output()
            .context("run the connect loop")?;
        ensure!(
            out.status.success(),
            "{} → {target}: {}",
            c.lb.label(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("samples_ns"))
            .context("connect loop printed no samples")?;
        let timeouts = text
            .lines()
            .find_map(|l| l.strip_prefix("timeouts "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let v = line
            .split_whitespace()
            .map(|v| v.parse::<u64>().context("bad sample"))
            .collect::<Result<_>>()?;
        Ok((v, timeouts))
    }

    /// (c): `count` connects per path, split in `rounds` interleaved rounds so drift in
    /// machine load hits every path alike. Returns the baseline and one row per LB.
    pub fn connect_latency(
        &self,
        last: &BenchService,
        count: u32,
        rounds: u32,
    ) -> Result<(Latency, Vec<ConnectRow>)> {
        let vip = SocketAddrV4::new(last.vip, last.port);
        let direct = self.backends[0];
        let per = (count / rounds.max(1)).max(1);
        let mut pairs: Vec<(usize, SocketAddrV4, (Vec<u64>, u32))> = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            if self.skipped.contains(&c.lb) {
                continue;
            }
            pairs.push((i, direct, (Vec::new(), 0)));
            if c.lb != Lb::Direct {
                pairs.push((i, vip, (Vec::new(), 0)));
            }
        }
        for _ in 0..rounds.max(1) {
            for (i, target, acc) in pairs.iter_mut() {
                let (v, t) = self.samples(&self.clients[*i], *target, per)?;
                acc.0.extend(v);
                acc.1 += t;
            }
        }
        let mut baseline = Latency::default();
        let mut rows = Vec::new();
        let mut it = pairs.into_iter();
        while let Some((i, _, d)) = it.next() {
            let lb = self.clients[i].lb;
            if lb == Lb::Direct {
                baseline = Latency::of(d);
                continue;
            }
            let (_, _, v) = it.next().expect("a VIP pair follows each LB's direct pair");
            rows.push(ConnectRow {
                lb,
                vip: Latency::of(v),
                direct: Latency::of(d),
            });
        }
        Ok((baseline, rows))
    }

    /// (e): iperf3 for `seconds` per path, median of `runs` interleaved runs, in Gbit/s.
    pub fn throughput(&mut self, seconds: u32, runs: u32) -> Result<Vec<(Lb, f64)>> {
        if self.iperf.is_none() {
            let bind = self.backends[0].ip().to_string();
            let cmd = self.sbx.command_in(
                &self.backend.netns,
                "iperf3",
                &[
                    "-s",
                    "-B",
                    &bind,
                    "-p",
                    &IPERF_PORT.to_string(),
                    "--forceflush",
                ],
                false,
            );
            let mut child = self.sbx.spawn(cmd).context("start iperf3 -s")?;
            child.wait_for_stdout("listening", Duration::from_secs(5))?;
            self.iperf = Some(child);
        }
        let direct = SocketAddrV4::new(*self.backends[0].ip(), IPERF_PORT);
        let vip = SocketAddrV4::new(IPERF_VIP, IPERF_PORT);
        let lbs: Vec<Lb> = self
            .clients
            .iter()
            .map(|c| c.lb)
            .filter(|lb| !self.skipped.contains(lb))
            .collect();
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); lbs.len()];
        let omit = if seconds > 1 { "1" } else { "0" };
        for _ in 0..runs.max(1) {
            for (k, lb) in lbs.iter().enumerate() {
                let c = self.client(*lb);
                let target = if *lb == Lb::Direct { direct } else { vip };
                let out = self
                    .sbx
                    .command_in(
                        &c.w.netns,
                        "iperf3",
                        &[
                            "-c",
                            &target.ip().to_string(),
                            "-p",
                            &target.port().to_string(),
                            "-t",
                            &seconds.to_string(),
                            "-O",
                            omit,
                            "-J",
                        ],
                        c.w.in_lb_cgroup,
                    )
                    .output()
                    .context("run iperf3 -c")?;
                let json: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .with_context(|| format!("iperf3 output for {}", lb.label()))?;
                let bps = json
                    .pointer("/end/sum_received/bits_per_second")
                    .and_then(|v| v.as_f64())
                    .with_context(|| {
                        format!(
                            "iperf3 via {}: {}",
                            lb.label(),
                            json.get("error").map(|e| e.to_string()).unwrap_or_default()
                        )
                    })?;
                results[k].push(bps / 1e9);
            }
        }
        Ok(lbs
            .into_iter()
            .zip(results)
            .map(|(lb, mut v)| {
                v.sort_by(f64::total_cmp);
                (lb, v[v.len() / 2])
            })
            .collect())
    }
}
