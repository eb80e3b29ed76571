// SPDX-License-Identifier: Apache-2.0
//! The Kubernetes objects the adapter reads: core kinds from `k8s-openapi`, Cilium kinds as
//! lenient serde structs that keep every field they do not model in `other`, so a field the
//! translation cannot express is reported instead of silently ignored.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Names one object in reports: `Kind/namespace/name` (cluster-scoped: `Kind/name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// A label selector as both Kubernetes and Cilium write it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSel {
    #[serde(default, deserialize_with = "scalar_map")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default, deserialize_with = "scalar_list")]
    pub values: Vec<String>,
}

impl From<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> for LabelSel {
    fn from(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> LabelSel {
        LabelSel {
            match_labels: s.match_labels.clone().unwrap_or_default(),
            match_expressions: s
                .match_expressions
                .iter()
                .flatten()
                .map(|e| Requirement {
                    key: e.key.clone(),
                    operator: e.operator.clone(),
                    values: e.values.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// YAML writes `version: 2` or `enabled: true` unquoted; labels are strings all the same.
fn scalar_string(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(format!("expected a string, found {other}")),
    }
}

fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let m = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    m.into_iter()
        .map(|(k, v)| Ok((k, scalar_string(v).map_err(serde::de::Error::custom)?)))
        .collect()
}

fn scalar_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let l = Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default();
    l.into_iter()
        .map(|v| scalar_string(v).map_err(serde::de::Error::custom))
        .collect()
}

fn opt_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => scalar_string(v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Standard object metadata, for the kinds modelled here.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub labels: BTreeMap<String, String>,
    pub resource_version: Option<String>,
}

/// CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (`cilium.io/v2`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CiliumPolicy {
    #[serde(default)]
    pub metadata: Meta,
    pub spec: Option<CiliumRuleSpec>,
    #[serde(default)]
    pub specs: Vec<CiliumRuleSpec>,
}

/// One Cilium policy rule (`spec` or an element of `specs`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumRuleSpec {
    pub endpoint_selector: Option<LabelSel>,
    pub node_selector: Option<LabelSel>,
    #[serde(default)]
    pub ingress: Option<Vec<CiliumRule>>,
    #[serde(default)]
    pub ingress_deny: Option<Vec<CiliumRule>>,
    #[serde(default)]
    pub egress: Option<Vec<CiliumRule>>,
    #[serde(default)]
    pub egress_deny: Option<Vec<CiliumRule>>,
    pub enable_default_deny: Option<DefaultDeny>,
    pub description: Option<String>,
    /// Rule labels (metadata for `cilium policy get`); nothing to enforce.
    pub labels: Option<Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct DefaultDeny {
    pub ingress: Option<bool>,
    pub egress: Option<bool>,
}

/// An ingress or egress rule of a Cilium policy (allow or deny).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumRule {
    pub from_endpoints: Option<Vec<LabelSel>>,
    pub to_endpoints: Option<Vec<LabelSel>>,
    #[serde(rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[serde(rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    pub from_entities: Option<Vec<String>>,
    pub to_entities: Option<Vec<String>>,
    #[serde(rename = "toFQDNs")]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    pub to_ports: Option<Vec<PortRule>>,
    pub icmps: Option<Vec<IcmpRule>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CidrRule {
    pub cidr: Option<String>,
    #[serde(default)]
    pub except: Vec<String>,
    pub cidr_group_ref: Option<String>,
    pub cidr_group_selector: Option<LabelSel>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FqdnSelector {
    pub match_name: Option<String>,
    pub match_pattern: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    #[serde(default)]
    pub ports: Vec<PortProtocol>,
    pub rules: Option<L7Rules>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortProtocol {
    #[serde(default, deserialize_with = "opt_scalar")]
    pub port: Option<String>,
    pub end_port: Option<i64>,
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L7Rules {
    pub http: Option<Vec<HttpRule>>,
    pub dns: Option<Vec<FqdnSelector>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct IcmpRule {
    #[serde(default)]
    pub fields: Vec<Value>,
}

/// CiliumCIDRGroup: named CIDR lists that policies reference by name or label.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CidrGroup {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: CidrGroupSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CidrGroupSpec {
    #[serde(default, rename = "externalCIDRs")]
    pub external_cidrs: Vec<String>,
}

/// CiliumLoadBalancerIPPool.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct LbIpPool {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: LbIpPoolSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LbIpPoolSpec {
    #[serde(default)]
    pub blocks: Vec<LbBlock>,
    /// The older name of `blocks`.
    #[serde(default)]
    pub cidrs: Vec<LbBlock>,
    pub service_selector: Option<LabelSel>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct LbBlock {
    pub cidr: Option<String>,
    pub start: Option<String>,
    pub stop: Option<String>,
}

/// CiliumBGPPeeringPolicy (`cilium.io/v2alpha1`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct BgpPeeringPolicy {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: BgpPeeringSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeeringSpec {
    pub node_selector: Option<LabelSel>,
    #[serde(default)]
    pub virtual_routers: Vec<VirtualRouter>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualRouter {
    #[serde(rename = "localASN")]
    pub local_asn: Option<i64>,
    #[serde(default, rename = "exportPodCIDR")]
    pub export_pod_cidr: bool,
    pub service_selector: Option<LabelSel>,
    #[serde(default)]
    pub service_advertisements: Vec<String>,
    #[serde(default)]
    pub neighbors: Vec<BgpNeighbor>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpNeighbor {
    pub peer_address: Option<String>,
    #[serde(rename = "peerASN")]
    pub peer_asn: Option<i64>,
    pub peer_port: Option<i64>,
    pub hold_time_seconds: Option<i64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Every object the adapter knows, parsed.
// Held once per object in a Vec for one translation; boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    NetworkPolicy(NetworkPolicy),
    Node(Node),
    Cnp(CiliumPolicy),
    Ccnp(CiliumPolicy),
    CidrGroup(CidrGroup),
    LbPool(LbIpPool),
    BgpPeering(BgpPeeringPolicy),
    /// A kind kldnet has no equivalent for; `network` says whether it is a networking
    /// kind (reported as skipped) or not (reported as ignored).
    Other {
        obj: ObjRef,
        network: bool,
    },
}

/// Kinds outside kldnet's scope that shape traffic: skipping them changes behaviour, so they
/// are reported as skipped (not merely ignored).
const NETWORK_KINDS: &[&str] = &[
    "CiliumEgressGatewayPolicy",
    "CiliumLocalRedirectPolicy",
    "CiliumClusterwideEnvoyConfig",
    "CiliumEnvoyConfig",
    "ClusterNetworkPolicy",
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "CiliumBGPClusterConfig",
    "CiliumBGPPeerConfig",
    "CiliumBGPAdvertisement",
    "CiliumBGPNodeConfigOverride",
    "Gateway",
    "GatewayClass",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
    "ReferenceGrant",
    "Ingress",
    "IngressClass",
    "Endpoints",
    "CiliumNodeConfig",
    "CiliumL2AnnouncementPolicy",
];

impl Object {
    /// Parses one object from its JSON form (as the API server sends it, or converted from
    /// YAML). `default_namespace` fills in namespaced objects that name none (as kubectl does).
    pub fn from_json(mut v: Value, default_namespace: &str) -> Result<Object, String> {
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("no `kind`")?
            .to_string();
        let api = v
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or("no `apiVersion`")?
            .to_string();
        let group = api.rsplit_once('/').map_or("", |(g, _)| g).to_string();
        let namespaced = !matches!(
            kind.as_str(),
            "Namespace"
                | "Node"
                | "CiliumClusterwideNetworkPolicy"
                | "CiliumCIDRGroup"
                | "CiliumLoadBalancerIPPool"
                | "CiliumBGPPeeringPolicy"
                | "ClusterNetworkPolicy"
                | "AdminNetworkPolicy"
                | "BaselineAdminNetworkPolicy"
                | "GatewayClass"
                | "IngressClass"
                | "CiliumEgressGatewayPolicy"
                | "CiliumClusterwideEnvoyConfig"
                | "CiliumBGPClusterConfig"
                | "CiliumBGPPeerConfig"
                | "CiliumBGPAdvertisement"
                | "CiliumBGPNodeConfigOverride"
                | "CiliumL2AnnouncementPolicy"
                | "CiliumNodeConfig"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "CustomResourceDefinition"
                | "PersistentVolume"
                | "StorageClass"
        );
        if namespaced
            && let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut)
            && !meta.contains_key("namespace")
        {
            meta.insert("namespace".into(), Value::String(default_namespace.into()));
        }
        let err = |e: serde_json::Error| format!("{kind}: {e}");
        Ok(match (group.as_str(), kind.as_str()) {
            ("", "Namespace") => Object::Namespace(serde_json::from_value(v).map_err(err)?),
            ("", "Pod") => Object::Pod(serde_json::from_value(v).map_err(err)?),
            ("", "Service") => Object::Service(serde_json::from_value(v).map_err(err)?),
            ("", "Node") => Object::Node(serde_json::from_value(v).map_err(err)?),
            ("discovery.k8s.io", "EndpointSlice") => {
                Object::EndpointSlice(serde_json::from_value(v).map_err(err)?)
            }
            ("networking.k8s.io", "NetworkPolicy") => {
                Object::NetworkPolicy(serde_json::from_value(v).map_err(err)?)
            }
            ("cilium.io", "CiliumNetworkPolicy") => {
                Object::Cnp(serde_json::from_value(v).map_err(err)?)
            }
            ("cilium.io", "CiliumClusterwideNetworkPolicy") => {
                Object::Ccnp(serde_json::from_value(v).map_err(err)?)
            }
            ("cilium.io", "CiliumCIDRGroup") => {
                Object::CidrGroup(serde_json::from_value(v).map_err(err)?)
            }
            ("cilium.io", "CiliumLoadBalancerIPPool") => {
                Object::LbPool(serde_json::from_value(v).map_err(err)?)
            }
            ("cilium.io", "CiliumBGPPeeringPolicy") => {
                Object::BgpPeering(serde_json::from_value(v).map_err(err)?)
            }
            _ => {
                let meta = v.get("metadata");
                let s = |k: &str| {
                    meta.and_then(|m| m.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                Object::Other {
                    obj: ObjRef {
                        kind: kind.clone(),
                        namespace: if namespaced { s("namespace") } else { None },
                        name: s("name").unwrap_or_default(),
                    },
                    network: NETWORK_KINDS.contains(&kind.as_str())
                        || group.ends_with("cilium.io")
                        || group.contains("networking"),
                }
            }
        })
    }

    /// The object's reference for reports.
    pub fn obj_ref(&self) -> ObjRef {
        fn k8s(
            kind: &str,
            m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        ) -> ObjRef {
            ObjRef {
                kind: kind.into(),
                namespace: m.namespace.clone(),
                name: m.name.clone().unwrap_or_default(),
            }
        }
        fn own(kind: &str, m: &Meta) -> ObjRef {
            ObjRef {
                kind: kind.into(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
            }
        }
        match self {
            Object::Namespace(o) => k8s("Namespace", &o.metadata),
            Object::Pod(o) => k8s("Pod", &o.metadata),
            Object::Service(o) => k8s("Service", &o.metadata),
            Object::EndpointSlice(o) => k8s("EndpointSlice", &o.metadata),
            Object::NetworkPolicy(o) => k8s("NetworkPolicy", &o.metadata),
            Object::Node(o) => k8s("Node", &o.metadata),
            Object::Cnp(o) => own("CiliumNetworkPolicy", &o.metadata),
            Object::Ccnp(o) => own("CiliumClusterwideNetworkPolicy", &o.metadata),
            Object::CidrGroup(o) => own("CiliumCIDRGroup", &o.metadata),
            Object::LbPool(o) => own("CiliumLoadBalancerIPPool", &o.metadata),
            Object::BgpPeering(o) => own("CiliumBGPPeeringPolicy", &o.metadata),
            Object::Other { obj, .. } => obj.clone(),
        }
    }
}
