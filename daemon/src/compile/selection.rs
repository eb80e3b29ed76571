// SPDX-License-Identifier: Apache-2.0
//! Which backends a service frontend may use on this node: Kubernetes endpoint selection
//! (kube-proxy `CategorizeEndpoints`, `pkg/proxy/topology.go`) with today's semantics —
//! `ProxyTerminatingEndpoints` and topology hints are GA, so both are always on.
//!
//! Owns the rules only; the services compiler maps its backends to [`Candidate`]s and turns
//! the chosen sets into map entries. Checked against kube-proxy's own test tables in
//! `daemon/tests/endpoint_selection.rs`.
//!
//! The rules, in short:
//! - Cluster policy uses the ready endpoints (narrowed to this node's zone when topology
//!   hints apply); if none is ready anywhere, the serving-and-terminating ones instead, so
//!   that a rollout does not drop connections.
//! - Local policy uses this node's ready endpoints; failing those, this node's
//!   serving-and-terminating ones; failing those, none: traffic is dropped when endpoints
//!   exist elsewhere, rejected when there are none at all.

use std::net::IpAddr;

use kldnet_config::schema::BackendState;

/// One endpoint of a service, as endpoint selection sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub addr: IpAddr,
    /// Port, host byte order.
    pub port: u16,
    /// Runs on this node.
    pub local: bool,
    /// Takes new connections (EndpointSlice `ready`; never true while terminating).
    pub ready: bool,
    /// Would answer if sent a connection (EndpointSlice `serving`).
    pub serving: bool,
    /// Being shut down (EndpointSlice `terminating`).
    pub terminating: bool,
    /// Topology hints (EndpointSlice `hints.forZones`); `None` or empty = no hint.
    pub zones: Option<Vec<String>>,
}

/// A service port's traffic policies, as they bear on endpoint selection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `internal_traffic_policy = "local"`.
    pub internal_local: bool,
    /// `external_traffic_policy = "local"`; only has an effect if `externally_accessible`.
    pub external_local: bool,
    /// Reachable from outside the cluster: a node port, LoadBalancer address or external IP.
    pub externally_accessible: bool,
    /// Topology-aware routing requested (see [`hints_annotation_enabled`]).
    pub hints_auto: bool,
    /// This node's zone (`topology.kubernetes.io/zone`); `None` or empty = unknown.
    pub node_zone: Option<String>,
}

impl Policy {
    /// Whether `external_local` is in effect.
    pub fn external_policy_local(&self) -> bool {
        self.external_local && self.externally_accessible
    }

    /// Some traffic to this service uses the Cluster policy. External traffic needs cluster
    /// endpoints even under `external_local`: this node's own pods reach an LB address
    /// through them (kube-proxy's short-circuit).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible
    }

    /// Some traffic to this service uses the Local policy.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || self.external_policy_local()
    }
}

/// The result of [`categorize`]: indexes into the candidate slice, ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// Backends for Cluster-policy traffic; `None` if no traffic uses the Cluster policy
    /// (internal-local and not externally accessible).
    pub cluster: Option<Vec<usize>>,
    /// Backends for Local-policy traffic; `None` if no traffic uses the Local policy;
    /// `Some([])` if it does but this node has no usable endpoint (drop, or reject when
    /// `!has_any_endpoints`).
    pub local: Option<Vec<usize>>,
    /// Union of `cluster` and `local`: every backend that must be programmed.
    pub all: Vec<usize>,
    /// Some usable endpoint exists somewhere in the cluster. When false, traffic is
    /// rejected (ICMP unreachable / TCP reset; `ECONNREFUSED` at `connect()`); when true
    /// but the relevant set is empty, traffic is dropped.
    pub has_any_endpoints: bool,
}

impl Categorized {
    /// The backends of traffic originating inside the cluster (ClusterIP).
    pub fn internal(&self, p: &Policy) -> &[usize] {
        let set = if p.internal_local {
            &self.local
        } else {
            &self.cluster
        };
        set.as_deref().unwrap_or(&[])
    }

    /// The backends of traffic arriving from outside the cluster (node port, LoadBalancer
    /// address, external IP).
    pub fn external(&self, p: &Policy) -> &[usize] {
        let set = if p.external_policy_local() {
            &self.local
        } else {
            &self.cluster
        };
        set.as_deref().unwrap_or(&[])
    }
}

/// Kubernetes' topology annotation values that enable hints (`service.kubernetes.io/topology-mode`,
/// formerly `topology-aware-hints`): exactly `auto` or `Auto`.
pub fn hints_annotation_enabled(value: &str) -> bool {
    value == "auto" || value == "Auto"
}

/// kldnet's backend `state` as EndpointSlice conditions: `(ready, serving, terminating)`.
///
/// `terminating` is serving-while-terminating: it gets no new connections unless no ready
/// backend exists (kube-proxy's fallback). `maintenance` is never chosen.
pub fn from_state(state: BackendState) -> (bool, bool, bool) {
    match state {
        BackendState::Active => (true, true, false),
        BackendState::Terminating => (false, true, true),
        BackendState::Maintenance => (false, false, true),
    }
}

fn serving_terminating(c: &Candidate) -> bool {
    c.serving && c.terminating
}

fn indexes(cands: &[Candidate], keep: impl Fn(&Candidate) -> bool) -> Vec<usize> {
    (0..cands.len()).filter(|&i| keep(&cands[i])).collect()
}

/// Topology hints apply when requested, the node's zone is known, every ready endpoint has
/// a hint and at least one hint names this zone (kube-proxy `canUseTopology`).
fn use_topology<'a>(cands: &[Candidate], p: &'a Policy) -> Option<&'a str> {
    if !p.hints_auto {
        return None;
    }
    let zone = p.node_zone.as_deref().filter(|z| !z.is_empty())?;
    let mut zone_hinted = false;
    for c in cands.iter().filter(|c| c.ready) {
        match c.zones.as_deref() {
            None | Some([]) => return None,
            Some(zones) => zone_hinted |= zones.iter().any(|z| z == zone),
        }
    }
    zone_hinted.then_some(zone)
}

/// Splits a service port's endpoints into the sets each traffic policy uses.
pub fn categorize(cands: &[Candidate], p: &Policy) -> Categorized {
    let mut out = Categorized::default();
    let mut topology = None;

    if p.uses_cluster_endpoints() {
        topology = use_topology(cands, p);
        let mut cluster = indexes(cands, |c| {
            c.ready
                && topology
                    .is_none_or(|zone| c.zones.as_deref().unwrap_or(&[]).iter().any(|z| z == zone))
        });
        // No ready endpoint in the cluster: fall back to the terminating ones that still
        // serve, ignoring topology (best effort to not drop connections).
        if cluster.is_empty() {
            cluster = indexes(cands, serving_terminating);
        }
        out.has_any_endpoints = !cluster.is_empty();
        out.cluster = Some(cluster);
    }

    if !p.uses_local_endpoints() {
        out.all = out.cluster.clone().unwrap_or_default();
        return out;
    }

    let usable = |c: &Candidate| c.ready || serving_terminating(c);
    out.has_any_endpoints |= cands.iter().any(usable);
    let local_ready = cands.iter().any(|c| c.local && c.ready);
    let local_terminating = !local_ready && cands.iter().any(|c| c.local && usable(c));
    let local = if local_ready {
        indexes(cands, |c| c.local && c.ready)
    } else if local_terminating {
        indexes(cands, |c| c.local && serving_terminating(c))
    } else {
        Vec::new()
    };

    out.all = match &out.cluster {
        None => local.clone(),
        // Every ready endpoint is in `cluster`, and `local` holds only ready ones.
        Some(cluster) if topology.is_none() && !local_terminating => cluster.clone(),
        // `local` may hold terminating or other-zone endpoints that `cluster` lacks.
        Some(cluster) => {
            let mut all: Vec<usize> = cluster.iter().chain(&local).copied().collect();
            all.sort_unstable();
            all.dedup();
            all
        }
    };
    out.local = Some(local);
    out
}
