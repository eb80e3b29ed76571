// SPDX-License-Identifier: Apache-2.0
//! A `kldnetd` run inside the sandbox's node namespace, ready once its control socket answers.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{ChildGuard, tail};

/// How long [`DaemonGuard::sigterm_and_wait`] waits before giving up and killing.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running daemon started by [`Sandbox::start_daemon`](crate::Sandbox::start_daemon).
///
/// Dropping it SIGTERMs the daemon (SIGKILL after 2 s) and reaps it.
#[derive(Debug)]
pub struct DaemonGuard {
    child: ChildGuard,
    log_path: PathBuf,
    log_offset: u64,
}

impl DaemonGuard {
    /// Wraps a freshly spawned daemon whose output starts at `log_offset` in `log_path`.
    pub(crate) fn new(child: ChildGuard, log_path: PathBuf, log_offset: u64) -> DaemonGuard {
        DaemonGuard {
            child,
            log_path,
            log_offset,
        }
    }

    /// Waits until `socket` accepts a connection; on timeout or early exit, kills the daemon
    /// and returns an error with the log tail.
    pub(crate) fn wait_ready(mut self, socket: &Path, timeout: Duration) -> Result<DaemonGuard> {
        let deadline = Instant::now() + timeout;
        loop {
            if UnixStream::connect(socket).is_ok() {
                return Ok(self);
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "kldnetd exited ({st}) before {} accepted connections\n--- kldnetd log tail ---\n{}",
                    socket.display(),
                    tail(&self.log(), 40)
                );
            }
            if Instant::now() >= deadline {
                let pid = self.pid();
                let _ = self.child.terminate();
                bail!(
                    "kldnetd (pid {pid}) did not accept connections on {} within {timeout:?}; \
                     killed it\n--- kldnetd log tail ---\n{}",
                    socket.display(),
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends `sig` (e.g. `libc::SIGHUP` to reload) to the daemon process.
    pub fn send_signal(&mut self, sig: i32) -> Result<()> {
        let pid = self.pid();
        self.child
            .signal(sig)
            .with_context(|| format!("send signal {sig} to kldnetd (pid {pid})"))
    }

    /// SIGTERM and wait for a clean exit (≤ 10 s); after that it is SIGKILLed and this fails.
    pub fn sigterm_and_wait(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            return Ok(st);
        }
        self.send_signal(libc::SIGTERM)?;
        if let Some(st) = self.child.wait_timeout(STOP_TIMEOUT)? {
            return Ok(st);
        }
        let pid = self.pid();
        self.child.kill9()?;
        bail!(
            "kldnetd (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:?}; killed it\n--- log tail ---\n{}",
            tail(&self.log(), 40)
        )
    }

    /// SIGKILL the daemon (simulates a crash: pins and state stay behind) and reap it.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        let pid = self.pid();
        self.child
            .kill9()
            .with_context(|| format!("kill -9 kldnetd (pid {pid})"))
    }

    /// Reaps the daemon if it has exited; `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// This run's log output (stdout and stderr); earlier runs in the same sandbox are excluded.
    pub fn log(&self) -> String {
        let all = std::fs::read(&self.log_path).unwrap_or_default();
        let start = (self.log_offset as usize).min(all.len());
        String::from_utf8_lossy(&all[start..]).into_owned()
    }

    /// The log file shared by every daemon run of this sandbox (`<sandbox>/kldnetd.log`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}
