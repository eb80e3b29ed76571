// SPDX-License-Identifier: Apache-2.0
//! Rust mirror of `bpf/include/kldnet/abi.h`: map keys/values, event records,
//! names, flags and capacities shared with the BPF programs.
//!
//! Every struct has the C field names, `#[repr(C)]` and explicit padding;
//! `tests/layout.rs` checks size, alignment and every field offset against
//! the C header. Fields typed `u32`/`u16` that carry network-order data (marked
//! "network order") hold the big-endian bytes as stored in the packet: build
//! them with `u32::from(ip).to_be()` / `port.to_be()`.
//! Pad fields must be zero: hash and LPM keys compare every byte.

#![allow(clippy::doc_markdown)]

/// Version of this ABI; maps are pinned under `<bpf-root>/v{ABI_VERSION}/`.
pub const ABI_VERSION: u32 = 1;

// ---- map names (≤ 15 chars, the kernel truncates longer ones) -------------
/// Services: [`Lb4Key`] → [`Lb4Service`].
pub const MAP_LB4_SVC: &str = "kld_lb4_svc";
/// Backends: `u32` backend id → [`Lb4Backend`].
pub const MAP_LB4_BE: &str = "kld_lb4_be";
/// Reverse NAT: `u16` rev_nat_index → [`Lb4ReverseNat`].
pub const MAP_LB4_RNAT: &str = "kld_lb4_rnat";
/// Client-IP affinity: [`Lb4AffinityKey`] → [`Lb4AffinityValue`] (LRU).
pub const MAP_LB4_AFFIN: &str = "kld_lb4_affin";
/// Round-robin counters: array, `u32` rev_nat_index → `u32` counter.
pub const MAP_LB4_RR: &str = "kld_lb4_rr";
/// Maglev tables: hash of maps, `u32` rev_nat_index → inner array
/// (`u32` index → `u32` backend id, [`MAGLEV_INNER_FLAGS`], `KLD_MAGLEV_M` entries).
pub const MAP_LB4_MAGLEV: &str = "kld_lb4_maglev";
/// Socket LB reverse translation: [`SockRnatKey`] → [`SockRnatValue`] (LRU).
pub const MAP_SOCK_RNAT: &str = "kld_sock_rnat";
/// IP/CIDR → identity: LPM trie [`IpcacheKey`] → [`IpcacheValue`].
pub const MAP_IPCACHE: &str = "kld_ipcache";
/// Local endpoints: [`EndpointKey`] → [`EndpointInfo`].
pub const MAP_ENDPOINTS: &str = "kld_endpoints";
/// Policy: LPM trie [`PolicyKey`] → [`PolicyEntry`].
pub const MAP_POLICY: &str = "kld_policy";
/// Conntrack: [`Ct4Key`] → [`CtEntry`] (LRU).
pub const MAP_CT4: &str = "kld_ct4";
/// Ring buffer of [`FlowEvent`] records.
pub const MAP_EVENTS: &str = "kld_events";
/// Per-CPU [`MetricsKey`] → [`MetricsValue`].
pub const MAP_METRICS: &str = "kld_metrics";
/// Per-CPU array `u32` index (`CTR_*`) → `u64`.
pub const MAP_COUNTERS: &str = "kld_counters";
/// Per-CPU [`PolicyHitsKey`] → [`MetricsValue`]: verdicts per deciding rule.
pub const MAP_POLICY_HITS: &str = "kld_policy_hits";

/// Every pinned map, in abi.h order.
pub const MAP_NAMES: &[&str] = &[
    MAP_LB4_SVC,
    MAP_LB4_BE,
    MAP_LB4_RNAT,
    MAP_LB4_AFFIN,
    MAP_LB4_RR,
    MAP_LB4_MAGLEV,
    MAP_SOCK_RNAT,
    MAP_IPCACHE,
    MAP_ENDPOINTS,
    MAP_POLICY,
    MAP_CT4,
    MAP_EVENTS,
    MAP_METRICS,
    MAP_POLICY_HITS,
    MAP_COUNTERS,
];

// ---- capacities (max_entries; KLD_MAX_* in abi.h) ---------------------------
/// `kld_lb4_svc` max entries.
pub const MAX_LB4_SVC: u32 = 262_144;
/// `kld_lb4_be` max entries.
pub const MAX_LB4_BE: u32 = 131_072;
/// `kld_lb4_rnat` max entries.
pub const MAX_LB4_RNAT: u32 = 65_536;
/// `kld_sock_rnat` max entries.
pub const MAX_SOCK_RNAT: u32 = 262_144;
/// `kld_ipcache` max entries.
pub const MAX_IPCACHE: u32 = 65_536;
/// `kld_endpoints` max entries.
pub const MAX_ENDPOINTS: u32 = 65_536;
/// `kld_policy` max entries.
pub const MAX_POLICY: u32 = 131_072;
/// `kld_ct4` max entries.
pub const MAX_CT4: u32 = 262_144;
/// `kld_events` size in bytes (power of two, ≥ page size).
pub const EVENTS_BYTES: u32 = 1 << 20;
/// `kld_metrics` max entries.
pub const MAX_METRICS: u32 = 1024;
/// `kld_counters` slots.
pub const MAX_COUNTERS: u32 = 16;
/// `kld_policy_hits` max entries.
pub const MAX_POLICY_HITS: u32 = 16_384;
/// `kld_lb4_affin` max entries.
pub const MAX_LB4_AFFIN: u32 = 262_144;
/// `kld_lb4_maglev` (outer) max entries: services with a Maglev table.
pub const MAX_LB4_MAGLEV: u32 = 65_536;
/// Size of the `kld_lb4_maglev` inner template and default of [`KNOB_MAGLEV_M`].
pub const MAGLEV_M_DEFAULT: u32 = 16_381;
/// `map_flags` every inner Maglev array must be created with (`BPF_F_INNER_MAP`,
/// so its size may differ from the template's; the kernel requires equal flags).
pub const MAGLEV_INNER_FLAGS: u32 = 1 << 12;

// ---- load-time knobs (`volatile const` globals; set with override_global) --
/// `u32`, host order: identity of this node.
pub const KNOB_NODE_IDENTITY: &str = "KLD_NODE_IDENTITY";
/// `u32`: 0 disables flow events.
pub const KNOB_EVENTS_ENABLED: &str = "KLD_EVENTS_ENABLED";
/// `u32`, seconds: a flow is re-reported at most this often (default 5).
pub const KNOB_EVENT_INTERVAL_SEC: &str = "KLD_EVENT_INTERVAL_SEC";
/// `u32`, seconds: idle TCP conntrack lifetime (default 21600).
pub const KNOB_CT_LIFETIME_TCP_SEC: &str = "KLD_CT_LIFETIME_TCP_SEC";
/// `u32`, seconds: idle non-TCP conntrack lifetime (default 60).
pub const KNOB_CT_LIFETIME_NONTCP_SEC: &str = "KLD_CT_LIFETIME_NONTCP_SEC";
/// `u32`, seconds: conntrack lifetime after FIN/RST (default 10).
pub const KNOB_CT_CLOSE_TIMEOUT_SEC: &str = "KLD_CT_CLOSE_TIMEOUT_SEC";
/// `u32`: Maglev table size M (prime; default [`MAGLEV_M_DEFAULT`]); every inner
/// array of `kld_lb4_maglev` must have exactly M entries.
pub const KNOB_MAGLEV_M: &str = "KLD_MAGLEV_M";
/// `u32`, network order (`u32::from(ip).to_be()`): source address of hairpinned
/// flows (default 169.254.42.1).
pub const KNOB_HAIRPIN_IP: &str = "KLD_HAIRPIN_IP";
/// `u32`: 1 (default) = socket LB refuses a service without backends with
/// ECONNREFUSED (`bpf_set_retval`, Linux ≥ 5.18); 0 = EPERM.
pub const KNOB_SOCK_ECONNREFUSED: &str = "KLD_SOCK_ECONNREFUSED";
/// `u32`: 1 (default) = established flows keep their policy verdict in
/// conntrack until the policy set or peer identity changes; 0 = look the
/// policy up on every packet (benchmarks).
pub const KNOB_POLICY_VERDICT_CACHE: &str = "KLD_POLICY_VERDICT_CACHE";
/// Every knob, for loaders that set them all.
pub const KNOBS: &[&str] = &[
    KNOB_NODE_IDENTITY,
    KNOB_EVENTS_ENABLED,
    KNOB_EVENT_INTERVAL_SEC,
    KNOB_CT_LIFETIME_TCP_SEC,
    KNOB_CT_LIFETIME_NONTCP_SEC,
    KNOB_CT_CLOSE_TIMEOUT_SEC,
    KNOB_MAGLEV_M,
    KNOB_HAIRPIN_IP,
    KNOB_SOCK_ECONNREFUSED,
    KNOB_POLICY_VERDICT_CACHE,
];

// ---- well-known identities, families, directions --------------------------
/// No identity known.
pub const ID_UNKNOWN: u32 = 0;
/// The node itself.
pub const ID_HOST: u32 = 1;
/// Anything outside the cluster (default when no lookup matches).
pub const ID_WORLD: u32 = 2;
/// Reserved identity: a workload kldnet does not manage.
pub const ID_UNMANAGED: u32 = 3;
/// Reserved identity: another node of the cluster.
pub const ID_REMOTE_NODE: u32 = 6;
/// First identity of policy CIDRs (local scope): `ID_CIDR_BASE` + 24 bits
/// derived from the prefix.
pub const ID_CIDR_BASE: u32 = 1 << 24;
/// `family` value for IPv4 (not `AF_INET`).
pub const FAMILY_V4: u8 = 4;
/// `family` value for IPv6 (not `AF_INET6`).
pub const FAMILY_V6: u8 = 6;
/// Towards the endpoint / node.
pub const DIR_INGRESS: u8 = 0;
/// Away from the endpoint / node.
pub const DIR_EGRESS: u8 = 1;

// ---- services ---------------------------------------------------------------
/// [`Lb4Key::scope`]: reachable from anywhere.
pub const SCOPE_EXTERNAL: u8 = 0;
/// [`Lb4Key::scope`]: internal-traffic-policy view.
pub const SCOPE_INTERNAL: u8 = 1;
/// [`Lb4Service::flags`]: NodePort service.
pub const SVC_F_NODEPORT: u8 = 1 << 0;
/// [`Lb4Service::flags`]: external IP.
pub const SVC_F_EXTERNAL_IP: u8 = 1 << 1;
/// [`Lb4Service::flags`]: LoadBalancer IP.
pub const SVC_F_LOADBALANCER: u8 = 1 << 2;
/// [`Lb4Service::flags`]: externalTrafficPolicy=Local.
pub const SVC_F_LOCAL_ONLY: u8 = 1 << 3;
/// [`Lb4Service::flags`]: client-IP session affinity.
pub const SVC_F_AFFINITY: u8 = 1 << 4;
/// [`Lb4Service::flags`]: hostPort.
pub const SVC_F_HOSTPORT: u8 = 1 << 5;
/// [`Lb4Service::algorithm`]: random.
pub const LB_ALG_RANDOM: u8 = 1;
/// [`Lb4Service::algorithm`]: round robin.
pub const LB_ALG_ROUND_ROBIN: u8 = 2;
/// [`Lb4Service::algorithm`]: Maglev.
pub const LB_ALG_MAGLEV: u8 = 3;
/// [`Lb4Backend::state`]: serving.
pub const BE_ACTIVE: u8 = 0;
/// [`Lb4Backend::state`]: finishing existing flows only.
pub const BE_TERMINATING: u8 = 1;
/// [`Lb4Backend::state`]: out of rotation.
pub const BE_MAINTENANCE: u8 = 2;

// ---- ipcache / endpoints / policy ------------------------------------------
/// Bits of [`IpcacheKey`] before `addr` counted by `prefixlen` (family + pad).
pub const IPCACHE_PREFIX_BASE: u32 = 32;
/// [`IpcacheValue::flags`]: the address is another node.
pub const IPC_F_REMOTE_NODE: u8 = 1 << 0;
/// [`EndpointInfo::flags`]: enforce ingress policy.
pub const EP_F_INGRESS_ENFORCE: u32 = 1 << 0;
/// [`EndpointInfo::flags`]: enforce egress policy.
pub const EP_F_EGRESS_ENFORCE: u32 = 1 << 1;
/// [`EndpointInfo::flags`]: the node itself.
pub const EP_F_HOST: u32 = 1 << 2;
/// [`PolicyKey::prefixlen`] matching set + identity + direction (any proto/port).
pub const POLICY_PREFIX_MIN: u32 = 72;
/// [`PolicyKey::prefixlen`] matching up to proto (any port).
pub const POLICY_PREFIX_PROTO: u32 = 80;
/// [`PolicyKey::prefixlen`] matching the exact port.
pub const POLICY_PREFIX_FULL: u32 = 96;
/// [`PolicyEntry::action`]: allow.
pub const POLICY_ALLOW: u8 = 1;
/// [`PolicyEntry::action`]: deny (wins).
pub const POLICY_DENY: u8 = 2;
/// [`PolicyEntry::flags`]: report, do not enforce.
pub const POLICY_F_AUDIT: u8 = 1 << 0;

// ---- conntrack --------------------------------------------------------------
/// [`Ct4Key::flags`]: flow opened towards the endpoint (seen first by to_ep).
pub const CT_DIR_INGRESS: u8 = 0;
/// [`Ct4Key::flags`]: flow opened by the endpoint (seen first by from_ep).
pub const CT_DIR_EGRESS: u8 = 1;
/// [`Ct4Key::flags`]: per-packet LB entry: original tuple (client → frontend) →
/// [`CtEntry::backend_id`] / [`CtEntry::rev_nat_index`].
pub const CT_DIR_SERVICE: u8 = 2;
/// [`CtEntry::flags`]: a reply was seen.
pub const CT_F_SEEN_REPLY: u8 = 1 << 0;
/// [`CtEntry::flags`]: FIN or RST seen.
pub const CT_F_CLOSING: u8 = 1 << 1;
/// [`CtEntry::flags`]: flow translated at an uplink (NodePort / LB IP / external IP).
pub const CT_F_NORTH_SOUTH: u8 = 1 << 2;
/// [`CtEntry::flags`]: hairpin flow (backend is the client), source NATed to
/// [`KNOB_HAIRPIN_IP`].
pub const CT_F_HAIRPIN: u8 = 1 << 3;
/// [`CtEntry::flags`]: TCP entry opened by a non-SYN packet; packets in its reverse
/// direction are policy-checked like new ones (a cut flow cannot reopen itself).
pub const CT_F_MIDSTREAM: u8 = 1 << 4;
/// `skb->mark` of hairpin packets redirected back out of their interface;
/// `kld_to_ep` passes and clears it.
pub const MARK_HAIRPIN: u32 = 0x6b6c_0001;

// ---- events -----------------------------------------------------------------
/// Event type ([`FlowEvent::r#type`]): trace.
pub const EVENT_TRACE: u8 = 1;
/// Event type: drop.
pub const EVENT_DROP: u8 = 2;
/// Event type: policy verdict.
pub const EVENT_POLICY_VERDICT: u8 = 3;
/// Event type: socket LB translation.
pub const EVENT_SOCK_LB: u8 = 4;
/// Trace point (Hubble TRACE_TO_LXC): to an endpoint.
pub const TRACE_TO_EP: u8 = 0;
/// Trace point (Hubble TRACE_TO_STACK).
pub const TRACE_TO_STACK: u8 = 3;
/// Trace point (Hubble TRACE_FROM_LXC): from an endpoint.
pub const TRACE_FROM_EP: u8 = 5;
/// Trace point (Hubble TRACE_FROM_NETWORK).
pub const TRACE_FROM_NETWORK: u8 = 10;
/// Metrics reason: forwarded (not a drop).
pub const REASON_FORWARDED: u8 = 0;
/// Drop reason (Hubble 132, INVALID_SOURCE_IP): an endpoint sent from an address that
/// belongs to another endpoint, the node or a remote workload.
pub const DROP_INVALID_SOURCE: u8 = 132;
/// Drop reason (Hubble 133): policy denied (no allow rule).
pub const DROP_POLICY_DENIED: u8 = 133;
/// Drop reason (Hubble 134): invalid packet.
pub const DROP_INVALID: u8 = 134;
/// Drop reason (Hubble 158): service without backend.
pub const DROP_NO_SERVICE: u8 = 158;
/// Drop reason (Hubble 181): explicit deny rule.
pub const DROP_POLICY_DENY: u8 = 181;
/// [`FlowEvent::flags`]: reply direction.
pub const EVF_REPLY: u32 = 1 << 0;
/// [`FlowEvent::flags`]: first packet of a conntrack entry.
pub const EVF_NEW_FLOW: u32 = 1 << 1;
/// [`FlowEvent::flags`]: non-first IPv4 fragment, ports unknown.
pub const EVF_FRAGMENT: u32 = 1 << 2;

// ---- counters (kld_counters indexes) ----------------------------------------
/// Ring buffer reserve failed (event lost).
pub const CTR_EVENTS_LOST: u32 = 0;
/// kld_ct4 refused a new entry.
pub const CTR_CT_CREATE_FAIL: u32 = 1;
/// Socket LB: slot or backend missing (mid-update); address left untouched.
pub const CTR_SOCK_LB_MISS: u32 = 2;
/// Socket LB: service without active backends; syscall refused (ECONNREFUSED).
pub const CTR_SOCK_LB_NO_BE: u32 = 3;
/// Socket LB: kld_sock_rnat update failed.
pub const CTR_SOCK_RNAT_FAIL: u32 = 4;
/// tc: truncated or malformed header.
pub const CTR_PARSE_ERROR: u32 = 5;
/// kld_metrics full.
pub const CTR_METRICS_FAIL: u32 = 6;
/// tc: new flow translated to a backend.
pub const CTR_LB_NEW_FLOW: u32 = 7;
/// tc: packets DNATed to a backend.
pub const CTR_LB_XLATE: u32 = 8;
/// tc: packets reverse-NATed to the frontend.
pub const CTR_LB_RNAT: u32 = 9;
/// tc: packets dropped, service without active backend.
pub const CTR_LB_NO_BE: u32 = 10;
/// tc: slot or backend missing (mid-update); packet passed untranslated.
pub const CTR_LB_MISS: u32 = 11;
/// tc: a rewrite helper failed; packet dropped.
pub const CTR_NAT_FAIL: u32 = 12;
/// tc: reply of a translated flow whose `kld_lb4_rnat` entry is gone.
pub const CTR_LB_RNAT_MISS: u32 = 13;
/// Number of counters in use.
pub const CTR_COUNT: u32 = 14;

macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        // SAFETY: each type is #[repr(C)], made only of integers and integer
        // arrays, with explicit padding (checked by tests/layout.rs), so every
        // bit pattern is valid and there are no uninitialised bytes.
        $(unsafe impl aya::Pod for $t {})*
    };
}

/// `kld_lb4_svc` key: one service master entry (`backend_slot` 0) or slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb4Key {
    /// Network order: service VIP.
    pub address: u32,
    /// Network order: service port.
    pub dport: u16,
    /// `IPPROTO_*`.
    pub proto: u8,
    /// [`SCOPE_EXTERNAL`] or [`SCOPE_INTERNAL`].
    pub scope: u8,
    /// Host order: 0 = master entry, 1..=count active, count+1..=total terminating.
    pub backend_slot: u16,
    /// Zero.
    pub pad: [u8; 2],
}

/// `kld_lb4_svc` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb4Service {
    /// Host order: slot entry: backend id in `kld_lb4_be`; master: 0.
    pub backend_id: u32,
    /// Host order: master: number of active backends.
    pub count: u16,
    /// Host order: key into `kld_lb4_rnat`, 0 = none.
    pub rev_nat_index: u16,
    /// `SVC_F_*` bit set.
    pub flags: u8,
    /// `LB_ALG_*` (master only).
    pub algorithm: u8,
    /// Host order: master: active + terminating slots.
    pub total: u16,
    /// Host order: seconds, 0 = no affinity.
    pub affinity_timeout_sec: u32,
}

/// `kld_lb4_be` value (key: `u32` backend id, host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb4Backend {
    /// Network order: backend address.
    pub address: u32,
    /// Network order: backend port.
    pub port: u16,
    /// `IPPROTO_*`.
    pub proto: u8,
    /// `BE_*`.
    pub state: u8,
}

/// `kld_lb4_affin` key: one client of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb4AffinityKey {
    /// Network order: client address (0 for socket LB: per node).
    pub client: u32,
    /// Host order: the service's rev_nat_index.
    pub rev_nat_index: u16,
    /// Zero.
    pub pad: [u8; 2],
}

/// `kld_lb4_affin` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb4AffinityValue {
    /// Host order: `CLOCK_MONOTONIC` ns of the last selection (bpf_ktime_get_ns).
    pub last_used_ns: u64,
    /// Host order: backend id in `kld_lb4_be`.
    pub backend_id: u32,
    /// Zero.
    pub pad: [u8; 4],
}

/// `kld_lb4_rnat` value (key: `u16` rev_nat_index, host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb4ReverseNat {
    /// Network order: VIP replies appear to come from.
    pub address: u32,
    /// Network order: service port.
    pub port: u16,
    /// Zero.
    pub pad: [u8; 2],
}

/// `kld_sock_rnat` key: one socket talking to one backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockRnatKey {
    /// Host order: socket cookie (`SO_COOKIE`).
    pub cookie: u64,
    /// Network order: backend address.
    pub address: u32,
    /// Network order: backend port.
    pub port: u16,
    /// Zero.
    pub pad: [u8; 2],
}

/// `kld_sock_rnat` value: what recvmsg/getpeername report instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockRnatValue {
    /// Network order: service VIP.
    pub address: u32,
    /// Network order: service port.
    pub port: u16,
    /// Host order: the service's rev_nat_index.
    pub rev_nat_index: u16,
}

/// `kld_ipcache` key (LPM trie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpcacheKey {
    /// Host order: bits after this field = [`IPCACHE_PREFIX_BASE`] + address prefix.
    pub prefixlen: u32,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// Network order; IPv4 in the first 4 bytes, rest zero.
    pub addr: [u8; 16],
}

impl IpcacheKey {
    /// Key for an IPv4 CIDR (`prefix` ≤ 32; host bits are kept as given).
    pub fn v4(addr: std::net::Ipv4Addr, prefix: u8) -> Self {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr.octets());
        Self {
            prefixlen: IPCACHE_PREFIX_BASE + u32::from(prefix.min(32)),
            family: FAMILY_V4,
            pad: [0; 3],
            addr: a,
        }
    }

    /// The bytes after `prefixlen`, for `aya::maps::LpmTrie<_, [u8; 20], IpcacheValue>`
    /// with `Key::new(key.prefixlen, key.lpm_data())` (aya's `Key` carries the prefix).
    pub fn lpm_data(&self) -> [u8; 20] {
        let mut d = [0u8; 20];
        d[0] = self.family;
        d[1..4].copy_from_slice(&self.pad);
        d[4..].copy_from_slice(&self.addr);
        d
    }
}

/// `kld_ipcache` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpcacheValue {
    /// Host order: security identity.
    pub identity: u32,
    /// Network order: node to tunnel to, 0 = none.
    pub tunnel_endpoint: u32,
    /// `IPC_F_*`.
    pub flags: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// `kld_endpoints` key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// Network order; IPv4 in the first 4 bytes, rest zero.
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
}

impl EndpointKey {
    /// Key for a local IPv4 endpoint.
    pub fn v4(addr: std::net::Ipv4Addr) -> Self {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr.octets());
        Self {
            addr: a,
            family: FAMILY_V4,
            pad: [0; 3],
        }
    }
}

/// `kld_endpoints` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointInfo {
    /// Host order: host-side interface index of the endpoint.
    pub ifindex: u32,
    /// Host order: security identity.
    pub identity: u32,
    /// Host order: compiled policy set id, 0 = none.
    pub policy_set: u32,
    /// Host order: `EP_F_*`.
    pub flags: u32,
}

/// `kld_policy` key (LPM trie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// Host order: bits after this field, [`POLICY_PREFIX_MIN`]..=[`POLICY_PREFIX_FULL`].
    pub prefixlen: u32,
    /// Host order: [`EndpointInfo::policy_set`].
    pub policy_set: u32,
    /// Host order: peer identity, 0 = any (looked up second).
    pub identity: u32,
    /// `DIR_*`.
    pub direction: u8,
    /// `IPPROTO_*`, 0 = any.
    pub proto: u8,
    /// Network order: destination port.
    pub dport: u16,
}

impl PolicyKey {
    /// The bytes after `prefixlen` (in memory order), for
    /// `aya::maps::LpmTrie<_, [u8; 12], PolicyEntry>`.
    pub fn lpm_data(&self) -> [u8; 12] {
        let mut d = [0u8; 12];
        d[0..4].copy_from_slice(&self.policy_set.to_ne_bytes());
        d[4..8].copy_from_slice(&self.identity.to_ne_bytes());
        d[8] = self.direction;
        d[9] = self.proto;
        d[10..12].copy_from_slice(&self.dport.to_ne_bytes());
        d
    }
}

/// `kld_policy` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyEntry {
    /// Host order: rule id reported in events.
    pub rule_id: u32,
    /// [`POLICY_ALLOW`] or [`POLICY_DENY`].
    pub action: u8,
    /// `POLICY_F_*`.
    pub flags: u8,
    /// Host order: L7 proxy port, 0 = none.
    pub proxy_port: u16,
}

/// `kld_ct4` key: tuple of the flow's first packet + owning hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ct4Key {
    /// Network order: original-direction source.
    pub saddr: u32,
    /// Network order: original-direction destination.
    pub daddr: u32,
    /// Network order (ICMP echo: 0).
    pub sport: u16,
    /// Network order (ICMP echo: echo id).
    pub dport: u16,
    /// `IPPROTO_*`.
    pub proto: u8,
    /// `CT_DIR_*`.
    pub flags: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `kld_ct4` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtEntry {
    /// Host order: `CLOCK_MONOTONIC` ns deadline (bpf_ktime_get_ns).
    pub expires_ns: u64,
    /// Host order: `CLOCK_MONOTONIC` ns of the last flow event.
    pub last_report_ns: u64,
    /// Host order: chosen backend, 0 = no LB.
    pub backend_id: u32,
    /// Host order: identity of the original source.
    pub src_identity: u32,
    /// Host order: 0 = no reverse NAT.
    pub rev_nat_index: u16,
    /// OR of TCP flags seen in the original direction.
    pub tx_tcp_flags: u8,
    /// OR of TCP flags seen in the reply direction.
    pub rx_tcp_flags: u8,
    /// `CT_F_*`.
    pub flags: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// Host order: policy set the cached verdict was made with, 0 = none.
    pub policy_set: u32,
    /// Host order: peer identity the cached verdict was made for.
    pub policy_peer: u32,
}

/// `kld_events` ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowEvent {
    /// Host order: `CLOCK_MONOTONIC` ns (bpf_ktime_get_ns).
    pub timestamp_ns: u64,
    /// Host order: interface the program ran on.
    pub ifindex: u32,
    /// Host order.
    pub src_identity: u32,
    /// Host order.
    pub dst_identity: u32,
    /// Host order: policy rule, 0 = none.
    pub rule_id: u32,
    /// `EVENT_*` (C name `type`).
    pub r#type: u8,
    /// Drop reason (`DROP_*`) or trace point (`TRACE_*`).
    pub reason: u8,
    /// `DIR_*`.
    pub direction: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// `IPPROTO_*`.
    pub proto: u8,
    /// TCP flags of this packet.
    pub tcp_flags: u8,
    /// Host order: 0 = none.
    pub rev_nat_index: u16,
    /// Network order; IPv4 in the first 4 bytes.
    pub src_addr: [u8; 16],
    /// Network order; IPv4 in the first 4 bytes.
    pub dst_addr: [u8; 16],
    /// Network order.
    pub src_port: u16,
    /// Network order.
    pub dst_port: u16,
    /// Host order: bytes (skb->len).
    pub pkt_len: u32,
    /// Host order: `EVF_*`.
    pub flags: u32,
    /// Zero; keeps the size a multiple of 8.
    pub pad: [u8; 4],
}

impl FlowEvent {
    /// Decode a ring buffer record (`None` if it is too short).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: FlowEvent is Pod (any bit pattern valid) and `b` holds at
        // least size_of::<Self>() bytes; read_unaligned copes with alignment.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Self>()) })
    }
}

/// `kld_metrics` key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricsKey {
    /// [`REASON_FORWARDED`] or `DROP_*`.
    pub reason: u8,
    /// `DIR_*`.
    pub direction: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `kld_policy_hits` key: verdicts per deciding rule (values: [`MetricsValue`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyHitsKey {
    /// Host order: [`PolicyEntry::rule_id`], 0 = no rule (default deny).
    pub rule_id: u32,
    /// `DIR_*`.
    pub direction: u8,
    /// [`REASON_FORWARDED`] (allowed) or `DROP_POLICY_*`.
    pub reason: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// `kld_metrics` value (one per CPU; sum them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricsValue {
    /// Host order: packets.
    pub packets: u64,
    /// Host order: bytes (skb->len).
    pub bytes: u64,
}

pod!(
    Lb4Key,
    Lb4Service,
    Lb4Backend,
    Lb4ReverseNat,
    Lb4AffinityKey,
    Lb4AffinityValue,
    SockRnatKey,
    SockRnatValue,
    IpcacheKey,
    IpcacheValue,
    EndpointKey,
    EndpointInfo,
    PolicyKey,
    PolicyEntry,
    Ct4Key,
    CtEntry,
    FlowEvent,
    MetricsKey,
    MetricsValue,
    PolicyHitsKey,
);
