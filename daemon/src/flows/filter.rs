// SPDX-License-Identifier: Apache-2.0
//! `kldnet observe` filters, applied in the daemon: Hubble's semantics — values of one
//! flag are alternatives (OR), different flags must all match (AND); the unprefixed
//! flags (`--pod`, `--ip`, `--label`, `--namespace`, `--port`, `--service`) match either
//! side of the flow.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::hubble;
use super::model::{Flow, Peer};

/// What to show: the filters of `kldnet observe` and how much history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowQuery {
    /// The last N matching flows of the buffer (None: 20, or all with `since`, or none
    /// when following).
    pub last: Option<u64>,
    /// Keep the stream open and send new matching flows as they come.
    pub follow: bool,
    /// Only flows at or after this time (ns since the Unix epoch).
    pub since_unix_ns: Option<u64>,
    pub namespace: Vec<String>,
    pub pod: Vec<String>,
    pub from_pod: Vec<String>,
    pub to_pod: Vec<String>,
    pub label: Vec<String>,
    pub from_label: Vec<String>,
    pub to_label: Vec<String>,
    pub ip: Vec<String>,
    pub from_ip: Vec<String>,
    pub to_ip: Vec<String>,
    pub port: Vec<u16>,
    pub to_port: Vec<u16>,
    pub protocol: Vec<String>,
    pub verdict: Vec<String>,
    pub drop_reason_desc: Vec<String>,
    /// trace | drop | policy-verdict | l7 | sock, optionally `trace:to-endpoint`.
    pub event_type: Vec<String>,
    /// `namespace/name` or `name` of the service a flow went through.
    pub service: Vec<String>,
}

/// A query checked and prepared for matching many flows.
#[derive(Debug, Default)]
pub struct Filter {
    q: FlowQuery,
    ip: Vec<Cidr>,
    from_ip: Vec<Cidr>,
    to_ip: Vec<Cidr>,
    drop_reasons: Vec<u8>,
    verdicts: Vec<String>,
    protocols: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Cidr(IpAddr, u8);

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (a, len) = s.split_once('/').unwrap_or((s, ""));
        let ip: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("bad IP or CIDR `{s}`"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            max
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("bad prefix length in `{s}`"))?
        };
        Ok(Cidr(ip, len))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.1)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.1)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl Filter {
    /// Checks the query; the error names the bad value.
    pub fn new(q: FlowQuery) -> Result<Filter, String> {
        let cidrs = |v: &[String]| v.iter().map(|s| Cidr::parse(s)).collect::<Result<_, _>>();
        let drop_reasons = q
            .drop_reason_desc
            .iter()
            .map(|d| {
                hubble::drop_reason_code(d).ok_or_else(|| {
                    format!("unknown drop reason `{d}` (Hubble names, e.g. POLICY_DENIED)")
                })
            })
            .collect::<Result<_, _>>()?;
        let verdicts = q
            .verdict
            .iter()
            .map(|v| {
                let up = v.to_ascii_uppercase();
                if hubble::VERDICTS.iter().any(|(_, n)| *n == up) {
                    Ok(up)
                } else {
                    Err(format!(
                        "unknown verdict `{v}` (FORWARDED, DROPPED, TRANSLATED, …)"
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        for t in &q.event_type {
            let base = t.split(':').next().unwrap_or("");
            if ![
                "trace",
                "drop",
                "policy-verdict",
                "l7",
                "sock",
                "trace-sock",
            ]
            .contains(&base)
            {
                return Err(format!(
                    "unknown event type `{t}` (trace, drop, policy-verdict, l7, sock)"
                ));
            }
        }
        Ok(Filter {
            ip: cidrs(&q.ip)?,
            from_ip: cidrs(&q.from_ip)?,
            to_ip: cidrs(&q.to_ip)?,
            drop_reasons,
            verdicts,
            protocols: q.protocol.iter().map(|p| p.to_ascii_lowercase()).collect(),
            q,
        })
    }

    pub fn query(&self) -> &FlowQuery {
        &self.q
    }

    /// Whether the flow passes every filter.
    pub fn matches(&self, f: &Flow) -> bool {
        let q = &self.q;
        let (src, dst) = (f.src.as_deref(), f.dst.as_deref());
        let any_side = |pred: &dyn Fn(Option<&Peer>) -> bool| pred(src) || pred(dst);
        if let Some(since) = q.since_unix_ns
            && f.unix_ns < since
        {
            return false;
        }
        if !q.namespace.is_empty()
            && !any_side(&|p| p.is_some_and(|p| q.namespace.contains(&p.namespace)))
        {
            return false;
        }
        let pod_matches = |pods: &[String], p: Option<&Peer>| {
            p.is_some_and(|p| !p.name.is_empty() && pods.iter().any(|s| pod_match(s, p)))
        };
        if !q.pod.is_empty() && !any_side(&|p| pod_matches(&q.pod, p)) {
            return false;
        }
        if !q.from_pod.is_empty() && !pod_matches(&q.from_pod, src) {
            return false;
        }
        if !q.to_pod.is_empty() && !pod_matches(&q.to_pod, dst) {
            return false;
        }
        let label_matches = |sels: &[String], p: Option<&Peer>| {
            p.is_some_and(|p| {
                sels.iter()
                    .any(|sel| sel.split(',').all(|one| p.has_label(one)))
            })
        };
        if !q.label.is_empty() && !any_side(&|p| label_matches(&q.label, p)) {
            return false;
        }
        if !q.from_label.is_empty() && !label_matches(&q.from_label, src) {
            return false;
        }
        if !q.to_label.is_empty() && !label_matches(&q.to_label, dst) {
            return false;
        }
        let (sip, dip) = (f.src_ip(), f.dst_ip());
        let in_any = |c: &[Cidr], ip: IpAddr| c.iter().any(|c| c.contains(ip));
        if !self.ip.is_empty() && !in_any(&self.ip, sip) && !in_any(&self.ip, dip) {
            return false;
        }
        if !self.from_ip.is_empty() && !in_any(&self.from_ip, sip) {
            return false;
        }
        if !self.to_ip.is_empty() && !in_any(&self.to_ip, dip) {
            return false;
        }
        if !q.port.is_empty() && !q.port.contains(&f.src_port()) && !q.port.contains(&f.dst_port())
        {
            return false;
        }
        if !q.to_port.is_empty() && !q.to_port.contains(&f.dst_port()) {
            return false;
        }
        if !self.protocols.is_empty() {
            let p = f.protocol().to_ascii_lowercase();
            let alt = if p == "icmpv4" { "icmp" } else { p.as_str() };
            if !self.protocols.iter().any(|x| *x == p || x == alt) {
                return false;
            }
        }
        if !self.verdicts.is_empty() && !self.verdicts.iter().any(|v| v == f.verdict_name()) {
            return false;
        }
        if !self.drop_reasons.is_empty() && !self.drop_reasons.contains(&f.drop_reason()) {
            return false;
        }
        if !q.event_type.is_empty()
            && !q.event_type.iter().any(|t| {
                let (base, sub) = t.split_once(':').unwrap_or((t, ""));
                let base = if base == "trace-sock" { "sock" } else { base };
                base == f.type_name() && (sub.is_empty() || sub == f.subtype())
            })
        {
            return false;
        }
        if !q.service.is_empty() {
            let Some(s) = f.service.as_deref() else {
                return false;
            };
            if !q.service.iter().any(|want| match want.split_once('/') {
                Some((ns, name)) => ns == s.namespace && name == s.name,
                None => *want == s.name,
            }) {
                return false;
            }
        }
        true
    }
}

/// Hubble's `--pod [namespace/]name-prefix` (namespace `default` when omitted).
fn pod_match(sel: &str, p: &Peer) -> bool {
    let (ns, prefix) = sel.split_once('/').unwrap_or(("default", sel));
    p.namespace == ns && p.name.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.1.2.3".parse().unwrap()));
        assert!(
            Cidr::parse("10.0.0.1")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn bad_values_are_named() {
        let e = Filter::new(FlowQuery {
            verdict: vec!["SMILED".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("SMILED"), "{e}");
        let e = Filter::new(FlowQuery {
            drop_reason_desc: vec!["NOPE".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
    }
}
