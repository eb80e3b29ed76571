// SPDX-License-Identifier: Apache-2.0
//! Processes started inside sandbox namespaces, tracked by PID and killed on drop.
//!
//! Children enter their network namespace with `setns(2)` in `pre_exec` (so they keep the host
//! mount namespace and see bpffs/cgroupfs), optionally join the sandbox cgroup by writing `0` to
//! its `cgroup.procs`, and lead their own process group so their helpers die with them.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a SIGTERM'd child gets before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// Live (not yet reaped) children of one sandbox: pid → label.
///
/// Entries are removed under the lock in the same step that reaps the child, so a PID found
/// here can never have been recycled for a stranger's process.
pub(crate) type Registry = Arc<Mutex<BTreeMap<i32, String>>>;

pub(crate) fn lock(reg: &Registry) -> MutexGuard<'_, BTreeMap<i32, String>> {
    reg.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds a command that runs `program args` in network namespace `ns`.
///
/// `cgroup_procs` is the `cgroup.procs` file to join, if any. Files are opened before the fork;
/// an open error surfaces when the command is spawned.
pub fn command_in<S: AsRef<OsStr>>(
    ns: &str,
    program: impl AsRef<OsStr>,
    args: &[S],
    cgroup_procs: Option<&Path>,
) -> Command {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let ns_fd: std::result::Result<File, i32> = crate::netns::open_netns(ns).map_err(|e| {
        e.downcast::<std::io::Error>()
            .map(errno)
            .unwrap_or(libc::ENOENT)
    });
    let cg_fd: Option<std::result::Result<File, i32>> =
        cgroup_procs.map(|p| OpenOptions::new().write(true).open(p).map_err(errno));
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    // SAFETY: the closure only calls async-signal-safe functions (setns, write) on fds opened
    // before the fork and builds io::Errors from raw errno values without allocating.
    unsafe {
        cmd.pre_exec(move || {
            let fd = ns_fd
                .as_ref()
                .map_err(|e| std::io::Error::from_raw_os_error(*e))?;
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(cg) = &cg_fd {
                let fd = cg
                    .as_ref()
                    .map_err(|e| std::io::Error::from_raw_os_error(*e))?;
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// Sends `sig` to the process group led by `pid` and to `pid` itself (it may have left the group).
pub(crate) fn signal_tree(pid: i32, sig: i32) {
    // SAFETY: plain syscalls; pid is an unreaped child of ours, so neither id can be recycled.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

/// State of a child as seen by `waitid(WNOWAIT)`, which never reaps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildState {
    /// Still running.
    Running,
    /// Exited; the zombie keeps its PID (and process group id) reserved.
    Exited,
    /// Not our unreaped child any more (reaped elsewhere): its PID may be recycled, hands off.
    Gone,
}

fn child_state(pid: i32) -> ChildState {
    // SAFETY: siginfo is plain data; waitid with WNOWAIT leaves the zombie in place.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if rc != 0 {
            ChildState::Gone
        } else if info.si_pid() != 0 {
            ChildState::Exited
        } else {
            ChildState::Running
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL: for children owned elsewhere (not reaped here).
///
/// The final group-wide SIGKILL also catches helpers the child left in its process group.
pub(crate) fn terminate_unreaped(pid: i32, grace: Duration) {
    if child_state(pid) == ChildState::Gone {
        return;
    }
    signal_tree(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        match child_state(pid) {
            ChildState::Gone => return,
            ChildState::Exited => break,
            ChildState::Running if Instant::now() >= deadline => break,
            ChildState::Running => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    signal_tree(pid, libc::SIGKILL);
}

/// A child process started by a sandbox; SIGTERM → (≤2 s) → SIGKILL and reaped on drop.
///
/// Its stdout and stderr go to files in the sandbox directory.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    label: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    registry: Registry,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with the given output files and registers it with `registry`.
    pub(crate) fn spawn(
        mut cmd: Command,
        label: String,
        stdout_path: PathBuf,
        stderr_path: PathBuf,
        registry: Registry,
    ) -> Result<ChildGuard> {
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open output file {}", p.display()))
        };
        let out = open(&stdout_path)?;
        let err = if stderr_path == stdout_path {
            out.try_clone()?
        } else {
            open(&stderr_path)?
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut reg = lock(&registry);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {label} ({:?})", cmd.get_program()))?;
        reg.insert(child.id() as i32, label.clone());
        drop(reg);
        Ok(ChildGuard {
            child,
            label,
            stdout_path,
            stderr_path,
            registry,
            status: None,
        })
    }

    /// The child's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The label used in file names and messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Reaps the child if it has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let mut reg = lock(&self.registry);
        let st = self.child.try_wait()?;
        if let Some(st) = st {
            reg.remove(&(self.child.id() as i32));
            self.status = Some(st);
        }
        Ok(st)
    }

    /// Waits up to `timeout` for the child to exit; `Ok(None)` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the child process only (not its group).
    pub fn signal(&mut self, sig: i32) -> std::io::Result<()> {
        if self.try_wait()?.is_some() {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: the child is not reaped (checked above under our ownership), so pid is ours.
        if unsafe { libc::kill(self.child.id() as i32, sig) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM the child's process group, wait ≤ `grace`, SIGKILL, reap; returns the exit status.
    pub fn terminate_with(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        let pid = self.child.id() as i32;
        // Wait without reaping: the zombie leader keeps the process group id reserved, so the
        // final group-wide SIGKILL cannot hit a recycled id.
        terminate_unreaped(pid, grace);
        let mut reg = lock(&self.registry);
        let st = self.child.wait()?;
        reg.remove(&pid);
        self.status = Some(st);
        Ok(st)
    }

    /// [`terminate_with`](Self::terminate_with) using the default 2 s grace period.
    pub fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        self.terminate_with(TERM_GRACE)
    }

    /// SIGKILL the child alone (its group is left alone), then reap it.
    pub fn kill9(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        let pid = self.child.id() as i32;
        // SAFETY: unreaped child of ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut reg = lock(&self.registry);
        let st = self.child.wait()?;
        reg.remove(&pid);
        self.status = Some(st);
        Ok(st)
    }

    /// Path of the file collecting the child's stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Path of the file collecting the child's stderr (may equal the stdout file).
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until stdout contains `needle` (e.g. a server's "listening" line).
    ///
    /// Fails early if the child exits, and on timeout; errors include the output tails.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_wait()? {
                if self.stdout().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "{} exited ({st}) before printing {needle:?}\n{}",
                    self.label,
                    self.output_tails()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}\n{}",
                    self.label,
                    self.output_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Last lines of stdout and stderr, for error messages.
    pub fn output_tails(&self) -> String {
        let mut s = format!("--- stdout tail ---\n{}", tail(&self.stdout(), 30));
        if self.stderr_path != self.stdout_path {
            s.push_str(&format!(
                "--- stderr tail ---\n{}",
                tail(&self.stderr(), 30)
            ));
        }
        s
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!(
                "kldnet-testkit: teardown: stop {} (pid {}): {e}",
                self.label,
                self.pid()
            );
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    out.push('\n');
    out
}
