// SPDX-License-Identifier: Apache-2.0
//! The configuration language's sections, field by field (`CONTRACT.md` §2).
//!
//! Every struct denies unknown fields; defaults are written next to the field. Values are
//! typed (addresses, CIDRs, durations…) so a wrong value is reported where it stands.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::selector::Selector;
use crate::types::{Bandwidth, Cidr, Duration, Labels, Protocol};

fn default_namespace() -> String {
    "default".to_string()
}
fn yes() -> bool {
    true
}

/// `[node]`: this host.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Default: the host name.
    pub name: Option<String>,
    /// Underlay address peers reach this node on.
    pub address: Option<IpAddr>,
    #[serde(default)]
    pub endpoint_cidrs: Vec<Cidr>,
    #[serde(default)]
    pub cluster_cidrs: Vec<Cidr>,
    /// Interfaces that carry north-south traffic (NodePort, LoadBalancer IPs).
    #[serde(default)]
    pub uplinks: Vec<String>,
    #[serde(default)]
    pub routing: Routing,
    /// Service translation at connect() for host processes and containers.
    #[serde(default = "yes")]
    pub socket_lb: bool,
    #[serde(default)]
    pub policy_enforcement: PolicyEnforcement,
    /// Slots of each Maglev lookup table (a prime, 251..=131071); default 16381. Applies
    /// to every `balancing = "maglev"` service; a change takes effect at daemon restart.
    pub maglev_table_size: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    #[default]
    Tunnel,
    Direct,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyEnforcement {
    /// Enforce on endpoints that a policy selects.
    #[default]
    Default,
    /// Default-deny for every endpoint, selected or not.
    Always,
    /// Never enforce.
    Never,
}

/// `[encryption]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    #[serde(default)]
    pub mode: EncryptionMode,
    #[serde(default = "default_wg_port")]
    pub listen_port: u16,
}

fn default_wg_port() -> u16 {
    51871
}

impl Default for Encryption {
    fn default() -> Self {
        Encryption {
            mode: EncryptionMode::None,
            listen_port: default_wg_port(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    #[default]
    None,
    Wireguard,
}

/// `[bandwidth]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthManager {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub bbr: bool,
}

impl Default for BandwidthManager {
    fn default() -> Self {
        BandwidthManager {
            enabled: true,
            bbr: false,
        }
    }
}

/// `[flows]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flows {
    /// Recent flows kept in memory.
    #[serde(default = "default_flow_buffer")]
    pub buffer: u32,
    /// Prometheus endpoint, `host:port`; `""` = off.
    #[serde(default = "default_metrics")]
    pub metrics: String,
    /// Web UI, `host:port`; `""` = off.
    #[serde(default = "default_ui")]
    pub ui: String,
}

fn default_flow_buffer() -> u32 {
    65536
}
fn default_metrics() -> String {
    "127.0.0.1:9965".into()
}
fn default_ui() -> String {
    "127.0.0.1:12000".into()
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            buffer: default_flow_buffer(),
            metrics: default_metrics(),
            ui: default_ui(),
        }
    }
}

/// `[[endpoint]]`: a workload (VM, container, pod, netns).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Default: this node. Endpoints of other nodes only feed the ipcache.
    pub node: Option<String>,
    /// Host-side tap/veth; default: found by route lookup of the address.
    pub interface: Option<String>,
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub ports: Vec<NamedPort>,
    pub egress_bandwidth: Option<Bandwidth>,
    pub ingress_bandwidth: Option<Bandwidth>,
}

/// A named container/VM port, referenced by policies and services.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// `[[namespace]]`: labels of a namespace, for namespace selectors.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

/// `[[identity]]`: pins a numeric identity to a label set.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPin {
    pub id: u32,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub labels: Labels,
}

/// `[[service]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// The virtual IPs.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Backends are the endpoints with these labels in the service's namespace.
    pub selector: Option<Selector>,
    /// Explicit backends (instead of a selector).
    #[serde(default)]
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub balancing: Balancing,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    pub affinity_timeout: Option<Duration>,
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    External,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// A number, or the name of an endpoint port. Default: `port`.
    pub target_port: Option<TargetPort>,
    #[serde(default)]
    pub protocol: Protocol,
    pub node_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub address: IpAddr,
    /// Default: the service port's target port.
    pub port: Option<u16>,
    #[serde(default = "default_weight")]
    pub weight: u16,
    #[serde(default)]
    pub state: BackendState,
    /// The node the backend runs on (for traffic policies `local`); default: the node of
    /// the endpoint with that address; an address no endpoint has is outside the cluster
    /// (never local).
    pub node: Option<String>,
}

fn default_weight() -> u16 {
    1
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Gets new connections.
    #[default]
    Active,
    /// No new connections; existing ones finish.
    Terminating,
    /// No new connections, and not used as a fallback.
    Maintenance,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balancing {
    #[default]
    Random,
    RoundRobin,
    Maglev,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// `[[policy]]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Endpoints the policy applies to (`{}` = every endpoint in the namespace).
    pub selector: Selector,
    pub policy_types: Option<Vec<Direction>>,
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    #[serde(default)]
    pub egress: Vec<EgressRule>,
    #[serde(default)]
    pub ingress_deny: Vec<IngressDenyRule>,
    #[serde(default)]
    pub egress_deny: Vec<EgressDenyRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    pub from: Option<Vec<Peer>>,
    #[serde(default)]
    pub ports: Vec<PortRule>,
    #[serde(default)]
    pub http: Vec<HttpRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    pub to: Option<Vec<Peer>>,
    #[serde(default)]
    pub ports: Vec<PortRule>,
    #[serde(default)]
    pub http: Vec<HttpRule>,
    #[serde(default)]
    pub dns: Vec<DnsRule>,
}

/// Deny rules have the shape of allow rules without L7 fields.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngressDenyRule {
    pub from: Option<Vec<Peer>>,
    #[serde(default)]
    pub ports: Vec<PortRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressDenyRule {
    pub to: Option<Vec<Peer>>,
    #[serde(default)]
    pub ports: Vec<PortRule>,
}

/// A policy peer: exactly one of selector/namespace_selector (alone or together), cidr
/// (with optional except), entity, fqdn, fqdn_pattern.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub selector: Option<Selector>,
    pub namespace_selector: Option<Selector>,
    pub cidr: Option<Cidr>,
    #[serde(default)]
    pub except: Vec<Cidr>,
    pub entity: Option<Entity>,
    pub fqdn: Option<String>,
    pub fqdn_pattern: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    Host,
    World,
    Cluster,
    RemoteNode,
    All,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortRule {
    pub port: Option<u16>,
    pub end_port: Option<u16>,
    /// A named port of the selected endpoints.
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    pub method: Option<String>,
    /// A regular expression matched against the whole path.
    pub path: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRule {
    pub match_name: Option<String>,
    pub match_pattern: Option<String>,
}

/// `[[peer]]`: another node.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerNode {
    pub name: String,
    pub address: IpAddr,
    #[serde(default)]
    pub endpoint_cidrs: Vec<Cidr>,
    pub wireguard_public_key: Option<String>,
}

/// `[bgp]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    #[serde(default)]
    pub neighbor: Vec<BgpNeighbor>,
    #[serde(default)]
    pub advertisement: Vec<BgpAdvertisement>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BgpNeighbor {
    pub address: IpAddr,
    pub asn: u32,
    #[serde(default = "default_bgp_port")]
    pub port: u16,
    pub hold_time: Option<Duration>,
}

fn default_bgp_port() -> u16 {
    179
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BgpAdvertisement {
    pub service_selector: Option<Selector>,
    #[serde(default)]
    pub endpoint_cidrs: bool,
}

/// `[[lb_pool]]`: addresses LoadBalancer services take their VIPs from.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LbPool {
    pub name: String,
    pub cidrs: Vec<Cidr>,
    pub service_selector: Option<Selector>,
}

/// `[[route]]`: HTTP routing for a service port.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub service: String,
    pub port: u16,
    #[serde(default)]
    pub rule: Vec<RouteRule>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<RouteBackend>,
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub path_regex: Option<String>,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteBackend {
    pub service: String,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    pub attempts: u32,
    #[serde(default)]
    pub on: Vec<String>,
}
