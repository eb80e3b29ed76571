// SPDX-License-Identifier: Apache-2.0
//! Compile: `Spec` → the desired content of every BPF map. Pure and deterministic: the
//! same spec, environment and previous allocations always give the same maps.
//!
//! Numbers that must stay put across reloads (backend ids, reverse-NAT indexes) are
//! allocated against the previous [`Allocations`], so changing one service rewrites
//! only that service's entries.

mod alloc;
pub mod diff;
pub mod dump;
pub mod identity;
pub mod maglev;
mod network;
pub mod policy;
pub mod selection;
mod services;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kldnet_bpf::abi::*;
use kldnet_config::{Diagnostic, Spec};
use serde::{Deserialize, Serialize};

pub use alloc::Allocations;
pub use identity::{Identity, IdentitySource, IdentityTable};

/// Facts about the machine the compile needs (found by the datapath layer, faked in tests).
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// This node's name when `[node].name` is unset (the host name).
    pub hostname: String,
    /// Interface name → ifindex, in the daemon's network namespace.
    pub interfaces: BTreeMap<String, u32>,
    /// For endpoints without `interface`: the device the node routes each address to.
    pub routes: BTreeMap<IpAddr, String>,
    /// `kldnet check`: the interfaces are not this machine's to look at, so missing ones
    /// are not reported.
    pub offline: bool,
    /// Also build the human views of services ([`Compiled::services`]); the daemon's
    /// reloads skip them and build them when asked.
    pub views: bool,
}

/// Where a program is attached.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Attachment {
    /// tc ingress + egress of a workload's host-side interface.
    Endpoint { ifname: String, ifindex: u32 },
    /// tc ingress of an uplink (north-south traffic).
    Uplink { ifname: String, ifindex: u32 },
}

/// The desired content of every map, and the attachments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub lb4_services: BTreeMap<Lb4Key, Lb4Service>,
    pub lb4_backends: BTreeMap<u32, Lb4Backend>,
    pub lb4_rev_nat: BTreeMap<u16, Lb4ReverseNat>,
    pub ipcache: BTreeMap<IpcacheKey, IpcacheValue>,
    pub endpoints: BTreeMap<EndpointKey, EndpointInfo>,
    pub policy: BTreeMap<PolicyKey, PolicyEntry>,
    /// Maglev lookup table (backend ids) per reverse-NAT index of a maglev frontend.
    pub maglev: BTreeMap<u16, Vec<u32>>,
    pub attachments: BTreeSet<Attachment>,
}

impl DesiredState {
    /// Entries of a map the daemon writes; `None` for maps it does not own.
    pub fn entries_of(&self, map: &str) -> Option<usize> {
        Some(match map {
            MAP_LB4_SVC => self.lb4_services.len(),
            MAP_LB4_BE => self.lb4_backends.len(),
            MAP_LB4_RNAT => self.lb4_rev_nat.len(),
            MAP_IPCACHE => self.ipcache.len(),
            MAP_ENDPOINTS => self.endpoints.len(),
            MAP_POLICY => self.policy.len(),
            MAP_LB4_MAGLEV => self.maglev.len(),
            _ => return None,
        })
    }
}

/// A local or remote endpoint as compiled, for `kldnet endpoint list` and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub local: bool,
    pub identity: u32,
    pub addresses: Vec<IpAddr>,
    pub interface: Option<String>,
    pub ifindex: Option<u32>,
    pub labels: Vec<String>,
    /// Policy enforced on this node for traffic into / out of the endpoint (local ones).
    #[serde(default)]
    pub ingress_enforced: bool,
    #[serde(default)]
    pub egress_enforced: bool,
    /// `namespace/name` of the policies selecting it.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// A service as compiled, for `kldnet service list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub service_type: String,
    pub frontends: Vec<String>,
    pub backends: Vec<BackendView>,
    pub balancing: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub address: String,
    pub weight: u16,
    pub state: String,
}

/// Everything a compile produces.
#[derive(Clone, Debug, Default)]
pub struct Compiled {
    pub state: DesiredState,
    pub alloc: Allocations,
    pub identities: IdentityTable,
    pub endpoints: Vec<EndpointView>,
    pub services: Vec<ServiceView>,
    /// Rule names, policy sets and identity names behind the policy entries.
    pub policy: policy::PolicyInfo,
    /// Warnings (e.g. an interface that does not exist yet) and errors (capacity).
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == kldnet_config::Severity::Error)
    }
}

/// Compiles a validated spec. `previous` keeps ids stable across reloads.
pub fn compile(spec: &Spec, env: &Environment, previous: &Allocations) -> Compiled {
    let identities = IdentityTable::build(spec);
    let mut out = Compiled {
        alloc: previous.clone(),
        identities,
        ..Compiled::default()
    };
    network::compile_network(spec, env, &mut out);
    policy::compile_policies(spec, &mut out);
    policy::annotate_endpoints(&mut out);
    services::compile_services(spec, env, &mut out);
    out.alloc.retain_used(&out.state);
    check_capacity(spec, &mut out);
    out
}

fn check_capacity(spec: &Spec, out: &mut Compiled) {
    let s = &out.state;
    let checks = [
        (
            MAP_LB4_SVC,
            s.lb4_services.len(),
            MAX_LB4_SVC,
            "services × ports × frontends × (backends + 1)",
        ),
        (
            MAP_LB4_BE,
            s.lb4_backends.len(),
            MAX_LB4_BE,
            "distinct backends",
        ),
        (
            MAP_LB4_RNAT,
            s.lb4_rev_nat.len(),
            MAX_LB4_RNAT,
            "service frontends",
        ),
        (
            MAP_IPCACHE,
            s.ipcache.len(),
            MAX_IPCACHE,
            "endpoint addresses and CIDRs",
        ),
        (
            MAP_ENDPOINTS,
            s.endpoints.len(),
            MAX_ENDPOINTS,
            "local endpoint addresses",
        ),
        (MAP_POLICY, s.policy.len(), MAX_POLICY, "policy entries"),
    ];
    for (map, used, cap, what) in checks {
        if used > cap as usize {
            let at = spec.files.first().map(|f| f.location(0));
            out.diagnostics.push(
                Diagnostic::error(at, format!("map {map} would need {used} entries ({what}); its capacity is {cap}"))
                    .with_help("split the configuration across nodes, or rebuild the BPF objects with a larger KLD_MAX_* (see bpf/include/kldnet/abi.h)"),
            );
        }
    }
}

/// IPv4 address as the network-order u32 the BPF side stores.
pub fn be32(addr: std::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// Port as the network-order u16 the BPF side stores.
pub fn be16(port: u16) -> u16 {
    port.to_be()
}

/// An address in the 16-byte form of the BPF keys (IPv4 in the first 4 bytes).
pub fn addr16(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 6),
    }
}
