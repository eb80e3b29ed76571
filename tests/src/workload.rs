// SPDX-License-Identifier: Apache-2.0
//! Workloads: one network namespace each, wired to the node namespace by a veth pair and routed
//! as /32s (Calico/Cilium style), so traffic between workloads crosses the node and its hooks.
//!
//! ```text
//!  workload ns                          node ns (192.0.2.10/32 on lo, ip_forward=1)
//!  eth0: 10.0.0.1/32  <──── veth ────>  vnet1   route 10.0.0.1/32 dev vnet1 src 192.0.2.10
//!  default via 169.254.1.1 (static neighbour = vnet1's MAC)
//! ```

use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};

use crate::netns::{NetnsGuard, ip_in, parse_link, sysctl_in};

/// Link-local gateway every workload routes through; answered by a static neighbour entry.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Interface name of the workload side of the veth.
pub const WORKLOAD_IFNAME: &str = "eth0";

/// What to create for one workload.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Short name, `[A-Za-z0-9_-]{1,20}`; part of the namespace name and a handy reply text.
    pub name: String,
    /// Host-side veth name inside the node namespace (≤ 15 chars), e.g. `"vnet3"`.
    pub host_ifname: String,
    /// Addresses put on the workload's `eth0` as /32s; at least one. The first is the source
    /// of the default route.
    pub addrs: Vec<Ipv4Addr>,
    /// True for a "container/pod": processes spawned in it join the sandbox cgroup (socket LB
    /// applies). False for a "VM": its sockets are outside the cgroup (per-packet LB applies).
    pub in_lb_cgroup: bool,
}

impl WorkloadSpec {
    /// A spec with the given name, host interface and addresses, inside the LB cgroup.
    pub fn new(name: &str, host_ifname: &str, addrs: &[Ipv4Addr]) -> WorkloadSpec {
        WorkloadSpec {
            name: name.to_string(),
            host_ifname: host_ifname.to_string(),
            addrs: addrs.to_vec(),
            in_lb_cgroup: true,
        }
    }

    /// Same spec, as a "VM" whose processes stay outside the LB cgroup.
    pub fn vm(mut self) -> WorkloadSpec {
        self.in_lb_cgroup = false;
        self
    }
}

/// A created workload (plain data; its namespace is owned and removed by the sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The spec's name.
    pub name: String,
    /// Network namespace name (`/var/run/netns/<netns>`).
    pub netns: String,
    /// Host-side veth name in the node namespace.
    pub host_ifname: String,
    /// Ifindex of `host_ifname` in the node namespace (where tc programs attach).
    pub host_ifindex: u32,
    /// Addresses on the workload's `eth0`.
    pub addrs: Vec<Ipv4Addr>,
    /// MAC address of the workload's `eth0`, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// MAC address of the host-side veth (the workload's gateway MAC).
    pub host_mac: String,
    /// Whether processes spawned in it join the sandbox cgroup.
    pub in_lb_cgroup: bool,
}

impl Workload {
    /// The first address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addrs[0]
    }
}

/// Validates `spec` against itself and the already created workloads.
pub(crate) fn check_spec(spec: &WorkloadSpec, existing: &[Workload]) -> Result<()> {
    crate::names::check_token("workload name", &spec.name, 20)?;
    crate::names::check_token("host interface name", &spec.host_ifname, 15)?;
    ensure!(
        spec.host_ifname != "lo",
        "host interface name \"lo\" is taken in the node namespace"
    );
    ensure!(
        !spec.addrs.is_empty(),
        "workload {} needs at least one address",
        spec.name
    );
    for w in existing {
        ensure!(
            w.name != spec.name,
            "workload name {} used twice",
            spec.name
        );
        ensure!(
            w.host_ifname != spec.host_ifname,
            "host interface {} used by workloads {} and {}",
            spec.host_ifname,
            w.name,
            spec.name
        );
        for a in &spec.addrs {
            ensure!(
                !w.addrs.contains(a),
                "address {a} used by workloads {} and {}",
                w.name,
                spec.name
            );
        }
    }
    Ok(())
}

/// Creates namespace `netns` and wires it to `node` as described in the module docs.
///
/// Returns the namespace guard (drop it to undo everything: deleting the workload namespace
/// destroys the veth pair and with it the node's routes and neighbours).
pub(crate) fn create(
    node: &str,
    node_addr: Ipv4Addr,
    netns: &str,
    spec: &WorkloadSpec,
) -> Result<(NetnsGuard, Workload)> {
    let guard = NetnsGuard::create(netns)?;
    let host = spec.host_ifname.as_str();
    ip_in(
        node,
        &[
            "link",
            "add",
            host,
            "type",
            "veth",
            "peer",
            "name",
            WORKLOAD_IFNAME,
            "netns",
            netns,
        ],
    )
    .with_context(|| format!("create veth {host} for workload {}", spec.name))?;
    let (host_ifindex, host_mac) = parse_link(&ip_in(node, &["-o", "link", "show", "dev", host])?)?;
    let (_, mac) = parse_link(&ip_in(
        netns,
        &["-o", "link", "show", "dev", WORKLOAD_IFNAME],
    )?)?;

    // Node side first, so the workload's first packet finds its way.
    for (key, val) in [("proxy_arp", "1"), ("rp_filter", "0")] {
        sysctl_in(node, &format!("net/ipv4/conf/{host}/{key}"), val)?;
    }
    ip_in(node, &["link", "set", host, "up"])?;
    let node_src = node_addr.to_string();
    for a in &spec.addrs {
        let a32 = format!("{a}/32");
        ip_in(
            node,
            &[
                "route", "add", &a32, "dev", host, "scope", "link", "src", &node_src,
            ],
        )?;
        ip_in(
            node,
            &[
                "neigh",
                "replace",
                &a.to_string(),
                "lladdr",
                &mac,
                "dev",
                host,
                "nud",
                "permanent",
            ],
        )?;
    }

    // Workload side.
    let eth = WORKLOAD_IFNAME;
    for a in &spec.addrs {
        ip_in(netns, &["addr", "add", &format!("{a}/32"), "dev", eth])?;
    }
    ip_in(netns, &["link", "set", eth, "up"])?;
    let gw = GATEWAY.to_string();
    ip_in(netns, &["route", "add", &gw, "dev", eth, "scope", "link"])?;
    ip_in(
        netns,
        &[
            "neigh",
            "replace",
            &gw,
            "lladdr",
            &host_mac,
            "dev",
            eth,
            "nud",
            "permanent",
        ],
    )?;
    let src = spec.addrs[0].to_string();
    ip_in(
        netns,
        &[
            "route", "add", "default", "via", &gw, "dev", eth, "src", &src,
        ],
    )?;

    let w = Workload {
        name: spec.name.clone(),
        netns: netns.to_string(),
        host_ifname: host.to_string(),
        host_ifindex,
        addrs: spec.addrs.clone(),
        mac,
        host_mac,
        in_lb_cgroup: spec.in_lb_cgroup,
    };
    Ok((guard, w))
}
