// SPDX-License-Identifier: Apache-2.0
//! The sandbox's own cgroup v2 directory: where "container" workloads live and where the daemon
//! attaches its socket-LB programs (never the root cgroup).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Finds the cgroup2 mount point from `/proc/mounts` (first `cgroup2` entry).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    find_cgroup2(&mounts)
        .context("no cgroup2 filesystem mounted (see /proc/mounts); mount one first")
}

fn find_cgroup2(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_src, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// Undoes the octal escapes (`\040` for space, ...) the kernel uses in /proc/mounts.
pub(crate) fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Process ids currently listed in `<dir>/cgroup.procs`.
pub fn cgroup_pids(dir: &Path) -> Result<BTreeSet<i32>> {
    let path = dir.join("cgroup.procs");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// A cgroup v2 directory this process created; removed on drop.
#[derive(Debug)]
pub struct CgroupGuard {
    dir: PathBuf,
}

impl CgroupGuard {
    /// Creates `<cgroup2 mount>/<name>`. Fails if it exists already.
    pub fn create(name: &str) -> Result<CgroupGuard> {
        let dir = cgroup2_mount()?.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        Ok(CgroupGuard { dir })
    }

    /// The cgroup directory (pass as the daemon's `--cgroup-root`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the directory, first moving any process still inside to the parent cgroup.
    ///
    /// The sandbox kills every process it spawned before this runs; anything left over was not
    /// started by us directly (e.g. a double-forked grandchild), so it is moved, not killed.
    fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let parent = self.dir.parent().context("cgroup dir has no parent")?;
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!("rmdir cgroup {}: {e}", self.dir.display())
                }
                Err(_) => {}
            }
            for pid in cgroup_pids(&self.dir).unwrap_or_default() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                eprintln!(
                    "kldnet-testkit: teardown: moving leftover pid {pid} ({}) out of {}",
                    comm.trim(),
                    self.dir.display()
                );
                let _ = std::fs::write(parent.join("cgroup.procs"), pid.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("kldnet-testkit: teardown: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_among_v1_mounts() {
        let m = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                 cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            find_cgroup2(m),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(find_cgroup2("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
    }
}
