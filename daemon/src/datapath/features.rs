// SPDX-License-Identifier: Apache-2.0
//! Kernel feature probes, each with what to do when it is missing.

use std::ffi::CString;
use std::path::Path;

use crate::api::KernelFeatures;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn version_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// Whether `path` (or its nearest existing parent) is on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let mut p = path;
    loop {
        if p.exists() {
            break;
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; c is a valid C string.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
    }
}

pub fn probe(bpf_root: &Path, cgroup: Option<&Path>) -> KernelFeatures {
    let release = kernel_release();
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let tcx = version_at_least(&release, 6, 6);
    let cgroup2 = cgroup.is_some_and(|c| c.join("cgroup.procs").exists());
    let bpffs = is_bpffs(bpf_root);
    let mut missing = Vec::new();
    if !btf {
        missing.push(
            "BTF (/sys/kernel/btf/vmlinux): boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"
                .into(),
        );
    }
    if !tcx {
        missing.push(format!("TCX links (kernel {release} < 6.6): tc programs cannot be pinned, so a daemon restart detaches them"));
    }
    if !cgroup2 {
        missing.push("cgroup v2: mount it (`mount -t cgroup2 none /sys/fs/cgroup`) or pass --cgroup-root; socket LB is off without it".into());
    }
    if !bpffs {
        missing.push(format!("bpffs at {}: run `mount -t bpf bpf /sys/fs/bpf` (or pass --bpf-root on a bpf filesystem)", bpf_root.display()));
    }
    KernelFeatures {
        release,
        btf,
        tcx,
        cgroup2,
        bpffs,
        missing,
    }
}

/// ifindex of an interface in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Every interface of this network namespace: name → ifindex.
pub fn interfaces() -> std::collections::BTreeMap<String, u32> {
    let mut out = std::collections::BTreeMap::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            out.insert(name, (*p).if_index);
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_versions_compare() {
        assert!(super::version_at_least("6.18.44-fc", 6, 6));
        assert!(!super::version_at_least("6.1.0-18-amd64", 6, 6));
        assert!(super::version_at_least("7.0", 6, 6));
    }
}

/// The device of the most specific non-default IPv4 route to `addr` in this network
/// namespace's main table (`/proc/self/net/route` follows the reading process's netns).
pub fn route_device(addr: std::net::Ipv4Addr) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/net/route").ok()?;
    best_route(&table, addr)
}

fn best_route(table: &str, addr: std::net::Ipv4Addr) -> Option<String> {
    // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask …; addresses are
    // hex in the kernel's (little-endian) byte order.
    let a = u32::from_ne_bytes(addr.octets());
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let metric: u32 = f.get(6)?.parse().ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            (mask != 0 && a & mask == dest).then(|| {
                (
                    mask.count_ones(),
                    std::cmp::Reverse(metric),
                    f[0].to_string(),
                )
            })
        })
        .max()
        .map(|(_, _, dev)| dev)
}

#[cfg(test)]
mod route_tests {
    #[test]
    fn most_specific_non_default_route_wins() {
        let table =
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT
                     eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
                     br0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
                     vnet7\t1601F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
";
        let table = table.replace("\\t", "\t");
        assert_eq!(
            super::best_route(&table, "10.244.1.22".parse().unwrap()).as_deref(),
            Some("vnet7")
        );
        assert_eq!(
            super::best_route(&table, "10.244.1.5".parse().unwrap()).as_deref(),
            Some("br0")
        );
        // The default route is never an endpoint's interface.
        assert_eq!(
            super::best_route(&table, "203.0.113.1".parse().unwrap()),
            None
        );
    }
}
