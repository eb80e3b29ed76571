// SPDX-License-Identifier: Apache-2.0
//! Prometheus metrics at `[flows].metrics` (`GET /metrics`, text exposition 0.0.4).
//!
//! Flow metrics carry Hubble's names and labels (CONTRACT §4) so existing dashboards work:
//! counted per flow *event* as Hubble does (the datapath reports new flows, drops and
//! periodic refreshes, not every packet). `hubble_drop_total` also carries Hubble's
//! optional `source`/`destination` context (`namespace/name` of an endpoint, empty
//! otherwise) — drops are what one wants per workload, and they are rare enough to keep
//! the series count bounded; series of endpoints that leave the configuration are removed
//! on the next reload. The other families keep Hubble's default labels. The daemon's own `kldnet_*` metrics come
//! from `status` at scrape time.

pub mod http;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use kldnet_bpf::abi::*;

use crate::api::Status;
use crate::flows::FlowsStatus;
use crate::flows::hubble::{self, VERDICT_DROPPED, VERDICT_FORWARDED};
use crate::flows::model::{Flow, IPPROTO_TCP, IPPROTO_UDP};

type Ctx = (Arc<str>, Arc<str>);

/// Counters derived from flows (Hubble's metric families).
#[derive(Debug, Default)]
pub struct FlowMetrics {
    /// (type, subtype, verdict)
    flows: HashMap<(&'static str, &'static str, u8), u64>,
    /// (reason, protocol, source, destination)
    drops: HashMap<(u8, &'static str, Ctx), u64>,
    /// (flag, family)
    tcp_flags: HashMap<(&'static str, &'static str), u64>,
    /// (protocol, port)
    ports: HashMap<(&'static str, u16), u64>,
    /// (direction, match, action)
    policy: HashMap<(&'static str, String, &'static str), u64>,
}

fn empty() -> Arc<str> {
    Arc::from("")
}

impl FlowMetrics {
    /// Counts one flow.
    pub fn observe(&mut self, f: &Flow) {
        let ctx = (
            f.src.as_ref().map_or_else(empty, |p| p.workload.clone()),
            f.dst.as_ref().map_or_else(empty, |p| p.workload.clone()),
        );
        let (ty, sub) = f.metric_type();
        let verdict = f.verdict();
        *self.flows.entry((ty, sub, verdict)).or_default() += 1;
        if verdict == VERDICT_DROPPED {
            *self
                .drops
                .entry((f.ev.reason, f.protocol(), ctx))
                .or_default() += 1;
        }
        if verdict == VERDICT_FORWARDED && f.ev.proto == IPPROTO_TCP {
            let family = if f.ev.family == FAMILY_V6 {
                "IPv6"
            } else {
                "IPv4"
            };
            let b = f.ev.tcp_flags;
            let syn = b & 0x02 != 0;
            let ack = b & 0x10 != 0;
            for (set, name) in [
                (b & 0x01 != 0, "FIN"),
                (syn && ack, "SYN-ACK"),
                (syn && !ack, "SYN"),
                (b & 0x04 != 0, "RST"),
            ] {
                if set {
                    *self.tcp_flags.entry((name, family)).or_default() += 1;
                }
            }
        }
        if verdict == VERDICT_FORWARDED
            && !f.is_reply()
            && matches!(f.ev.proto, IPPROTO_TCP | IPPROTO_UDP)
        {
            *self.ports.entry((f.protocol(), f.dst_port())).or_default() += 1;
        }
        // Policy verdicts: the datapath's policy-verdict events, policy drops, and the first
        // packet of a flow a rule allowed (what Hubble's policy-verdict notifications report).
        let policy_drop = matches!(f.ev.reason, DROP_POLICY_DENIED | DROP_POLICY_DENY)
            && verdict == VERDICT_DROPPED;
        let allowed_by_rule =
            f.ev.rule_id != 0 && verdict == VERDICT_FORWARDED && f.ev.flags & EVF_NEW_FLOW != 0;
        if f.ev.r#type == EVENT_POLICY_VERDICT || policy_drop || allowed_by_rule {
            let direction = if f.is_ingress() { "ingress" } else { "egress" };
            let matched = match (&f.rule, f.ev.rule_id) {
                (_, 0) => "none".to_string(),
                (Some(r), _) if !r.match_type.is_empty() => r.match_type.clone(),
                _ => "l3-l4".to_string(),
            };
            let action = if verdict == VERDICT_DROPPED {
                "dropped"
            } else {
                "forwarded"
            };
            *self.policy.entry((direction, matched, action)).or_default() += 1;
        }
    }

    /// Removes series whose source or destination is a workload no longer configured.
    pub fn retain_workloads(&mut self, workloads: &HashSet<String>) {
        let keep = |c: &Ctx| {
            (c.0.is_empty() || workloads.contains(&*c.0))
                && (c.1.is_empty() || workloads.contains(&*c.1))
        };
        self.drops.retain(|k, _| keep(&k.2));
    }

    /// Number of series (for tests and status).
    pub fn series(&self) -> usize {
        self.flows.len()
            + self.drops.len()
            + self.tcp_flags.len()
            + self.ports.len()
            + self.policy.len()
    }

    fn render(&self, out: &mut String) {
        let mut fam = Family::new(
            out,
            "hubble_flows_processed_total",
            "counter",
            "Total number of flows processed",
        );
        for ((ty, sub, verdict), v) in sorted(&self.flows) {
            fam.sample(
                &[
                    ("type", ty),
                    ("subtype", sub),
                    ("verdict", hubble::verdict_name(*verdict)),
                ],
                *v,
            );
        }
        let mut fam = Family::new(
            out,
            "hubble_drop_total",
            "counter",
            "Number of drops by reason and protocol",
        );
        for ((reason, proto, ctx), v) in sorted(&self.drops) {
            fam.sample(
                &[
                    ("reason", hubble::drop_reason_name(*reason)),
                    ("protocol", proto),
                    ("source", &ctx.0),
                    ("destination", &ctx.1),
                ],
                *v,
            );
        }
        let mut fam = Family::new(
            out,
            "hubble_tcp_flags_total",
            "counter",
            "TCP flag occurrences",
        );
        for ((flag, family), v) in sorted(&self.tcp_flags) {
            fam.sample(&[("flag", flag), ("family", family)], *v);
        }
        let mut fam = Family::new(
            out,
            "hubble_port_distribution_total",
            "counter",
            "Numbers of packets distributed by destination port",
        );
        for ((proto, port), v) in sorted(&self.ports) {
            fam.sample(&[("protocol", proto), ("port", &port.to_string())], *v);
        }
        let mut fam = Family::new(
            out,
            "hubble_policy_verdicts_total",
            "counter",
            "Number of policy verdicts by direction, match type and action",
        );
        for ((dir, matched, action), v) in sorted(&self.policy) {
            fam.sample(
                &[("direction", dir), ("match", matched), ("action", action)],
                *v,
            );
        }
    }
}

fn sorted<K: Ord + Clone, V>(m: &HashMap<K, V>) -> Vec<(&K, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Writes one metric family: `# HELP`, `# TYPE`, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample<V: std::fmt::Display>(&mut self, labels: &[(&str, &str)], v: V) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Names of `kld_counters` slots for `kldnet_datapath_events_total`.
pub const COUNTER_NAMES: &[(u32, &str)] = &[
    (CTR_EVENTS_LOST, "events_lost"),
    (CTR_CT_CREATE_FAIL, "ct_create_fail"),
    (CTR_SOCK_LB_MISS, "sock_lb_miss"),
    (CTR_SOCK_LB_NO_BE, "sock_lb_no_backend"),
    (CTR_SOCK_RNAT_FAIL, "sock_rnat_fail"),
    (CTR_PARSE_ERROR, "parse_error"),
    (CTR_METRICS_FAIL, "metrics_fail"),
    (CTR_LB_NEW_FLOW, "lb_new_flow"),
    (CTR_LB_XLATE, "lb_xlate"),
    (CTR_LB_RNAT, "lb_rnat"),
    (CTR_LB_NO_BE, "lb_no_backend"),
    (CTR_LB_MISS, "lb_miss"),
    (CTR_NAT_FAIL, "nat_fail"),
    (CTR_LB_RNAT_MISS, "lb_rnat_miss"),
];

/// The whole exposition: flow metrics, the flow pipeline's own counters, the datapath
/// counters, and (when the main loop answered) the daemon's status.
pub fn render(
    flows: &FlowMetrics,
    pipeline: &FlowsStatus,
    counters: &BTreeMap<u32, u64>,
    status: Option<&Status>,
) -> String {
    let mut out = String::with_capacity(8192);
    flows.render(&mut out);
    let o = &mut out;
    let mut f = Family::new(
        o,
        "kldnet_flow_events_total",
        "counter",
        "Flow events decoded from the kld_events ring buffer",
    );
    f.sample(&[], pipeline.events_decoded);
    let mut f = Family::new(
        o,
        "kldnet_flow_events_lost_total",
        "counter",
        "Flow events lost: ring buffer full in the kernel (source=\"ringbuf\") or records the decoder rejected (source=\"decode\")",
    );
    f.sample(&[("source", "ringbuf")], pipeline.events_lost);
    f.sample(&[("source", "decode")], pipeline.decode_errors);
    let mut f = Family::new(
        o,
        "kldnet_flows_buffered",
        "gauge",
        "Flows kept in the in-memory ring",
    );
    f.sample(&[], pipeline.buffered);
    let mut f = Family::new(
        o,
        "kldnet_flows_buffer_capacity",
        "gauge",
        "Capacity of the in-memory flow ring ([flows].buffer)",
    );
    f.sample(&[], pipeline.capacity);
    let mut f = Family::new(
        o,
        "kldnet_datapath_events_total",
        "counter",
        "Datapath health counters (kld_counters), summed over CPUs",
    );
    for (idx, name) in COUNTER_NAMES {
        f.sample(
            &[("counter", name)],
            counters.get(idx).copied().unwrap_or(0),
        );
    }
    let Some(st) = status else {
        return out;
    };
    let mut f = Family::new(
        o,
        "kldnet_reloads_total",
        "counter",
        "Reloads attempted since the daemon started",
    );
    f.sample(&[], st.reloads);
    let mut f = Family::new(
        o,
        "kldnet_reload_errors_total",
        "counter",
        "Reloads that failed (the previous generation kept serving)",
    );
    f.sample(&[], st.reload_failures);
    let mut f = Family::new(
        o,
        "kldnet_reload_duration_seconds",
        "gauge",
        "Duration of the last reload",
    );
    f.sample(
        &[],
        st.last_reload
            .as_ref()
            .map_or(0.0, |r| r.duration_us as f64 / 1e6),
    );
    let mut f = Family::new(
        o,
        "kldnet_reload_success",
        "gauge",
        "1 when the last reload succeeded, 0 when it failed",
    );
    f.sample(&[], u8::from(st.last_reload.as_ref().is_none_or(|r| r.ok)));
    let mut f = Family::new(
        o,
        "kldnet_config_generation",
        "gauge",
        "Configuration generation serving",
    );
    f.sample(&[], st.generation);
    let mut f = Family::new(o, "kldnet_map_entries", "gauge", "Entries in a BPF map");
    for m in &st.maps {
        f.sample(&[("map", &m.name)], m.entries);
    }
    let mut f = Family::new(
        o,
        "kldnet_map_capacity",
        "gauge",
        "Capacity (max_entries) of a BPF map",
    );
    for m in &st.maps {
        f.sample(&[("map", &m.name)], m.capacity);
    }
    let mut f = Family::new(
        o,
        "kldnet_endpoints",
        "gauge",
        "Endpoints known to the daemon by locality",
    );
    f.sample(&[("locality", "local")], st.endpoints_local);
    f.sample(&[("locality", "remote")], st.endpoints_remote);
    let mut f = Family::new(o, "kldnet_identities", "gauge", "Security identities");
    f.sample(&[], st.identities);
    let mut f = Family::new(o, "kldnet_services", "gauge", "Services configured");
    f.sample(&[], st.services);
    let mut f = Family::new(o, "kldnet_policies", "gauge", "Policies configured");
    f.sample(&[], st.policies);
    out
}

/// The `/metrics` endpoint of the pipeline `shared`.
pub fn handler(shared: Arc<crate::flows::Shared>) -> http::Handler {
    Arc::new(move |path: String, _query: String| {
        let shared = shared.clone();
        Box::pin(async move {
            match path.as_str() {
                "/metrics" => {
                    let status = shared.daemon_status().await;
                    let pipeline = shared.status();
                    let counters = shared.counters();
                    let text = {
                        let m = shared.metrics.lock().expect("lock");
                        render(&m, &pipeline, &counters, status.as_ref())
                    };
                    http::Reply::ok("text/plain; version=0.0.4; charset=utf-8", text)
                }
                "/" => http::Reply::ok(
                    "text/plain; charset=utf-8",
                    "kldnet metrics: GET /metrics\n",
                ),
                _ => http::Reply::not_found(),
            }
        })
    })
}
