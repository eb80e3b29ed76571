// SPDX-License-Identifier: Apache-2.0
//! A decoded, enriched flow as the daemon keeps it: the raw event plus shared references
//! to the names it resolved. Names are `Arc`s shared by every flow of the same endpoint,
//! so decoding allocates nothing per event but the flow itself; the Hubble JSON is built
//! only when somebody asks for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use kldnet_bpf::abi::*;

use super::hubble::{self, VERDICT_DROPPED, VERDICT_FORWARDED, VERDICT_TRANSLATED};

/// One side of a flow, resolved to a workload or an identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Endpoint id (the host-side interface's ifindex for local endpoints), 0 otherwise.
    pub id: u32,
    pub identity: u32,
    pub namespace: String,
    /// Endpoint name (Hubble's `pod_name`); empty for an identity without an endpoint.
    pub name: String,
    /// Hubble-style labels: `k8s:app=web`, `k8s:io.kubernetes.pod.namespace=prod`,
    /// `reserved:world`.
    pub labels: Vec<String>,
    /// `namespace/name` for endpoints, `""` otherwise (metrics' source/destination labels).
    pub workload: Arc<str>,
    /// (namespace, name) of the policies selecting this endpoint: a default-deny drop
    /// (no rule matched) names them.
    pub policies: Vec<(String, String)>,
}

impl Peer {
    /// Whether the labels hold `k=v` (`k` alone: the key is present), with or without a
    /// `k8s:`/`reserved:` source prefix.
    pub fn has_label(&self, selector: &str) -> bool {
        let (k, v) = match selector.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (selector.trim(), None),
        };
        self.labels.iter().any(|l| {
            let bare = l.split_once(':').map_or(l.as_str(), |(_, rest)| rest);
            for cand in [l.as_str(), bare] {
                let (lk, lv) = cand.split_once('=').unwrap_or((cand, ""));
                if lk == k && v.is_none_or(|v| v == lv) {
                    return true;
                }
            }
            false
        })
    }
}

/// The service a translated flow went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

/// A policy rule the datapath reports by `rule_id`: which policy, direction and rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub namespace: String,
    pub name: String,
    /// `DIR_INGRESS` / `DIR_EGRESS`.
    pub direction: u8,
    /// Index of the rule within its list (`[[policy.ingress]]` …).
    pub index: u32,
    /// A deny rule (`ingress_deny` / `egress_deny`).
    pub deny: bool,
    /// Hubble's policy match type for `hubble_policy_verdicts_total` (`l3-only`, `l3-l4`,
    /// `l4-only`, `all`); empty = `l3-l4`.
    pub match_type: String,
}

/// A decoded flow.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Position in the daemon's sequence of flows (1, 2, …).
    pub seq: u64,
    /// Wall-clock time (ns since the Unix epoch) of the event.
    pub unix_ns: u64,
    pub ev: FlowEvent,
    pub src: Option<Arc<Peer>>,
    pub dst: Option<Arc<Peer>>,
    pub service: Option<Arc<ServiceName>>,
    pub rule: Option<Arc<PolicyRule>>,
    pub node: Arc<str>,
    pub ifname: Option<Arc<str>>,
}

/// `IPPROTO_*` numbers.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

impl Flow {
    /// Hubble's verdict number.
    pub fn verdict(&self) -> u8 {
        match self.ev.r#type {
            EVENT_DROP => VERDICT_DROPPED,
            EVENT_SOCK_LB => VERDICT_TRANSLATED,
            EVENT_POLICY_VERDICT if self.ev.reason != REASON_FORWARDED => VERDICT_DROPPED,
            _ => VERDICT_FORWARDED,
        }
    }

    pub fn verdict_name(&self) -> &'static str {
        hubble::verdict_name(self.verdict())
    }

    /// Drop reason (0 unless dropped).
    pub fn drop_reason(&self) -> u8 {
        if self.verdict() == VERDICT_DROPPED {
            self.ev.reason
        } else {
            0
        }
    }

    pub fn is_reply(&self) -> bool {
        self.ev.flags & EVF_REPLY != 0
    }

    pub fn is_ingress(&self) -> bool {
        self.ev.direction == DIR_INGRESS
    }

    pub fn src_ip(&self) -> IpAddr {
        addr(self.ev.family, &self.ev.src_addr)
    }

    pub fn dst_ip(&self) -> IpAddr {
        addr(self.ev.family, &self.ev.dst_addr)
    }

    pub fn src_port(&self) -> u16 {
        u16::from_be(self.ev.src_port)
    }

    pub fn dst_port(&self) -> u16 {
        u16::from_be(self.ev.dst_port)
    }

    /// Protocol name as Hubble's metrics write it.
    pub fn protocol(&self) -> &'static str {
        protocol_name(self.ev.proto, self.ev.family)
    }

    /// Hubble's `--type` name of the event: trace, drop, policy-verdict, sock.
    pub fn type_name(&self) -> &'static str {
        match self.ev.r#type {
            EVENT_DROP => "drop",
            EVENT_POLICY_VERDICT => "policy-verdict",
            EVENT_SOCK_LB => "sock",
            _ => "trace",
        }
    }

    /// (type, subtype) labels of `hubble_flows_processed_total`.
    pub fn metric_type(&self) -> (&'static str, &'static str) {
        match self.ev.r#type {
            EVENT_DROP => ("Drop", ""),
            EVENT_POLICY_VERDICT => ("PolicyVerdict", ""),
            EVENT_SOCK_LB => ("SockTrace", ""),
            _ => ("Trace", hubble::trace_point(self.ev.reason).2),
        }
    }

    /// The metrics subtype for trace events (`to-endpoint`, …), empty otherwise.
    pub fn subtype(&self) -> &'static str {
        self.metric_type().1
    }

    /// Policies on the right list of the Hubble flow: the deciding rule's policy, or for a
    /// default-deny drop (no rule matched) the policies that select the enforcing endpoint.
    fn policies(&self) -> Option<(&'static str, Vec<hubble::Policy>)> {
        let dropped = self.verdict() == VERDICT_DROPPED;
        let ingress = self.is_ingress();
        let list = match (dropped, ingress) {
            (true, true) => "ingress_denied_by",
            (true, false) => "egress_denied_by",
            (false, true) => "ingress_allowed_by",
            (false, false) => "egress_allowed_by",
        };
        let policy = |namespace: &str, name: &str, kind: &str| hubble::Policy {
            name: name.to_string(),
            namespace: namespace.to_string(),
            labels: Vec::new(),
            kind: kind.into(),
        };
        if let Some(r) = &self.rule {
            return Some((list, vec![policy(&r.namespace, &r.name, "KldnetPolicy")]));
        }
        if dropped && self.ev.reason == DROP_POLICY_DENIED {
            let enforcing = if ingress { &self.dst } else { &self.src };
            let ps: Vec<_> = enforcing
                .as_ref()?
                .policies
                .iter()
                .map(|(ns, n)| policy(ns, n, "KldnetPolicy/default-deny"))
                .collect();
            return (!ps.is_empty()).then_some((list, ps));
        }
        None
    }

    /// One-line human summary (Hubble's `Summary`).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.ev.proto == IPPROTO_TCP {
            let names = hubble::tcp_flag_names(self.ev.tcp_flags);
            if !names.is_empty() {
                parts.push(format!("TCP Flags: {}", names.join(", ")));
            } else {
                parts.push("TCP".into());
            }
        } else {
            parts.push(self.protocol().to_string());
        }
        parts.join(" ")
    }

    /// The flow in Hubble's JSON shape.
    pub fn to_hubble(&self) -> hubble::Line {
        let time = hubble::rfc3339(self.unix_ns);
        let ev = &self.ev;
        let peer = |p: &Option<Arc<Peer>>, identity: u32| match p {
            Some(p) => hubble::Endpoint {
                id: p.id,
                identity: if identity != 0 { identity } else { p.identity },
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                pod_name: p.name.clone(),
            },
            None => hubble::Endpoint {
                identity,
                ..Default::default()
            },
        };
        let (sport, dport) = (self.src_port(), self.dst_port());
        let l4 = match ev.proto {
            IPPROTO_TCP => Some(hubble::L4 {
                tcp: Some(hubble::Tcp {
                    source_port: sport,
                    destination_port: dport,
                    flags: (ev.tcp_flags != 0).then(|| hubble::TcpFlags::from_bits(ev.tcp_flags)),
                }),
                ..Default::default()
            }),
            IPPROTO_UDP => Some(hubble::L4 {
                udp: Some(hubble::Ports {
                    source_port: sport,
                    destination_port: dport,
                }),
                ..Default::default()
            }),
            IPPROTO_SCTP => Some(hubble::L4 {
                sctp: Some(hubble::Ports {
                    source_port: sport,
                    destination_port: dport,
                }),
                ..Default::default()
            }),
            IPPROTO_ICMP => Some(hubble::L4 {
                // parse.h keeps the echo id in dport for requests, in sport for replies.
                icmpv4: Some(hubble::Icmp {
                    icmp_type: if dport != 0 { 8 } else { 0 },
                    code: 0,
                }),
                ..Default::default()
            }),
            _ => None,
        };
        let (event_type, sub_type, point) = match ev.r#type {
            EVENT_DROP => (hubble::MSG_DROP, u32::from(ev.reason), ""),
            EVENT_POLICY_VERDICT => (hubble::MSG_POLICY_VERDICT, 0, ""),
            EVENT_SOCK_LB => (hubble::MSG_TRACE_SOCK, 0, ""),
            _ => {
                let (name, _, _) = hubble::trace_point(ev.reason);
                (hubble::MSG_TRACE, u32::from(ev.reason), name)
            }
        };
        let drop_reason = self.drop_reason();
        let service = self.service.as_ref().map(|s| hubble::Service {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
        });
        // A reply through reverse NAT comes from the service; a request goes to it.
        let (source_service, destination_service) = if self.is_reply() {
            (service, None)
        } else {
            (None, service)
        };
        let mut flow = hubble::Flow {
            time: time.clone(),
            uuid: uuid(self.seq, &self.node),
            verdict: self.verdict_name().to_string(),
            drop_reason: u32::from(drop_reason),
            drop_reason_desc: if drop_reason != 0 {
                hubble::drop_reason_name(drop_reason).to_string()
            } else {
                String::new()
            },
            ip: hubble::Ip {
                source: self.src_ip().to_string(),
                destination: self.dst_ip().to_string(),
                ip_version: if ev.family == FAMILY_V6 {
                    "IPv6"
                } else {
                    "IPv4"
                }
                .into(),
            },
            l4,
            source: peer(&self.src, ev.src_identity),
            destination: peer(&self.dst, ev.dst_identity),
            flow_type: if ev.r#type == EVENT_SOCK_LB {
                "SOCK"
            } else {
                "L3_L4"
            }
            .into(),
            node_name: self.node.to_string(),
            event_type: hubble::EventType {
                event_type,
                sub_type,
            },
            source_service,
            destination_service,
            traffic_direction: if self.is_ingress() {
                "INGRESS"
            } else {
                "EGRESS"
            }
            .into(),
            trace_observation_point: point.into(),
            is_reply: self.is_reply(),
            interface: (ev.ifindex != 0).then(|| hubble::Interface {
                index: ev.ifindex,
                name: self.ifname.as_deref().unwrap_or("").to_string(),
            }),
            summary: self.summary(),
            ..Default::default()
        };
        if let Some((list, p)) = self.policies() {
            match list {
                "ingress_denied_by" => flow.ingress_denied_by = p,
                "egress_denied_by" => flow.egress_denied_by = p,
                "ingress_allowed_by" => flow.ingress_allowed_by = p,
                _ => flow.egress_allowed_by = p,
            }
        }
        hubble::Line {
            flow: Some(flow),
            lost_events: None,
            node_name: self.node.to_string(),
            time,
        }
    }
}

/// A stable, unique-per-node id in UUID text form: FNV of the node name, then the sequence.
fn uuid(seq: u64, node: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (seq >> 48) as u16 & 0xfff,
        seq & 0xffff_ffff_ffff
    )
}

/// The address of an event field.
pub fn addr(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// Hubble's protocol names.
pub fn protocol_name(proto: u8, family: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "TCP",
        IPPROTO_UDP => "UDP",
        IPPROTO_SCTP => "SCTP",
        IPPROTO_ICMP => "ICMPv4",
        58 if family == FAMILY_V6 => "ICMPv6",
        _ => "unknown",
    }
}
