// SPDX-License-Identifier: Apache-2.0
//! CiliumLoadBalancerIPPool → `[[lb_pool]]`, CiliumBGPPeeringPolicy → `[bgp]`.

use std::net::IpAddr;

use super::knp::cidr;
use super::selectors::{matches, selector_value};
use super::workloads::node_address;
use super::{Ctx, Outcome, Sections};
use crate::model::{BgpPeeringPolicy, LbIpPool, Object};
use crate::toml_out::{Table, V};

/// The smallest list of CIDRs covering `start..=stop` (same family).
pub(super) fn range_to_cidrs(start: IpAddr, stop: IpAddr) -> Result<Vec<String>, String> {
    let (lo, hi, bits) = match (start, stop) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32),
        _ => return Err(format!("range {start}-{stop} mixes IP families")),
    };
    if lo > hi {
        return Err(format!("range {start}-{stop} is empty"));
    }
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        // Largest aligned block starting at `cur` that stays within `hi`.
        let mut size = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        while size > 0
            && (size >= 128
                || cur
                    .checked_add((1u128 << size) - 1)
                    .is_none_or(|end| end > hi))
        {
            size -= 1;
        }
        let addr: IpAddr = if bits == 32 {
            std::net::Ipv4Addr::from(cur as u32).into()
        } else {
            std::net::Ipv6Addr::from(cur).into()
        };
        out.push(format!("{addr}/{}", bits - size));
        let end = cur + ((1u128 << size) - 1);
        if end >= hi {
            break;
        }
        cur = end + 1;
    }
    Ok(out)
}

pub(super) fn lb_pool(p: &LbIpPool, s: &mut Sections) -> Outcome {
    let mut problems = Vec::new();
    if p.spec.disabled {
        return Err("disabled: true".into());
    }
    let mut cidrs = Vec::new();
    for b in p.spec.blocks.iter().chain(&p.spec.cidrs) {
        let list = match (&b.cidr, &b.start, &b.stop) {
            (Some(c), _, _) => vec![cidr(c)?],
            (None, Some(a), b2) => {
                let start: IpAddr = a
                    .parse()
                    .map_err(|_| format!("start `{a}` is not an IP address"))?;
                let stop: IpAddr = match b2 {
                    Some(b2) => b2
                        .parse()
                        .map_err(|_| format!("stop `{b2}` is not an IP address"))?,
                    None => start,
                };
                range_to_cidrs(start, stop)?
            }
            _ => return Err("a block with neither cidr nor start".into()),
        };
        for c in list {
            if !cidrs.contains(&V::from(c.clone())) {
                cidrs.push(V::from(c));
            }
        }
    }
    if cidrs.is_empty() {
        return Err("no blocks".into());
    }
    for k in p.spec.other.keys() {
        problems.push(format!("spec.{k} not translated"));
    }
    let mut t = Table::new();
    t.set("name", &p.metadata.name).set("cidrs", V::A(cidrs));
    if let Some(sel) = &p.spec.service_selector {
        t.set("service_selector", selector_value(sel)?);
    }
    s.lb_pools.push(t);
    Ok(problems)
}

/// Why a BGP policy does not concern this node (its nodeSelector leaves it out), if so.
pub(super) fn bgp_not_here(ctx: &Ctx, b: &BgpPeeringPolicy) -> Option<String> {
    let this = ctx.opts.node.as_deref()?;
    let node = ctx.objects.iter().find_map(|o| match o {
        Object::Node(n) if n.metadata.name.as_deref() == Some(this) => Some(n),
        _ => None,
    })?;
    let sel = b.spec.node_selector.as_ref()?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    (!matches(sel, &labels)).then(|| format!("its nodeSelector does not select this node ({this})"))
}

pub(super) fn bgp(ctx: &Ctx, b: &BgpPeeringPolicy, s: &mut Sections) -> Outcome {
    let mut problems = Vec::new();
    let this = ctx
        .opts
        .node
        .as_deref()
        .ok_or("needs --node: [bgp] is per node (router id, nodeSelector)")?;
    let node = ctx.objects.iter().find_map(|o| match o {
        Object::Node(n) if n.metadata.name.as_deref() == Some(this) => Some(n),
        _ => None,
    });
    let Some(node) = node else {
        return Err(format!(
            "the Node object of this node ({this}) is not in the input: no router id"
        ));
    };
    if s.bgp.is_some() {
        return Err(
            "another CiliumBGPPeeringPolicy already selects this node (kldnet has one [bgp])"
                .into(),
        );
    }
    let Some(IpAddr::V4(router_id)) = node_address(node).filter(IpAddr::is_ipv4) else {
        return Err(format!("node {this} has no IPv4 address for the router id"));
    };
    let mut vrs = b.spec.virtual_routers.iter();
    let vr = vrs.next().ok_or("no virtualRouters")?;
    if vrs.next().is_some() {
        problems
            .push("only the first virtualRouter is translated (kldnet speaks for one AS)".into());
    }
    let asn = vr
        .local_asn
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a != 0)
        .ok_or("virtualRouters[0]: no valid localASN")?;
    for k in vr.other.keys() {
        problems.push(format!("virtualRouters[0].{k} not translated"));
    }
    let mut neighbors = Vec::new();
    for (i, n) in vr.neighbors.iter().enumerate() {
        let addr = n.peer_address.as_deref().unwrap_or("");
        let ip: Result<IpAddr, _> = addr.split('/').next().unwrap_or("").parse();
        let (Ok(ip), Some(peer_asn)) = (ip, n.peer_asn.and_then(|a| u32::try_from(a).ok())) else {
            problems.push(format!(
                "neighbors[{i}] left out: needs peerAddress and peerASN"
            ));
            continue;
        };
        let mut t = Table::new();
        t.set("address", ip.to_string()).set("asn", peer_asn);
        if let Some(p) = n.peer_port.and_then(|p| u16::try_from(p).ok()) {
            t.set("port", p);
        }
        if let Some(h) = n.hold_time_seconds {
            t.set("hold_time", format!("{h}s"));
        }
        for k in n.other.keys() {
            problems.push(format!("neighbors[{i}].{k} not translated"));
        }
        neighbors.push(V::T(t));
    }
    let mut adverts = Vec::new();
    if vr.export_pod_cidr {
        let mut t = Table::new();
        t.set("endpoint_cidrs", true);
        adverts.push(V::T(t));
    }
    if let Some(sel) = &vr.service_selector {
        let kinds: Vec<&str> = if vr.service_advertisements.is_empty() {
            vec!["LoadBalancerIP"]
        } else {
            vr.service_advertisements
                .iter()
                .map(String::as_str)
                .collect()
        };
        for k in &kinds {
            if !matches!(*k, "LoadBalancerIP" | "ExternalIP") {
                problems.push(format!(
                    "serviceAdvertisements {k} not translated (kldnet announces LoadBalancer and external IPs)"
                ));
            }
        }
        if kinds
            .iter()
            .any(|k| matches!(*k, "LoadBalancerIP" | "ExternalIP"))
        {
            let mut t = Table::new();
            t.set("service_selector", selector_value(sel)?);
            adverts.push(V::T(t));
        }
    }
    let mut t = Table::new();
    t.set("local_asn", asn)
        .set("router_id", router_id.to_string());
    t.list("neighbor", neighbors).list("advertisement", adverts);
    s.bgp = Some(t);
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::range_to_cidrs;

    #[test]
    fn ranges_become_minimal_cidrs() {
        let r = |a: &str, b: &str| range_to_cidrs(a.parse().unwrap(), b.parse().unwrap()).unwrap();
        assert_eq!(r("192.0.2.0", "192.0.2.255"), ["192.0.2.0/24"]);
        assert_eq!(r("192.0.2.10", "192.0.2.10"), ["192.0.2.10/32"]);
        assert_eq!(
            r("192.0.2.1", "192.0.2.6"),
            [
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/31",
                "192.0.2.6/32"
            ]
        );
        assert_eq!(r("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(r("2001:db8::", "2001:db8::3"), ["2001:db8::/126"]);
    }
}
