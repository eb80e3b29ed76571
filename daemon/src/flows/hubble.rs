// SPDX-License-Identifier: Apache-2.0
//! Hubble's names and JSON shape (cilium `api/v1/flow/flow.proto`, as `hubble observe -o json`
//! prints it), so tools and habits built for Hubble read kldnet's flows unchanged.
//!
//! The BPF side already numbers drop reasons and trace points the way Hubble does
//! (`bpf/include/kldnet/abi.h`); this module only names them.

use serde::{Deserialize, Serialize};

/// `flow.Verdict` names.
pub const VERDICTS: &[(u8, &str)] = &[
    (0, "VERDICT_UNKNOWN"),
    (1, "FORWARDED"),
    (2, "DROPPED"),
    (3, "ERROR"),
    (4, "AUDIT"),
    (5, "REDIRECTED"),
    (6, "TRACED"),
    (7, "TRANSLATED"),
];

pub const VERDICT_FORWARDED: u8 = 1;
pub const VERDICT_DROPPED: u8 = 2;
pub const VERDICT_TRANSLATED: u8 = 7;

/// Name of a verdict number.
pub fn verdict_name(v: u8) -> &'static str {
    VERDICTS
        .iter()
        .find(|(n, _)| *n == v)
        .map_or("VERDICT_UNKNOWN", |(_, s)| s)
}

/// `flow.DropReason` names (Hubble numbering = Cilium's `DROP_*` codes without the sign).
pub const DROP_REASONS: &[(u8, &str)] = &[
    (130, "INVALID_SOURCE_MAC"),
    (131, "INVALID_DESTINATION_MAC"),
    (132, "INVALID_SOURCE_IP"),
    (133, "POLICY_DENIED"),
    (134, "INVALID_PACKET_DROPPED"),
    (135, "CT_TRUNCATED_OR_INVALID_HEADER"),
    (136, "CT_MISSING_TCP_ACK_FLAG"),
    (137, "CT_UNKNOWN_L4_PROTOCOL"),
    (138, "CT_CANNOT_CREATE_ENTRY_FROM_PACKET"),
    (139, "UNSUPPORTED_L3_PROTOCOL"),
    (140, "MISSED_TAIL_CALL"),
    (141, "ERROR_WRITING_TO_PACKET"),
    (142, "UNKNOWN_L4_PROTOCOL"),
    (143, "UNKNOWN_ICMPV4_CODE"),
    (144, "UNKNOWN_ICMPV4_TYPE"),
    (145, "UNKNOWN_ICMPV6_CODE"),
    (146, "UNKNOWN_ICMPV6_TYPE"),
    (147, "ERROR_RETRIEVING_TUNNEL_KEY"),
    (148, "ERROR_RETRIEVING_TUNNEL_OPTIONS"),
    (149, "INVALID_GENEVE_OPTION"),
    (150, "UNKNOWN_L3_TARGET_ADDRESS"),
    (151, "STALE_OR_UNROUTABLE_IP"),
    (152, "NO_MATCHING_LOCAL_CONTAINER_FOUND"),
    (153, "ERROR_WHILE_CORRECTING_L3_CHECKSUM"),
    (154, "ERROR_WHILE_CORRECTING_L4_CHECKSUM"),
    (155, "CT_MAP_INSERTION_FAILED"),
    (156, "INVALID_IPV6_EXTENSION_HEADER"),
    (157, "IP_FRAGMENTATION_NOT_SUPPORTED"),
    (158, "SERVICE_BACKEND_NOT_FOUND"),
    (160, "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT"),
    (161, "FAILED_TO_INSERT_INTO_PROXYMAP"),
    (162, "REACHED_EDT_RATE_LIMITING_DROP_HORIZON"),
    (163, "UNKNOWN_CONNECTION_TRACKING_STATE"),
    (164, "LOCAL_HOST_IS_UNREACHABLE"),
    (165, "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION"),
    (166, "UNSUPPORTED_L2_PROTOCOL"),
    (167, "NO_MAPPING_FOR_NAT_MASQUERADE"),
    (168, "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE"),
    (169, "FIB_LOOKUP_FAILED"),
    (170, "ENCAPSULATION_TRAFFIC_IS_PROHIBITED"),
    (171, "INVALID_IDENTITY"),
    (172, "UNKNOWN_SENDER"),
    (173, "NAT_NOT_NEEDED"),
    (174, "IS_A_CLUSTERIP"),
    (175, "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND"),
    (176, "FORBIDDEN_ICMPV6_MESSAGE"),
    (177, "DENIED_BY_LB_SRC_RANGE_CHECK"),
    (178, "SOCKET_LOOKUP_FAILED"),
    (179, "SOCKET_ASSIGN_FAILED"),
    (180, "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL"),
    (181, "POLICY_DENY"),
    (182, "VLAN_FILTERED"),
    (183, "INVALID_VNI"),
    (184, "INVALID_TC_BUFFER"),
    (185, "NO_SID"),
    (186, "MISSING_SRV6_STATE"),
    (187, "NAT46"),
    (188, "NAT64"),
    (189, "AUTH_REQUIRED"),
    (190, "CT_NO_MAP_FOUND"),
    (191, "SNAT_NO_MAP_FOUND"),
    (192, "INVALID_CLUSTER_ID"),
    (193, "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP"),
    (194, "NO_EGRESS_GATEWAY"),
    (196, "TTL_EXCEEDED"),
    (197, "NO_NODE_ID"),
];

/// Cilium's C names (`DROP_NO_SERVICE`, …) that differ from Hubble's, accepted by filters.
pub const DROP_REASON_ALIASES: &[(&str, u8)] = &[
    ("NO_SERVICE", 158),
    ("INVALID", 134),
    ("CT_CREATE_FAILED", 155),
];

/// Hubble's name of a drop reason (`DROP_REASON_UNKNOWN` for numbers it does not know).
pub fn drop_reason_name(code: u8) -> &'static str {
    DROP_REASONS
        .iter()
        .find(|(n, _)| *n == code)
        .map_or("DROP_REASON_UNKNOWN", |(_, s)| s)
}

/// The drop reason number of a name (Hubble's or a Cilium alias), case-insensitive.
pub fn drop_reason_code(name: &str) -> Option<u8> {
    let up = name.trim().to_ascii_uppercase();
    DROP_REASONS
        .iter()
        .find(|(_, s)| *s == up)
        .map(|(n, _)| *n)
        .or_else(|| {
            DROP_REASON_ALIASES
                .iter()
                .find(|(s, _)| *s == up)
                .map(|(_, n)| *n)
        })
        .or_else(|| up.parse().ok())
}

/// Monitor trace point (flow_event.reason of a trace) → (`TraceObservationPoint` name, its
/// number in the flow, the metrics subtype `hubble_flows_processed_total` uses).
pub fn trace_point(point: u8) -> (&'static str, u32, &'static str) {
    match point {
        0 => ("TO_ENDPOINT", 101, "to-endpoint"),
        1 => ("TO_PROXY", 1, "to-proxy"),
        2 => ("TO_HOST", 2, "to-host"),
        3 => ("TO_STACK", 3, "to-stack"),
        4 => ("TO_OVERLAY", 4, "to-overlay"),
        5 => ("FROM_ENDPOINT", 5, "from-endpoint"),
        6 => ("FROM_PROXY", 6, "from-proxy"),
        7 => ("FROM_HOST", 7, "from-host"),
        8 => ("FROM_STACK", 8, "from-stack"),
        9 => ("FROM_OVERLAY", 9, "from-overlay"),
        10 => ("FROM_NETWORK", 10, "from-network"),
        11 => ("TO_NETWORK", 11, "to-network"),
        _ => ("UNKNOWN_POINT", 0, "unknown"),
    }
}

/// Cilium monitor message types (`event_type.type`).
pub const MSG_DROP: u32 = 1;
pub const MSG_TRACE: u32 = 4;
pub const MSG_POLICY_VERDICT: u32 = 5;
pub const MSG_TRACE_SOCK: u32 = 7;

/// TCP flag names in the order of their bits (FIN = bit 0 … CWR = bit 7).
pub const TCP_FLAGS: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

/// One line of `kldnet observe -o json` / the observe stream: `{"flow":{…},"node_name":…,"time":…}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    /// Events the observer could not deliver (Hubble's `lost_events` record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_events: Option<LostEvents>,
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub time: String,
}

/// Hubble's `LostEvent`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostEvents {
    /// `PERF_EVENT_RING_BUFFER` (the kernel ring was full) or `OBSERVER_EVENTS_QUEUE`
    /// (this stream fell behind the daemon).
    pub source: String,
    pub num_events_lost: u64,
}

/// Hubble's `Flow` (the fields kldnet fills), in protojson naming.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub time: String,
    #[serde(default)]
    pub uuid: String,
    pub verdict: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drop_reason: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub drop_reason_desc: String,
    #[serde(rename = "IP", default)]
    pub ip: Ip,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<L4>,
    #[serde(default)]
    pub source: Endpoint,
    #[serde(default)]
    pub destination: Endpoint,
    #[serde(rename = "Type", default)]
    pub flow_type: String,
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub event_type: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_service: Option<Service>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_service: Option<Service>,
    #[serde(default)]
    pub traffic_direction: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_observation_point: String,
    #[serde(default)]
    pub is_reply: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
    #[serde(rename = "Summary", default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allowed_by: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_allowed_by: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_denied_by: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_denied_by: Vec<Policy>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ip {
    pub source: String,
    pub destination: String,
    #[serde(rename = "ipVersion", default)]
    pub ip_version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L4 {
    #[serde(rename = "TCP", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp>,
    #[serde(rename = "UDP", default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<Ports>,
    #[serde(rename = "SCTP", default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<Ports>,
    #[serde(rename = "ICMPv4", default, skip_serializing_if = "Option::is_none")]
    pub icmpv4: Option<Icmp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tcp {
    pub source_port: u16,
    pub destination_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<TcpFlags>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub source_port: u16,
    pub destination_port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Icmp {
    #[serde(rename = "type", default)]
    pub icmp_type: u32,
    #[serde(default)]
    pub code: u32,
}

/// Only the set flags appear (protojson omits `false`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case, clippy::upper_case_acronyms)]
pub struct TcpFlags {
    #[serde(default, skip_serializing_if = "is_false")]
    pub FIN: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub SYN: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub RST: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub PSH: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ACK: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub URG: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ECE: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub CWR: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TcpFlags {
    pub fn from_bits(b: u8) -> TcpFlags {
        let f = |i: u8| b & (1 << i) != 0;
        TcpFlags {
            FIN: f(0),
            SYN: f(1),
            RST: f(2),
            PSH: f(3),
            ACK: f(4),
            URG: f(5),
            ECE: f(6),
            CWR: f(7),
        }
    }
}

/// Names of the set flags, `"SYN, ACK"` style (Hubble's summary order).
pub fn tcp_flag_names(bits: u8) -> Vec<&'static str> {
    (0..8)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| TCP_FLAGS[i])
        .collect()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(rename = "ID", default, skip_serializing_if = "is_zero")]
    pub id: u32,
    #[serde(default)]
    pub identity: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventType {
    #[serde(rename = "type")]
    pub event_type: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sub_type: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub index: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Hubble's `Policy` (who allowed or denied a flow).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// RFC 3339 UTC with nanoseconds, as protojson writes timestamps.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let nanos = unix_ns % 1_000_000_000;
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{nanos:09}Z")
}

/// Parses what [`rfc3339`] writes (and `…Z` / `…+00:00` without or with any fraction).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, rest) = s.split_once('T')?;
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (time, offset_s) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut tp = hms.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let sec: i64 = tp.next()?.parse().ok()?;
    let mut nanos: u64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nanos = digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32);
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    (secs >= 0).then(|| secs as u64 * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 → (year, month, day) and the time of day (Howard Hinnant's algorithm).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (tod / 3600) as u32,
        (tod % 3600 / 60) as u32,
        (tod % 60) as u32,
    )
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_hubble() {
        assert_eq!(drop_reason_name(133), "POLICY_DENIED");
        assert_eq!(drop_reason_name(181), "POLICY_DENY");
        assert_eq!(drop_reason_name(158), "SERVICE_BACKEND_NOT_FOUND");
        assert_eq!(drop_reason_code("no_service"), Some(158));
        assert_eq!(drop_reason_code("POLICY_DENIED"), Some(133));
        assert_eq!(verdict_name(7), "TRANSLATED");
        assert_eq!(trace_point(0).0, "TO_ENDPOINT");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = 1_700_000_000_123_456_789;
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn flags_serialize_only_when_set() {
        let j = serde_json::to_string(&TcpFlags::from_bits(0x12)).unwrap();
        assert_eq!(j, r#"{"SYN":true,"ACK":true}"#);
    }
}
