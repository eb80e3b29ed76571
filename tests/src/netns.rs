// SPDX-License-Identifier: Apache-2.0
//! Named network namespaces (`ip netns add/del`) and running code or tools inside them.
//!
//! Namespaces are entered with `setns(2)` on a thread or in a forked child, never with
//! `ip netns exec`, which remounts `/sys` and so hides bpffs and cgroupfs from the process.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Directory where iproute2 keeps named namespaces (bind mounts of `/proc/<pid>/ns/net`).
pub const NETNS_DIR: &str = "/var/run/netns";

/// Path of the named namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Opens the named namespace (O_CLOEXEC), e.g. to `setns` into it later.
pub fn open_netns(name: &str) -> Result<File> {
    let path = netns_path(name);
    File::open(&path).with_context(|| format!("open network namespace {}", path.display()))
}

/// Moves the calling thread into the network namespace behind `fd`.
pub(crate) fn setns_net(fd: &File) -> std::io::Result<()> {
    // SAFETY: fd is a valid open namespace file; setns only affects the calling thread.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `f` on a short-lived thread that has entered network namespace `name`.
///
/// Sockets created by `f` stay in that namespace after it returns. A panic in `f` is
/// propagated to the caller.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let fd = open_netns(name)?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> Result<T> {
            setns_net(&fd).with_context(|| format!("setns into network namespace {name}"))?;
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Writes a sysctl (e.g. `net/ipv4/ip_forward`) inside network namespace `ns` only.
///
/// `/proc/sys/net` resolves against the calling thread's namespace, so a thread that entered
/// `ns` changes that namespace and never the host's.
pub fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    run_in(ns, || std::fs::write(&path, value))?
        .with_context(|| format!("set sysctl {key}={value} in network namespace {ns}"))
}

/// Reads a sysctl inside network namespace `ns`.
pub fn sysctl_get(ns: &str, key: &str) -> Result<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let v = run_in(ns, || std::fs::read_to_string(&path))?
        .with_context(|| format!("read sysctl {key} in network namespace {ns}"))?;
    Ok(v.trim().to_string())
}

/// Runs `ip <args>` (add `-n NS` yourself) and returns stdout; errors carry the command and stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (iproute2 must be installed)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n <ns> <args>`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// A named network namespace this process created; deleted on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// Creates namespace `name` with `lo` up. Fails if the name already exists.
    pub fn create(name: &str) -> Result<NetnsGuard> {
        if netns_path(name).exists() {
            bail!("network namespace {name} already exists; refusing to adopt it");
        }
        ip(&["netns", "add", name])?;
        let guard = NetnsGuard {
            name: name.to_string(),
        };
        ip_in(name, &["link", "set", "lo", "up"])?;
        Ok(guard)
    }

    /// The namespace name (as shown by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("kldnet-testkit: teardown: {e:#}");
        }
    }
}

/// Parses `ip -o link show dev X` output into (ifindex, MAC address).
pub(crate) fn parse_link(out: &str) -> Result<(u32, String)> {
    let line = out.lines().next().context("empty `ip link show` output")?;
    let ifindex = line
        .split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("no ifindex in {line:?}"))?;
    let mut words = line.split_whitespace();
    let mac = loop {
        match words.next() {
            Some("link/ether") => break words.next().context("no MAC after link/ether")?,
            Some(_) => {}
            None => bail!("no link/ether in {line:?}"),
        }
    };
    Ok((ifindex, mac.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_link_line() {
        let out = "7: vnet3@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \
                   mode DEFAULT group default qlen 1000\\    link/ether 4a:0b:11:22:33:44 brd \
                   ff:ff:ff:ff:ff:ff link-netns w1\n";
        let (idx, mac) = parse_link(out).unwrap();
        assert_eq!(idx, 7);
        assert_eq!(mac, "4a:0b:11:22:33:44");
    }
}
