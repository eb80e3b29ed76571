// SPDX-License-Identifier: Apache-2.0
//! External hosts: a namespace "outside" the node, for north-south tests (NodePort,
//! LoadBalancer and external IPs), wired to the node namespace by a veth whose node side
//! plays the node's uplink.
//!
//! ```text
//!  external ns                                node ns (192.0.2.10/32 on lo)
//!  eth0: 203.0.113.50/32  <──── veth ────>  uplink0
//!  192.0.2.10/32 dev eth0 (static neighbour)  route 203.0.113.50/32 dev uplink0 src 192.0.2.10
//!  default via 192.0.2.10 (LB / external IPs)  (static neighbour = eth0's MAC)
//! ```
//!
//! Every address that is not the outside host's own is routed to the node, so the node
//! address, NodePorts, LoadBalancer IPs and external IPs are all reached through the uplink,
//! as from a router in front of the node. Static neighbour entries on both sides keep ARP
//! out of the picture.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};

use crate::netns::{NetnsGuard, ip_in, parse_link, sysctl_in};
use crate::workload::{WORKLOAD_IFNAME, Workload};

/// What to create for one external host.
#[derive(Debug, Clone)]
pub struct ExternalSpec {
    /// Short name, `[A-Za-z0-9_-]{1,20}`; part of the namespace name.
    pub name: String,
    /// Node-side veth name (the uplink, ≤ 15 chars), e.g. `"uplink0"`: list it in
    /// `[node].uplinks`.
    pub uplink_ifname: String,
    /// The outside host's address (put on its `eth0` as /32), e.g. 203.0.113.50.
    pub addr: Ipv4Addr,
}

impl ExternalSpec {
    /// A spec with the given name, uplink name and address.
    pub fn new(name: &str, uplink_ifname: &str, addr: Ipv4Addr) -> ExternalSpec {
        ExternalSpec {
            name: name.to_string(),
            uplink_ifname: uplink_ifname.to_string(),
            addr,
        }
    }
}

/// A created external host (plain data; the sandbox owns and removes its namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The spec's name.
    pub name: String,
    /// Network namespace name (`/var/run/netns/<netns>`).
    pub netns: String,
    /// The uplink: node-side veth name.
    pub uplink_ifname: String,
    /// Ifindex of the uplink in the node namespace.
    pub uplink_ifindex: u32,
    /// The outside host's address.
    pub addr: Ipv4Addr,
    /// MAC address of the outside host's `eth0`.
    pub mac: String,
    /// MAC address of the uplink.
    pub uplink_mac: String,
}

/// Validates `spec` against the existing workloads and external hosts.
pub(crate) fn check_spec(
    spec: &ExternalSpec,
    workloads: &[Workload],
    externals: &[External],
    node_addr: Ipv4Addr,
) -> Result<()> {
    crate::names::check_token("external host name", &spec.name, 20)?;
    crate::names::check_token("uplink interface name", &spec.uplink_ifname, 15)?;
    ensure!(
        spec.uplink_ifname != "lo",
        "uplink interface name \"lo\" is taken in the node namespace"
    );
    ensure!(
        spec.addr != node_addr && !spec.addr.is_unspecified(),
        "external host {} needs an address other than the node's ({node_addr})",
        spec.name
    );
    for w in workloads {
        ensure!(
            w.name != spec.name,
            "name {} used by a workload and an external host",
            spec.name
        );
        ensure!(
            w.host_ifname != spec.uplink_ifname,
            "interface {} used by workload {} and external host {}",
            spec.uplink_ifname,
            w.name,
            spec.name
        );
        ensure!(
            !w.addrs.contains(&spec.addr),
            "address {} used by workload {} and external host {}",
            spec.addr,
            w.name,
            spec.name
        );
    }
    for e in externals {
        ensure!(
            e.name != spec.name,
            "external host name {} used twice",
            spec.name
        );
        ensure!(
            e.uplink_ifname != spec.uplink_ifname,
            "uplink {} used by external hosts {} and {}",
            spec.uplink_ifname,
            e.name,
            spec.name
        );
        ensure!(
            e.addr != spec.addr,
            "address {} used by external hosts {} and {}",
            spec.addr,
            e.name,
            spec.name
        );
    }
    Ok(())
}

/// Creates namespace `netns` and wires it to `node` as described in the module docs.
///
/// Deleting the returned namespace destroys the veth pair and with it the node's route and
/// neighbour entry.
pub(crate) fn create(
    node: &str,
    node_addr: Ipv4Addr,
    netns: &str,
    spec: &ExternalSpec,
) -> Result<(NetnsGuard, External)> {
    let guard = NetnsGuard::create(netns)?;
    let up = spec.uplink_ifname.as_str();
    ip_in(
        node,
        &[
            "link",
            "add",
            up,
            "type",
            "veth",
            "peer",
            "name",
            WORKLOAD_IFNAME,
            "netns",
            netns,
        ],
    )
    .with_context(|| format!("create veth {up} for external host {}", spec.name))?;
    let (uplink_ifindex, uplink_mac) =
        parse_link(&ip_in(node, &["-o", "link", "show", "dev", up])?)?;
    let (_, mac) = parse_link(&ip_in(
        netns,
        &["-o", "link", "show", "dev", WORKLOAD_IFNAME],
    )?)?;

    // Node side.
    sysctl_in(node, &format!("net/ipv4/conf/{up}/rp_filter"), "0")?;
    ip_in(node, &["link", "set", up, "up"])?;
    let addr = spec.addr.to_string();
    ip_in(
        node,
        &[
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            up,
            "scope",
            "link",
            "src",
            &node_addr.to_string(),
        ],
    )?;
    ip_in(
        node,
        &[
            "neigh",
            "replace",
            &addr,
            "lladdr",
            &mac,
            "dev",
            up,
            "nud",
            "permanent",
        ],
    )?;

    // Outside side: everything but itself is behind the node.
    let eth = WORKLOAD_IFNAME;
    sysctl_in(netns, &format!("net/ipv4/conf/{eth}/rp_filter"), "0")?;
    sysctl_in(netns, "net/ipv4/conf/all/rp_filter", "0")?;
    ip_in(netns, &["addr", "add", &format!("{addr}/32"), "dev", eth])?;
    ip_in(netns, &["link", "set", eth, "up"])?;
    let gw = node_addr.to_string();
    ip_in(
        netns,
        &[
            "route",
            "add",
            &format!("{gw}/32"),
            "dev",
            eth,
            "scope",
            "link",
        ],
    )?;
    ip_in(
        netns,
        &[
            "neigh",
            "replace",
            &gw,
            "lladdr",
            &uplink_mac,
            "dev",
            eth,
            "nud",
            "permanent",
        ],
    )?;
    ip_in(
        netns,
        &[
            "route", "add", "default", "via", &gw, "dev", eth, "src", &addr,
        ],
    )?;

    let e = External {
        name: spec.name.clone(),
        netns: netns.to_string(),
        uplink_ifname: up.to_string(),
        uplink_ifindex,
        addr: spec.addr,
        mac,
        uplink_mac,
    };
    Ok((guard, e))
}
