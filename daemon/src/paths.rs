// SPDX-License-Identifier: Apache-2.0
//! Every path the daemon touches, each one a flag, so tests and demos run isolated.

use std::path::PathBuf;

/// Where a kldnetd instance keeps its things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Config dirs, highest precedence first.
    pub config_dirs: Vec<PathBuf>,
    pub state_dir: PathBuf,
    /// Holds the API socket `kldnet.sock`.
    pub run_dir: PathBuf,
    /// bpffs dir; maps are pinned under `<bpf_root>/v<ABI>/`.
    pub bpf_root: PathBuf,
    /// cgroup v2 dir the socket-LB programs attach to.
    pub cgroup_root: Option<PathBuf>,
}

pub const DEFAULT_RUN_DIR: &str = "/run/kldnet";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kldnet";
pub const DEFAULT_BPF_ROOT: &str = "/sys/fs/bpf/kldnet";
pub const SOCKET_NAME: &str = "kldnet.sock";

impl Paths {
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join(SOCKET_NAME)
    }

    /// The versioned pin dir: a layout change gets a new dir instead of reusing old maps.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpf_root.join(format!("v{}", kldnet_bpf::ABI_VERSION))
    }
}

/// The cgroup2 mount point, from /proc/mounts.
pub fn find_cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}
