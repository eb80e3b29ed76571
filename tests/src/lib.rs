// SPDX-License-Identifier: Apache-2.0
//! Isolated sandboxes for kldnet end-to-end tests and `kldnet demo`.
//!
//! A [`Sandbox`] owns, and removes on drop (also when a test panics):
//! - a node network namespace (`kldsbx-<pid>-<n>`, node address on `lo`, ip_forward on);
//! - workload namespaces (`kldsbx-<pid>-<n>-<name>`) wired to the node by veth pairs;
//! - external ("outside") host namespaces wired to the node by an uplink veth;
//! - a cgroup v2 dir `<cgroup2 mount>/kldnet-sbx-<pid>-<n>` ("containers" join it);
//! - a private bpffs mounted at `<tmp>/bpf`;
//! - a temp dir with `config/`, `state/`, `run/`, `logs/` and `kldnetd.log`;
//! - every process it spawned (killed by PID/process group, children before the daemon).
//!
//! It never touches the host's interfaces, routes, sysctls, `/sys/fs/bpf` or root cgroup.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use kldnet_testkit::{Sandbox, WorkloadSpec, skip_unless_root};
//! if skip_unless_root("example") { return Ok(()); }
//! let mut sbx = Sandbox::new("example")?;
//! let w1 = sbx.add_workload(WorkloadSpec::new("w1", "vnet1", &["10.0.0.1".parse()?]))?;
//! let out = sbx.exec_in(&w1.netns, "ip", &["addr"])?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod bpffs;
mod cgroup;
mod daemon;
pub mod external;
mod names;
pub mod netns;
pub mod probe;
pub mod probe_cli;
mod process;
mod root;
mod sandbox;
mod udp_pktinfo;
pub mod workload;

pub use bpffs::{BpffsMount, is_mounted};
pub use cgroup::{CgroupGuard, cgroup_pids, cgroup2_mount};
pub use daemon::DaemonGuard;
pub use external::{External, ExternalSpec};
pub use netns::NetnsGuard;
pub use probe::{Attempt, ProbeOptions, ProbeReport, Proto, probe, probe_with, serve};
pub use process::{ChildGuard, command_in, tail};
pub use root::{is_root, skip_unless_root};
pub use sandbox::{DEFAULT_NODE_ADDR, Sandbox, SandboxBuilder};
pub use workload::{Workload, WorkloadSpec};
