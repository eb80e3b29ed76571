// SPDX-License-Identifier: Apache-2.0
//! A private bpffs mount per sandbox, so pinned maps and links never touch `/sys/fs/bpf`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A bpffs instance mounted by this process at `path`; unmounted on drop.
#[derive(Debug)]
pub struct BpffsMount {
    path: PathBuf,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("NUL in path {}", p.display()))
}

impl BpffsMount {
    /// Creates directory `path` and mounts a fresh bpffs on it (mode 0700).
    pub fn mount(path: &Path) -> Result<BpffsMount> {
        std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        let target = cpath(path)?;
        let opts = c"mode=0700";
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mount bpffs at {}", path.display()));
        }
        Ok(BpffsMount {
            path: path.to_path_buf(),
        })
    }

    /// The mount point (pass as the daemon's `--bpf-root`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unmount(&self) -> Result<()> {
        let target = cpath(&self.path)?;
        // SAFETY: target is a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let first = std::io::Error::last_os_error();
        // Busy (an open pin or fd elsewhere): detach lazily so the tree vanishes once unused.
        // SAFETY: as above.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
            eprintln!(
                "kldnet-testkit: teardown: bpffs {} busy ({first}); lazily detached",
                self.path.display()
            );
            return Ok(());
        }
        Err(std::io::Error::last_os_error())
            .with_context(|| format!("umount bpffs {} (first try: {first})", self.path.display()))
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("kldnet-testkit: teardown: {e:#}");
        }
    }
}

/// True when `path` is a mount point listed in `/proc/self/mountinfo`.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split_whitespace()
            .nth(4)
            .is_some_and(|mp| crate::cgroup::unescape_mount_path(mp) == want)
    })
}
