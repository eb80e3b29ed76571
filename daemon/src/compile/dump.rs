// SPDX-License-Identifier: Apache-2.0
//! Map entries as sorted text: golden tests, `kldnet bpf … list`, and debugging.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use kldnet_bpf::abi::*;

use super::{Attachment, DesiredState};

pub fn ip4(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

pub fn proto_name(p: u8) -> String {
    match p {
        0 => "any".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

pub fn addr16_str(addr: &[u8; 16], family: u8) -> String {
    if family == 4 {
        Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string()
    } else {
        Ipv6Addr::from(*addr).to_string()
    }
}

pub fn algorithm_name(a: u8) -> &'static str {
    match a {
        LB_ALG_RANDOM => "random",
        LB_ALG_ROUND_ROBIN => "round-robin",
        LB_ALG_MAGLEV => "maglev",
        _ => "?",
    }
}

pub fn backend_state_name(s: u8) -> &'static str {
    match s {
        BE_ACTIVE => "active",
        BE_TERMINATING => "terminating",
        BE_MAINTENANCE => "maintenance",
        _ => "?",
    }
}

pub fn service_flags(f: u8) -> String {
    let names = [
        (SVC_F_NODEPORT, "nodeport"),
        (SVC_F_EXTERNAL_IP, "external-ip"),
        (SVC_F_LOADBALANCER, "loadbalancer"),
        (SVC_F_LOCAL_ONLY, "local"),
        (SVC_F_AFFINITY, "affinity"),
        (SVC_F_HOSTPORT, "hostport"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join(",")
    }
}

pub fn lb4_key(k: &Lb4Key) -> String {
    let scope = if k.scope == SCOPE_INTERNAL {
        "int"
    } else {
        "ext"
    };
    format!(
        "{}:{}/{} {scope} slot {}",
        ip4(k.address),
        u16::from_be(k.dport),
        proto_name(k.proto),
        k.backend_slot
    )
}

pub fn lb4_service(k: &Lb4Key, v: &Lb4Service) -> String {
    if k.backend_slot == 0 {
        format!(
            "count={} total={} rev_nat={} alg={} flags={} affinity={}s",
            v.count,
            v.total,
            v.rev_nat_index,
            algorithm_name(v.algorithm),
            service_flags(v.flags),
            v.affinity_timeout_sec
        )
    } else {
        format!("backend={} rev_nat={}", v.backend_id, v.rev_nat_index)
    }
}

pub fn lb4_backend(b: &Lb4Backend) -> String {
    format!(
        "{}:{}/{} {}",
        ip4(b.address),
        u16::from_be(b.port),
        proto_name(b.proto),
        backend_state_name(b.state)
    )
}

pub fn ipcache_key(k: &IpcacheKey) -> String {
    format!(
        "{}/{}",
        addr16_str(&k.addr, k.family),
        k.prefixlen.saturating_sub(IPCACHE_PREFIX_BASE)
    )
}

pub fn ipcache_value(v: &IpcacheValue) -> String {
    let tunnel = if v.tunnel_endpoint == 0 {
        "-".to_string()
    } else {
        ip4(v.tunnel_endpoint).to_string()
    };
    format!("identity={} tunnel={tunnel} flags={}", v.identity, v.flags)
}

pub fn endpoint_key(k: &EndpointKey) -> String {
    addr16_str(&k.addr, k.family)
}

pub fn endpoint_info(v: &EndpointInfo) -> String {
    format!(
        "ifindex={} identity={} policy_set={} flags={:#x}",
        v.ifindex, v.identity, v.policy_set, v.flags
    )
}

pub fn policy_key(k: &PolicyKey) -> String {
    let dir = if k.direction == DIR_INGRESS {
        "ingress"
    } else {
        "egress"
    };
    let port_bits = k.prefixlen.saturating_sub(POLICY_PREFIX_PROTO);
    let port = if k.prefixlen <= POLICY_PREFIX_PROTO {
        "*".to_string()
    } else {
        format!("{}/{port_bits}", u16::from_be(k.dport))
    };
    let proto = if k.prefixlen < POLICY_PREFIX_PROTO {
        "any".to_string()
    } else {
        proto_name(k.proto)
    };
    format!(
        "set={} identity={} {dir} {proto} port={port}",
        k.policy_set, k.identity
    )
}

pub fn policy_entry(v: &PolicyEntry) -> String {
    let action = if v.action == POLICY_DENY {
        "deny"
    } else {
        "allow"
    };
    format!("{action} rule={} proxy_port={}", v.rule_id, v.proxy_port)
}

/// The whole desired state as sorted text, one entry per line, a header per map.
pub fn dump(state: &DesiredState) -> String {
    let mut s = String::new();
    let mut section = |name: &str, lines: Vec<String>| {
        let _ = writeln!(s, "[{name}]");
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
    };
    section(
        MAP_LB4_SVC,
        state
            .lb4_services
            .iter()
            .map(|(k, v)| format!("{} -> {}", lb4_key(k), lb4_service(k, v)))
            .collect(),
    );
    section(
        MAP_LB4_BE,
        state
            .lb4_backends
            .iter()
            .map(|(k, v)| format!("{k} -> {}", lb4_backend(v)))
            .collect(),
    );
    section(
        MAP_LB4_RNAT,
        state
            .lb4_rev_nat
            .iter()
            .map(|(k, v)| format!("{k} -> {}:{}", ip4(v.address), u16::from_be(v.port)))
            .collect(),
    );
    section(
        MAP_IPCACHE,
        state
            .ipcache
            .iter()
            .map(|(k, v)| format!("{} -> {}", ipcache_key(k), ipcache_value(v)))
            .collect(),
    );
    section(
        MAP_ENDPOINTS,
        state
            .endpoints
            .iter()
            .map(|(k, v)| format!("{} -> {}", endpoint_key(k), endpoint_info(v)))
            .collect(),
    );
    section(
        MAP_POLICY,
        state
            .policy
            .iter()
            .map(|(k, v)| format!("{} -> {}", policy_key(k), policy_entry(v)))
            .collect(),
    );
    section(
        MAP_LB4_MAGLEV,
        state
            .maglev
            .iter()
            .map(|(k, table)| {
                let mut counts = std::collections::BTreeMap::new();
                for id in table {
                    *counts.entry(*id).or_insert(0u32) += 1;
                }
                let counts: Vec<String> =
                    counts.iter().map(|(id, n)| format!("{id}:{n}")).collect();
                format!(
                    "rev_nat {k} -> {} slots, backend:slots {}",
                    table.len(),
                    counts.join(" ")
                )
            })
            .collect(),
    );
    section(
        "attachments",
        state
            .attachments
            .iter()
            .map(|a| match a {
                Attachment::Endpoint { ifname, ifindex } => {
                    format!("endpoint {ifname} ifindex={ifindex}")
                }
                Attachment::Uplink { ifname, ifindex } => {
                    format!("uplink {ifname} ifindex={ifindex}")
                }
            })
            .collect(),
    );
    s
}

fn tcp_flags(f: u8) -> String {
    let names = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join("|")
    }
}

pub fn ct4_key(k: &Ct4Key) -> String {
    let dir = match k.flags {
        CT_DIR_INGRESS => "ingress",
        CT_DIR_EGRESS => "egress",
        CT_DIR_SERVICE => "service",
        _ => "?",
    };
    format!(
        "{} {}:{} -> {}:{} {dir}",
        proto_name(k.proto),
        ip4(k.saddr),
        u16::from_be(k.sport),
        ip4(k.daddr),
        u16::from_be(k.dport)
    )
}

/// `now_ns`: CLOCK_MONOTONIC now, the clock `bpf_ktime_get_ns` uses.
pub fn ct_entry(v: &CtEntry, now_ns: u64) -> String {
    let left = v.expires_ns.saturating_sub(now_ns) / 1_000_000_000;
    let mut flags = Vec::new();
    for (bit, name) in [
        (CT_F_SEEN_REPLY, "seen-reply"),
        (CT_F_CLOSING, "closing"),
        (CT_F_NORTH_SOUTH, "north-south"),
        (CT_F_HAIRPIN, "hairpin"),
        (CT_F_MIDSTREAM, "midstream"),
    ] {
        if v.flags & bit != 0 {
            flags.push(name);
        }
    }
    format!(
        "expires={left}s identity={} backend={} rev_nat={} tx={} rx={} flags={}",
        v.src_identity,
        v.backend_id,
        v.rev_nat_index,
        tcp_flags(v.tx_tcp_flags),
        tcp_flags(v.rx_tcp_flags),
        if flags.is_empty() {
            "-".to_string()
        } else {
            flags.join(",")
        }
    )
}

pub fn sock_rnat(k: &SockRnatKey, v: &SockRnatValue) -> (String, String) {
    (
        format!(
            "socket {:#x} -> {}:{}",
            k.cookie,
            ip4(k.address),
            u16::from_be(k.port)
        ),
        format!(
            "shown as {}:{} (rev_nat {})",
            ip4(v.address),
            u16::from_be(v.port),
            v.rev_nat_index
        ),
    )
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
