// SPDX-License-Identifier: Apache-2.0
//! End-to-end tests of the sandbox itself: traffic between namespaces, teardown (also on
//! panic), parallel isolation, and the daemon start/stop paths. All skip when not root.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kldnet_testkit::probe::Server;
use kldnet_testkit::probe_cli::{connect_args, parse_json_ok, serve_args};
use kldnet_testkit::{
    ChildGuard, ExternalSpec, Proto, Sandbox, Workload, WorkloadSpec, cgroup_pids, is_mounted,
    netns, probe, skip_unless_root,
};

const HELPER: &str = env!("CARGO_BIN_EXE_kldnet-testkit");
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 8053;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn sa(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(addr, port))
}

/// Starts TCP and UDP probe servers in workload `w` answering with its name.
fn start_servers(sbx: &Sandbox, w: &Workload) -> Vec<ChildGuard> {
    [(Proto::Tcp, TCP_PORT), (Proto::Udp, UDP_PORT)]
        .into_iter()
        .map(|(proto, port)| {
            let mut args = vec!["probe".to_string()];
            args.extend(serve_args(
                proto,
                sa(Ipv4Addr::UNSPECIFIED, port),
                &w.name,
                60,
            ));
            let mut child = sbx.spawn(sbx.workload_command(w, HELPER, &args)).unwrap();
            child
                .wait_for_stdout("listening", Duration::from_secs(5))
                .unwrap();
            child
        })
        .collect()
}

/// Runs the probe tool as a subprocess in `ns` and asserts every attempt got `want`.
fn assert_probe_subprocess(
    sbx: &Sandbox,
    ns: &str,
    cgroup: bool,
    proto: Proto,
    to: SocketAddr,
    want: &str,
) {
    let mut args = vec!["probe".to_string()];
    args.extend(connect_args(proto, to, 3, Duration::from_secs(2)));
    let mut child = sbx
        .spawn(sbx.command_in(ns, HELPER, &args, cgroup))
        .unwrap();
    let st = child
        .wait_timeout(Duration::from_secs(15))
        .unwrap()
        .expect("probe finished");
    let out = child.stdout();
    let parsed = parse_json_ok(out.trim());
    assert!(
        st.success(),
        "probe {proto} {to} from {ns}: {st}\n{out}{}",
        child.stderr()
    );
    assert_eq!(
        parsed,
        Some((3, vec![(want.to_string(), 3)])),
        "probe {proto} {to} from {ns}: {out}"
    );
}

fn two_workloads(sbx: &mut Sandbox) -> (Workload, Workload) {
    let w1 = sbx
        .add_workload(WorkloadSpec::new("w1", "vnet1", &[ip("10.0.0.1")]))
        .unwrap();
    let w2 = sbx
        .add_workload(WorkloadSpec::new("w2", "vnet2", &[ip("10.0.0.2"), ip("10.0.0.22")]).vm())
        .unwrap();
    (w1, w2)
}

#[test]
fn workloads_and_node_exchange_tcp_and_udp() {
    if skip_unless_root("workloads_and_node_exchange_tcp_and_udp") {
        return;
    }
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let mut sbx = Sandbox::new("traffic").unwrap();
    let (w1, w2) = two_workloads(&mut sbx);
    assert!(w1.in_lb_cgroup && !w2.in_lb_cgroup);
    assert_eq!(w2.addrs, vec![ip("10.0.0.2"), ip("10.0.0.22")]);
    assert!(
        w1.host_ifindex > 1 && w1.mac.len() == 17 && w1.mac != w2.mac,
        "{w1:?} {w2:?}"
    );

    // Sysctls changed inside the node namespace only.
    let node = sbx.node_netns();
    assert_eq!(netns::sysctl_get(node, "net/ipv4/ip_forward").unwrap(), "1");
    assert_eq!(
        netns::sysctl_get(node, "net/ipv4/conf/vnet1/proxy_arp").unwrap(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );

    let s1 = start_servers(&sbx, &w1);
    let s2 = start_servers(&sbx, &w2);
    // The "container" server joined the sandbox cgroup; the "VM" one did not.
    let in_cg = cgroup_pids(sbx.cgroup_dir()).unwrap();
    assert!(
        s1.iter().all(|c| in_cg.contains(&(c.pid() as i32))),
        "{in_cg:?}"
    );
    assert!(
        s2.iter().all(|c| !in_cg.contains(&(c.pid() as i32))),
        "{in_cg:?}"
    );

    // A server in the node namespace, in-process.
    let node_addr = sbx.node_addr();
    let node_servers: Vec<Server> = [Proto::Tcp, Proto::Udp]
        .into_iter()
        .map(|p| {
            let port = if p == Proto::Tcp { TCP_PORT } else { UDP_PORT };
            sbx.run_in_netns(sbx.node_netns(), || Server::bind(p, sa(node_addr, port)))
                .unwrap()
                .unwrap()
        })
        .collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for s in &node_servers {
            scope.spawn(|| s.run_until("node", 60, &stop).unwrap());
        }
        // Stop the node servers however the probes below end (a panic included).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        for proto in [Proto::Tcp, Proto::Udp] {
            let port = if proto == Proto::Tcp {
                TCP_PORT
            } else {
                UDP_PORT
            };
            // Workload ↔ workload, both directions, every address of w2.
            assert_probe_subprocess(&sbx, &w1.netns, true, proto, sa(w2.addrs[0], port), "w2");
            assert_probe_subprocess(&sbx, &w1.netns, true, proto, sa(w2.addrs[1], port), "w2");
            assert_probe_subprocess(&sbx, &w2.netns, false, proto, sa(w1.addr(), port), "w1");
            // Node → workloads (subprocess and in-process).
            assert_probe_subprocess(
                &sbx,
                sbx.node_netns(),
                false,
                proto,
                sa(w1.addr(), port),
                "w1",
            );
            let r = sbx
                .run_in_netns(sbx.node_netns(), || {
                    probe(proto, sa(w2.addr(), port), 3, Duration::from_secs(2))
                })
                .unwrap();
            assert!(r.all_ok() && r.count("w2") == 3, "{r}");
            // Workloads → node.
            assert_probe_subprocess(&sbx, &w1.netns, true, proto, sa(node_addr, port), "node");
            assert_probe_subprocess(&sbx, &w2.netns, false, proto, sa(node_addr, port), "node");
        }
    });

    // exec_in sees the workload's own view of the network.
    let out = sbx
        .exec_in(&w2.netns, "ip", &["-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("10.0.0.22/32"),
        "{text}"
    );
    // The host namespace has no route to the workloads: nothing leaked out of the sandbox.
    let r = probe(
        Proto::Tcp,
        sa(w1.addr(), TCP_PORT),
        1,
        Duration::from_millis(300),
    );
    assert_eq!(r.ok, 0, "host reached a sandbox workload: {r}");
}

/// Everything a sandbox created, to check after it is gone.
struct Footprint {
    netns: Vec<PathBuf>,
    cgroup: PathBuf,
    bpf: PathBuf,
    dir: PathBuf,
    pids: Vec<u32>,
}

impl Footprint {
    fn of(sbx: &Sandbox, children: &[&ChildGuard]) -> Footprint {
        let mut netns = vec![sbx.netns_path()];
        netns.extend(
            sbx.workloads()
                .iter()
                .map(|w| Path::new("/var/run/netns").join(&w.netns)),
        );
        Footprint {
            netns,
            cgroup: sbx.cgroup_dir().to_path_buf(),
            bpf: sbx.bpf_root().to_path_buf(),
            dir: sbx.dir().to_path_buf(),
            pids: children.iter().map(|c| c.pid()).collect(),
        }
    }

    fn assert_all_present(&self) {
        assert!(self.netns.iter().all(|p| p.exists()), "{:?}", self.netns);
        assert!(self.cgroup.is_dir() && is_mounted(&self.bpf) && self.dir.is_dir());
    }

    fn assert_gone(&self) {
        for p in &self.netns {
            assert!(!p.exists(), "netns {} left behind", p.display());
        }
        assert!(
            !self.cgroup.exists(),
            "cgroup {} left behind",
            self.cgroup.display()
        );
        assert!(
            !is_mounted(&self.bpf),
            "bpffs {} still mounted",
            self.bpf.display()
        );
        assert!(
            !self.dir.exists(),
            "temp dir {} left behind",
            self.dir.display()
        );
        for pid in &self.pids {
            assert!(!alive(*pid), "pid {pid} still running");
        }
    }
}

/// Running (not a zombie) process?
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn drop_removes_everything_even_with_children_outliving_it() {
    if skip_unless_root("drop_removes_everything_even_with_children_outliving_it") {
        return;
    }
    let mut sbx = Sandbox::new("drop").unwrap();
    let (w1, w2) = two_workloads(&mut sbx);
    // A child that ignores SIGTERM and has a helper in its process group.
    let stubborn = sbx
        .spawn(sbx.workload_command(&w1, "sh", &["-c", "trap '' TERM; sleep 300 & wait"]))
        .unwrap();
    let plain = sbx
        .spawn(sbx.workload_command(&w2, "sleep", &["300"]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let fp = Footprint::of(&sbx, &[&stubborn, &plain]);
    fp.assert_all_present();
    let t0 = Instant::now();
    drop(sbx); // before the child guards: the sandbox must stop them itself
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "teardown took {:?}",
        t0.elapsed()
    );
    fp.assert_gone();
    drop((stubborn, plain));
}

#[test]
fn panic_in_test_still_tears_down() {
    if skip_unless_root("panic_in_test_still_tears_down") {
        return;
    }
    let fp = std::sync::Mutex::new(None);
    let res = std::panic::catch_unwind(|| {
        let mut sbx = Sandbox::new("panic").unwrap();
        let w = sbx
            .add_workload(WorkloadSpec::new("w1", "vnet1", &[ip("10.0.0.1")]))
            .unwrap();
        let child = sbx
            .spawn(sbx.workload_command(&w, "sleep", &["300"]))
            .unwrap();
        *fp.lock().unwrap() = Some(Footprint::of(&sbx, &[&child]));
        panic!("deliberate failure inside a test");
    });
    assert!(res.is_err());
    let fp = fp.into_inner().unwrap().expect("sandbox was created");
    fp.assert_gone();
}

#[test]
fn parallel_sandboxes_do_not_collide() {
    if skip_unless_root("parallel_sandboxes_do_not_collide") {
        return;
    }
    // Identical workload names, interfaces and addresses: each sandbox is its own world.
    let results: Vec<(String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["A", "B", "C"]
            .into_iter()
            .map(|tag| {
                scope.spawn(move || {
                    let mut sbx = Sandbox::new(&format!("par{tag}")).unwrap();
                    let w = sbx
                        .add_workload(WorkloadSpec::new("w1", "vnet1", &[ip("10.0.0.1")]))
                        .unwrap();
                    let srv = sbx
                        .run_in_netns(&w.netns, || {
                            Server::bind(Proto::Tcp, sa(w.addr(), TCP_PORT))
                        })
                        .unwrap()
                        .unwrap();
                    let r = std::thread::scope(|s| {
                        s.spawn(|| srv.run(tag, 2).unwrap());
                        sbx.run_in_netns(sbx.node_netns(), || {
                            probe(
                                Proto::Tcp,
                                sa(w.addr(), TCP_PORT),
                                3,
                                Duration::from_secs(1),
                            )
                        })
                        .unwrap()
                    });
                    assert!(r.all_ok() && r.count(tag) == 3, "sandbox {tag}: {r}");
                    (
                        sbx.node_netns().to_string(),
                        sbx.cgroup_dir().display().to_string(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut names: Vec<&String> = results.iter().flat_map(|(a, b)| [a, b]).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 6, "{results:?}");
}

#[test]
fn daemon_timeout_returns_error_and_kills_it() {
    if skip_unless_root("daemon_timeout_returns_error_and_kills_it") {
        return;
    }
    let sbx = Sandbox::new("dtimeout").unwrap();
    let script = sbx.dir().join("fake-kldnetd.sh");
    let pidfile = sbx.dir().join("fake.pid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {}\necho never ready\nexec sleep 30\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let t0 = Instant::now();
    let err = sbx
        .start_daemon_with_timeout(&script, &[], Duration::from_secs(1))
        .unwrap_err();
    let took = t0.elapsed();
    let msg = format!("{err:#}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        msg.contains("did not accept connections") && msg.contains("never ready"),
        "{msg}"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "fake daemon {pid} still running");

    // A daemon that exits at once fails fast with its exit status.
    let t0 = Instant::now();
    let err = sbx.start_daemon(Path::new("/bin/false"), &[]).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(format!("{err:#}").contains("exited"), "{err:#}");
}

#[test]
fn daemon_starts_in_node_netns_and_restarts() {
    if skip_unless_root("daemon_starts_in_node_netns_and_restarts") {
        return;
    }
    let mut opts = Sandbox::builder("daemon");
    opts.daemon_env
        .push(("KLDNET_TESTKIT_MARK".into(), "yes".into()));
    let sbx = opts.build().unwrap();
    let cfg = sbx.write_config("a.toml", "x = 1\n").unwrap();
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "x = 1\n");
    assert!(sbx.write_config("../escape.toml", "").is_err());
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("b.toml"), "b").unwrap();
    std::fs::write(src.path().join("sub/c.toml"), "c").unwrap();
    assert_eq!(sbx.copy_config_from(src.path()).unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(sbx.config_dir().join("sub/c.toml")).unwrap(),
        "c"
    );
    let leftovers: Vec<_> = std::fs::read_dir(sbx.config_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let helper = Path::new(HELPER);
    let mut d = sbx
        .start_daemon(helper, &["fake-daemon", "--extra"])
        .unwrap();
    assert!(std::os::unix::net::UnixStream::connect(sbx.socket_path()).is_ok());
    let log = d.log();
    for want in [
        "--config-dir",
        "--bpf-root",
        "--cgroup-root",
        "fake-daemon --extra",
    ] {
        assert!(log.contains(want), "{want} missing from log: {log}");
    }
    // In the node namespace, outside the cgroup.
    let ns_of = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap()
    };
    assert_eq!(
        ns_of(&PathBuf::from(format!("/proc/{}/ns/net", d.pid()))),
        ns_of(&sbx.netns_path())
    );
    assert!(
        !cgroup_pids(sbx.cgroup_dir())
            .unwrap()
            .contains(&(d.pid() as i32))
    );
    let first_pid = d.pid();
    let st = d.sigterm_and_wait().unwrap();
    assert!(!st.success());
    assert!(!alive(first_pid));

    // Restart after a clean stop, then after a crash.
    let mut d2 = sbx
        .start_daemon(helper, &["fake-daemon", "--second"])
        .unwrap();
    assert!(
        d2.log().contains("--second") && !d2.log().contains("--extra"),
        "{}",
        d2.log()
    );
    d2.send_signal(0).unwrap();
    d2.kill9().unwrap();
    let d3 = sbx
        .start_daemon(helper, &["fake-daemon", "--third"])
        .unwrap();
    assert!(
        std::fs::read_to_string(d3.log_path())
            .unwrap()
            .contains("--extra")
    );
    let pid3 = d3.pid();
    drop(sbx); // the sandbox stops a daemon whose guard is still alive
    assert!(!alive(pid3));
    drop(d3);
}

#[test]
fn bad_workload_specs_are_rejected() {
    if skip_unless_root("bad_workload_specs_are_rejected") {
        return;
    }
    let mut sbx = Sandbox::new("specs").unwrap();
    sbx.add_workload(WorkloadSpec::new("w1", "vnet1", &[ip("10.0.0.1")]))
        .unwrap();
    for bad in [
        WorkloadSpec::new("w1", "vnet9", &[ip("10.0.0.9")]),
        WorkloadSpec::new("w9", "vnet1", &[ip("10.0.0.9")]),
        WorkloadSpec::new("w9", "vnet9", &[ip("10.0.0.1")]),
        WorkloadSpec::new("w9", "this-name-is-too-long", &[ip("10.0.0.9")]),
        WorkloadSpec::new("w/9", "vnet9", &[ip("10.0.0.9")]),
        WorkloadSpec::new("w9", "vnet9", &[]),
    ] {
        assert!(sbx.add_workload(bad.clone()).is_err(), "accepted {bad:?}");
    }
    assert_eq!(sbx.workloads().len(), 1);
}

#[test]
fn external_host_reaches_node_and_workloads_through_uplink() {
    if skip_unless_root("external_host_reaches_node_and_workloads_through_uplink") {
        return;
    }
    let mut sbx = Sandbox::new("external").unwrap();
    let w1 = sbx
        .add_workload(WorkloadSpec::new("w1", "vnet1", &[ip("10.0.0.1")]).vm())
        .unwrap();
    let ext = sbx
        .add_external(ExternalSpec::new("outside", "uplink0", ip("203.0.113.50")))
        .unwrap();
    assert!(ext.uplink_ifindex > 1 && ext.mac.len() == 17, "{ext:?}");
    assert_eq!(sbx.external("outside"), Some(&ext));
    for bad in [
        ExternalSpec::new("outside", "uplink1", ip("203.0.113.51")),
        ExternalSpec::new("o2", "uplink0", ip("203.0.113.51")),
        ExternalSpec::new("o2", "vnet1", ip("203.0.113.51")),
        ExternalSpec::new("o2", "uplink1", ip("203.0.113.50")),
        ExternalSpec::new("w1", "uplink1", ip("203.0.113.51")),
        ExternalSpec::new("o2", "uplink1", sbx.node_addr()),
    ] {
        assert!(sbx.add_external(bad.clone()).is_err(), "accepted {bad:?}");
    }
    assert!(
        sbx.add_workload(WorkloadSpec::new("w2", "uplink0", &[ip("10.0.0.2")]))
            .is_err()
    );

    // Outside → node address and outside → workload (routed by the node); node → outside.
    let node_addr = sbx.node_addr();
    let servers: Vec<(String, Server)> = vec![
        (
            "node".into(),
            sbx.run_in_netns(sbx.node_netns(), || {
                Server::bind(Proto::Tcp, sa(node_addr, TCP_PORT))
            })
            .unwrap()
            .unwrap(),
        ),
        (
            "w1".into(),
            sbx.run_in_netns(&w1.netns, || {
                Server::bind(Proto::Tcp, sa(w1.addr(), TCP_PORT))
            })
            .unwrap()
            .unwrap(),
        ),
        (
            "outside".into(),
            sbx.run_in_netns(&ext.netns, || {
                Server::bind(Proto::Udp, sa(ext.addr, UDP_PORT))
            })
            .unwrap()
            .unwrap(),
        ),
    ];
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for (name, s) in &servers {
            let stop = &stop;
            scope.spawn(move || s.run_until(name, 30, stop).unwrap());
        }
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        for (to, want) in [(node_addr, "node"), (w1.addr(), "w1")] {
            let r = sbx
                .run_in_netns(&ext.netns, || {
                    probe(Proto::Tcp, sa(to, TCP_PORT), 2, Duration::from_secs(2))
                })
                .unwrap();
            assert!(r.all_ok() && r.count(want) == 2, "outside → {to}: {r}");
        }
        let r = sbx
            .run_in_netns(sbx.node_netns(), || {
                probe(
                    Proto::Udp,
                    sa(ext.addr, UDP_PORT),
                    2,
                    Duration::from_secs(2),
                )
            })
            .unwrap();
        assert!(r.all_ok() && r.count("outside") == 2, "node → outside: {r}");
    });
    let ns = ext.netns.clone();
    drop(sbx);
    assert!(!netns::netns_path(&ns).exists(), "external netns {ns} left");
}
