// SPDX-License-Identifier: Apache-2.0
//! [`Sandbox`]: one isolated node (netns + cgroup + bpffs + config/state/run dirs) with workloads,
//! processes and a daemon, all torn down on drop — also when a test panics.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::bpffs::BpffsMount;
use crate::cgroup::CgroupGuard;
use crate::daemon::DaemonGuard;
use crate::external::{External, ExternalSpec};
use crate::netns::{NetnsGuard, ip_in, sysctl_in};
use crate::process::{ChildGuard, Registry, TERM_GRACE, lock, terminate_unreaped};
use crate::workload::{Workload, WorkloadSpec};

/// Default address of the node namespace (on `lo`; documentation range, RFC 5737).
pub const DEFAULT_NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// Label of daemon processes in the child registry (killed after the other children).
const DAEMON_LABEL: &str = "kldnetd";

/// Options for [`Sandbox`]; build with [`SandboxBuilder::build`].
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    /// Free-form label (sanitised) used in temp dir names and messages.
    pub label: String,
    /// Address of the node namespace, put on its `lo` as /32.
    pub node_addr: Ipv4Addr,
    /// How long [`Sandbox::start_daemon`] waits for the control socket.
    pub daemon_ready_timeout: Duration,
    /// How long [`Sandbox::exec_in`] lets a command run before killing it.
    pub exec_timeout: Duration,
    /// Extra environment for every daemon start (e.g. `RUST_LOG=debug`); the test process's
    /// environment is inherited as well.
    pub daemon_env: Vec<(String, String)>,
}

impl SandboxBuilder {
    /// Defaults: node address 192.0.2.10, daemon timeout 20 s, exec timeout 30 s.
    pub fn new(label: &str) -> SandboxBuilder {
        SandboxBuilder {
            label: label.to_string(),
            node_addr: DEFAULT_NODE_ADDR,
            daemon_ready_timeout: Duration::from_secs(20),
            exec_timeout: Duration::from_secs(30),
            daemon_env: Vec::new(),
        }
    }

    /// Creates the sandbox; everything created so far is undone if a step fails.
    pub fn build(self) -> Result<Sandbox> {
        Sandbox::create(self)
    }
}

/// An isolated node for one test or demo. See the crate docs for the layout.
///
/// Field order matters: after `Drop::drop` has stopped all processes, fields drop top to
/// bottom — workload namespaces, node namespace, cgroup, bpffs mount, temp dir.
#[derive(Debug)]
pub struct Sandbox {
    registry: Registry,
    workload_ns: Vec<NetnsGuard>,
    node: NetnsGuard,
    cgroup: CgroupGuard,
    bpffs: BpffsMount,
    dir: tempfile::TempDir,
    workloads: Vec<Workload>,
    externals: Vec<External>,
    opts: SandboxBuilder,
    token: String,
    spawned: AtomicU32,
}

impl Sandbox {
    /// A sandbox with default options (see [`SandboxBuilder::new`]).
    pub fn new(label: &str) -> Result<Sandbox> {
        SandboxBuilder::new(label).build()
    }

    /// Options to customise before [`SandboxBuilder::build`].
    pub fn builder(label: &str) -> SandboxBuilder {
        SandboxBuilder::new(label)
    }

    fn create(opts: SandboxBuilder) -> Result<Sandbox> {
        ensure!(
            crate::is_root(),
            "a sandbox needs root (netns, cgroup, bpffs)"
        );
        let token = crate::names::unique_token();
        let label = crate::names::sanitize(&opts.label, 24);
        let dir = tempfile::Builder::new()
            .prefix(&format!("kldnet-sbx-{label}-{token}-"))
            .tempdir()
            .context("create sandbox temp dir")?;
        for sub in ["config", "state", "run", "logs"] {
            std::fs::create_dir(dir.path().join(sub))
                .with_context(|| format!("create {sub}/ in {}", dir.path().display()))?;
        }
        let bpffs = BpffsMount::mount(&dir.path().join("bpf"))?;
        let cgroup = CgroupGuard::create(&format!("kldnet-sbx-{token}"))?;
        let node = NetnsGuard::create(&format!("kldsbx-{token}"))?;
        let n = node.name();
        ip_in(
            n,
            &[
                "addr",
                "add",
                &format!("{}/32", opts.node_addr),
                "dev",
                "lo",
            ],
        )?;
        sysctl_in(n, "net/ipv4/ip_forward", "1")?;
        sysctl_in(n, "net/ipv4/conf/all/rp_filter", "0")?;
        sysctl_in(n, "net/ipv4/conf/default/rp_filter", "0")?;
        Ok(Sandbox {
            registry: Registry::default(),
            workload_ns: Vec::new(),
            node,
            cgroup,
            bpffs,
            dir,
            workloads: Vec::new(),
            externals: Vec::new(),
            opts,
            token,
            spawned: AtomicU32::new(0),
        })
    }

    /// The node network namespace's name (the daemon and host-side veths live here).
    pub fn node_netns(&self) -> &str {
        self.node.name()
    }

    /// `/var/run/netns/<node netns>`.
    pub fn netns_path(&self) -> PathBuf {
        self.node.path()
    }

    /// The node's own address (on `lo` in the node namespace).
    pub fn node_addr(&self) -> Ipv4Addr {
        self.opts.node_addr
    }

    /// The sandbox cgroup v2 directory (the daemon's `--cgroup-root`).
    pub fn cgroup_dir(&self) -> &Path {
        self.cgroup.dir()
    }

    /// The private bpffs mount (the daemon's `--bpf-root`).
    pub fn bpf_root(&self) -> &Path {
        self.bpffs.path()
    }

    /// The sandbox's temp directory holding everything else.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/config`: the daemon's `--config-dir`.
    pub fn config_dir(&self) -> PathBuf {
        self.dir().join("config")
    }

    /// `<dir>/state`: the daemon's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// `<dir>/run`: the daemon's `--run-dir`.
    pub fn run_dir(&self) -> PathBuf {
        self.dir().join("run")
    }

    /// `<run>/kldnet.sock`: the daemon's control socket.
    pub fn socket_path(&self) -> PathBuf {
        self.run_dir().join("kldnet.sock")
    }

    /// Workloads created so far, in creation order.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workload called `name`.
    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// Creates a workload namespace wired to the node (see [`crate::workload`]).
    pub fn add_workload(&mut self, spec: WorkloadSpec) -> Result<Workload> {
        crate::workload::check_spec(&spec, &self.workloads)?;
        for e in &self.externals {
            ensure!(
                e.uplink_ifname != spec.host_ifname && e.name != spec.name,
                "workload {} ({}) collides with external host {} ({})",
                spec.name,
                spec.host_ifname,
                e.name,
                e.uplink_ifname
            );
        }
        let netns = format!("{}-{}", self.node.name(), spec.name);
        let (guard, w) =
            crate::workload::create(self.node.name(), self.opts.node_addr, &netns, &spec)
                .with_context(|| format!("create workload {}", spec.name))?;
        self.workload_ns.push(guard);
        self.workloads.push(w.clone());
        Ok(w)
    }

    /// External hosts created so far, in creation order.
    pub fn externals(&self) -> &[External] {
        &self.externals
    }

    /// The external host called `name`.
    pub fn external(&self, name: &str) -> Option<&External> {
        self.externals.iter().find(|e| e.name == name)
    }

    /// Creates an "outside" host for north-south tests: a namespace wired to the node by a
    /// veth whose node side (`spec.uplink_ifname`) is the uplink (see [`crate::external`]).
    /// Removed with the sandbox, like a workload.
    pub fn add_external(&mut self, spec: ExternalSpec) -> Result<External> {
        crate::external::check_spec(&spec, &self.workloads, &self.externals, self.opts.node_addr)?;
        let netns = format!("{}-{}", self.node.name(), spec.name);
        let (guard, e) =
            crate::external::create(self.node.name(), self.opts.node_addr, &netns, &spec)
                .with_context(|| format!("create external host {}", spec.name))?;
        self.workload_ns.push(guard);
        self.externals.push(e.clone());
        Ok(e)
    }

    /// A command inside external host `e` (never in the sandbox cgroup).
    pub fn external_command<S: AsRef<OsStr>>(
        &self,
        e: &External,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Command {
        self.command_in(&e.netns, program, args, false)
    }

    /// A command running `program args` in network namespace `ns` (entered with setns), in the
    /// sandbox cgroup when `join_cgroup`. Spawn it with [`Sandbox::spawn`].
    pub fn command_in<S: AsRef<OsStr>>(
        &self,
        ns: &str,
        program: impl AsRef<OsStr>,
        args: &[S],
        join_cgroup: bool,
    ) -> Command {
        let procs = self.cgroup_dir().join("cgroup.procs");
        crate::process::command_in(ns, program, args, join_cgroup.then_some(procs.as_path()))
    }

    /// A command inside workload `w`, joining the cgroup exactly when `w.in_lb_cgroup`.
    pub fn workload_command<S: AsRef<OsStr>>(
        &self,
        w: &Workload,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Command {
        self.command_in(&w.netns, program, args, w.in_lb_cgroup)
    }

    /// Spawns `cmd` with stdout/stderr captured to `<dir>/logs/<program>-<n>.{out,err}`.
    pub fn spawn(&self, cmd: Command) -> Result<ChildGuard> {
        let prog = Path::new(cmd.get_program())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let label = format!("{}-{n}", crate::names::sanitize(&prog, 32));
        let logs = self.dir().join("logs");
        ChildGuard::spawn(
            cmd,
            label.clone(),
            logs.join(format!("{label}.out")),
            logs.join(format!("{label}.err")),
            self.registry.clone(),
        )
    }

    /// Runs `program args` in `ns` (not in the cgroup) to completion, killing it after the
    /// exec timeout (an error). A non-zero exit is returned, not an error.
    pub fn exec_in<S: AsRef<OsStr>>(&self, ns: &str, program: &str, args: &[S]) -> Result<Output> {
        let mut child = self.spawn(self.command_in(ns, program, args, false))?;
        let timeout = self.opts.exec_timeout;
        match child.wait_timeout(timeout)? {
            Some(status) => Ok(Output {
                status,
                stdout: std::fs::read(child.stdout_path()).unwrap_or_default(),
                stderr: std::fs::read(child.stderr_path()).unwrap_or_default(),
            }),
            None => {
                let _ = child.terminate();
                bail!(
                    "`{program}` in {ns} did not finish within {timeout:?}\n{}",
                    child.output_tails()
                )
            }
        }
    }

    /// Runs `f` on a thread inside network namespace `ns` (sockets it opens stay there).
    ///
    /// In-process: the thread is not in the sandbox cgroup, so socket-LB hooks do not apply.
    pub fn run_in_netns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        crate::netns::run_in(ns, f)
    }

    /// Starts `kldnetd` in the node namespace (outside the cgroup) with the sandbox's dirs and
    /// waits up to the builder's `daemon_ready_timeout` (20 s) for its control socket.
    pub fn start_daemon(&self, kldnetd: &Path, extra_args: &[&str]) -> Result<DaemonGuard> {
        self.start_daemon_with_timeout(kldnetd, extra_args, self.opts.daemon_ready_timeout)
    }

    /// [`start_daemon`](Self::start_daemon) with an explicit readiness timeout.
    ///
    /// Arguments: `--config-dir --state-dir --run-dir --bpf-root --cgroup-root`, then
    /// `extra_args`. Output (both streams) is appended to `<dir>/kldnetd.log`.
    pub fn start_daemon_with_timeout(
        &self,
        kldnetd: &Path,
        extra_args: &[&str],
        timeout: Duration,
    ) -> Result<DaemonGuard> {
        let mut args: Vec<&OsStr> = Vec::new();
        let (config, state, run) = (self.config_dir(), self.state_dir(), self.run_dir());
        for (flag, path) in [
            ("--config-dir", config.as_path()),
            ("--state-dir", state.as_path()),
            ("--run-dir", run.as_path()),
            ("--bpf-root", self.bpf_root()),
            ("--cgroup-root", self.cgroup_dir()),
        ] {
            args.push(OsStr::new(flag));
            args.push(path.as_os_str());
        }
        args.extend(extra_args.iter().map(OsStr::new));
        let log_path = self.dir().join("kldnetd.log");
        let offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command_in(self.node_netns(), kldnetd, &args, false);
        cmd.envs(self.opts.daemon_env.iter().map(|(k, v)| (k, v)));
        let child = ChildGuard::spawn(
            cmd,
            DAEMON_LABEL.to_string(),
            log_path.clone(),
            log_path.clone(),
            self.registry.clone(),
        )
        .with_context(|| format!("start {}", kldnetd.display()))?;
        DaemonGuard::new(child, log_path, offset).wait_ready(&self.socket_path(), timeout)
    }

    /// Atomically (temp file + rename) writes `contents` to `<config>/<file_name>`.
    ///
    /// `file_name` may contain subdirectories but no `..`; the temp file is a dot file ending in
    /// `.tmp`, so a watcher that reads only `*.toml` never sees a half-written file.
    pub fn write_config(&self, file_name: &str, contents: &str) -> Result<PathBuf> {
        let rel = Path::new(file_name);
        ensure!(
            rel.is_relative()
                && rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
            "config file name {file_name:?} must be a plain relative path"
        );
        let dest = self.config_dir().join(rel);
        atomic_write(&dest, contents.as_bytes())?;
        Ok(dest)
    }

    /// Removes `<config>/<file_name>` (missing is fine).
    pub fn remove_config(&self, file_name: &str) -> Result<()> {
        let p = self.config_dir().join(file_name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", p.display()))
            }
            _ => Ok(()),
        }
    }

    /// Copies every regular file under `src` (recursively) into the config dir, each atomically;
    /// returns how many were copied.
    pub fn copy_config_from(&self, src: &Path) -> Result<usize> {
        copy_tree(src, &self.config_dir())
    }

    /// Unique token of this sandbox (`<pid>-<n>`), part of every resource name.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stops every process this sandbox spawned that is still running: children first, then
    /// daemons. Their guards reap them later.
    fn stop_processes(&self) {
        let reg = lock(&self.registry);
        let (daemons, children): (Vec<_>, Vec<_>) = reg
            .iter()
            .map(|(p, l)| (*p, l.clone()))
            .partition(|(_, l)| l == DAEMON_LABEL);
        for (pid, label) in children.into_iter().chain(daemons) {
            eprintln!("kldnet-testkit: teardown: stopping {label} (pid {pid})");
            terminate_unreaped(pid, TERM_GRACE);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_processes();
        // Workload namespaces go first (explicitly, in reverse creation order); the remaining
        // fields then drop in declaration order.
        while let Some(ns) = self.workload_ns.pop() {
            drop(ns);
        }
        // Node netns, cgroup, bpffs mount, temp dir: dropped by field order right after this.
    }
}

fn atomic_write(dest: &Path, bytes: &[u8]) -> Result<()> {
    let parent = dest
        .parent()
        .context("destination has no parent directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let name = dest
        .file_name()
        .context("destination has no file name")?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.{}.tmp", crate::names::unique_token()));
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("rename {} to {}", tmp.display(), dest.display()))
}

fn copy_tree(src: &Path, dst: &Path) -> Result<usize> {
    let mut n = 0;
    let entries = std::fs::read_dir(src).with_context(|| format!("read dir {}", src.display()))?;
    for e in entries {
        let e = e?;
        let ty = e.file_type()?;
        let to = dst.join(e.file_name());
        if ty.is_dir() {
            n += copy_tree(&e.path(), &to)?;
        } else if ty.is_file() {
            let bytes =
                std::fs::read(e.path()).with_context(|| format!("read {}", e.path().display()))?;
            atomic_write(&to, &bytes)?;
            n += 1;
        }
    }
    Ok(n)
}
