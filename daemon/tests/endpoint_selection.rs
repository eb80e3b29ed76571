// SPDX-License-Identifier: Apache-2.0
//! Endpoint selection against kube-proxy's own test tables
//! (`shared/testdata/kube-proxy/{categorize_endpoints,packet_flows}.yaml`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use kldnet::compile::selection::{
    Candidate, Categorized, Policy, categorize, from_state, hints_annotation_enabled,
};
use kldnet_config::schema::BackendState;
use serde::Deserialize;
use serde::de::DeserializeOwned;

fn load<T: DeserializeOwned>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/kube-proxy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e}\nthe kube-proxy test tables live in shared/ beside the repository \
             (../shared/testdata/kube-proxy/); CI lays it out there",
            path.display()
        )
    });
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

type Set = BTreeSet<String>;

fn names(cands: &[Candidate], idx: &[usize]) -> Set {
    idx.iter()
        .map(|&i| SocketAddr::new(cands[i].addr, cands[i].port).to_string())
        .collect()
}

// ---- categorize_endpoints.yaml -------------------------------------------------------

#[derive(Debug, Deserialize)]
struct CategorizeFile {
    cases: Vec<CategorizeCase>,
}

#[derive(Debug, Deserialize)]
struct CategorizeCase {
    name: String,
    /// `false` = the case describes kube-proxy before ProxyTerminatingEndpoints went GA.
    pte: Option<bool>,
    node_zone: Option<String>,
    #[serde(default)]
    svc: Svc,
    eps: Vec<Ep>,
    cluster: Option<Vec<String>>,
    local: Option<Vec<String>>,
    all: Option<Vec<String>>,
    #[serde(default, rename = "onlyRemoteEndpoints")]
    only_remote_endpoints: bool,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct Svc {
    hints: Option<String>,
    #[serde(default)]
    itp_local: bool,
    #[serde(default)]
    etp_local: bool,
    #[serde(rename = "nodePort")]
    node_port: Option<u16>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "UPPERCASE")]
struct Ep {
    #[serde(rename = "ep")]
    ep: SocketAddr,
    r: Option<u8>,
    s: Option<u8>,
    t: Option<u8>,
    l: Option<u8>,
    #[serde(rename = "zones")]
    zones: Option<Vec<String>>,
}

#[derive(Debug, PartialEq)]
struct Expected {
    cluster: Option<Set>,
    local: Option<Set>,
    all: Set,
    has_any_endpoints: bool,
}

impl CategorizeCase {
    fn candidates(&self) -> Vec<Candidate> {
        self.eps
            .iter()
            .map(|e| {
                let ready = e.r == Some(1);
                Candidate {
                    addr: e.ep.ip(),
                    port: e.ep.port(),
                    local: e.l == Some(1),
                    ready,
                    // A ready endpoint is serving; the tables only spell S out when it differs.
                    serving: e.s.map_or(ready, |s| s == 1),
                    terminating: e.t == Some(1),
                    zones: e.zones.clone(),
                }
            })
            .collect()
    }

    fn policy(&self) -> Policy {
        Policy {
            internal_local: self.svc.itp_local,
            external_local: self.svc.etp_local,
            externally_accessible: self.svc.node_port.is_some_and(|p| p != 0),
            hints_auto: self
                .svc
                .hints
                .as_deref()
                .is_some_and(hints_annotation_enabled),
            node_zone: self.node_zone.clone(),
        }
    }

    fn expected(&self) -> Expected {
        let set = |v: &Option<Vec<String>>| v.as_ref().map(|v| v.iter().cloned().collect::<Set>());
        let (cluster, local) = (set(&self.cluster), set(&self.local));
        let all = match (set(&self.all), &cluster, &local) {
            (Some(all), _, _) => all,
            (None, c, None) => c.clone().unwrap_or_default(),
            (None, None, Some(l)) => l.clone(),
            (None, Some(_), Some(_)) => panic!("{}: both sets given but no `all`", self.name),
        };
        let has_any_endpoints = self.only_remote_endpoints || !all.is_empty();
        Expected {
            cluster,
            local,
            all,
            has_any_endpoints,
        }
    }
}

fn got(cands: &[Candidate], c: &Categorized) -> Expected {
    Expected {
        cluster: c.cluster.as_deref().map(|i| names(cands, i)),
        local: c.local.as_deref().map(|i| names(cands, i)),
        all: names(cands, &c.all),
        has_any_endpoints: c.has_any_endpoints,
    }
}

#[test]
fn categorize_endpoints_table() {
    let file: CategorizeFile = load("categorize_endpoints.yaml");
    let cases = &file.cases;
    let (mut checked, mut inverted, mut failures) = (0, Vec::new(), Vec::new());
    for case in cases {
        let cands = case.candidates();
        let got = got(&cands, &categorize(&cands, &case.policy()));
        let expected = if case.pte == Some(false) {
            // Old behaviour (terminating endpoints never used). Today's answer is the one
            // its ProxyTerminatingEndpoints-enabled twin (same service, same endpoints) gives.
            let Some(twin) = cases
                .iter()
                .find(|t| t.pte == Some(true) && t.svc == case.svc && t.eps == case.eps)
            else {
                println!(
                    "skipped (old behaviour, no PTE-enabled twin): {}",
                    case.name
                );
                continue;
            };
            let old = case.expected();
            if got == old {
                failures.push(format!(
                    "{}: old-behaviour case: got the pre-ProxyTerminatingEndpoints answer {old:?}",
                    case.name
                ));
            }
            inverted.push(format!("{} (now as {:?})", case.name, twin.name));
            twin.expected()
        } else {
            case.expected()
        };
        if got != expected {
            failures.push(format!(
                "{}:\n  expected: {expected:?}\n  got:      {got:?}",
                case.name
            ));
        }
        checked += 1;
    }
    for name in &inverted {
        println!("inverted (old behaviour, pte: false): {name}");
    }
    println!(
        "categorize_endpoints.yaml: {checked} of {} cases checked, {} of them old-behaviour cases inverted",
        cases.len(),
        inverted.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- packet_flows.yaml ---------------------------------------------------------------

const THIS_NODE: &str = "THIS";
const EXTERNAL_CLIENT: &str = "EXTERNAL_CLIENT";
const PORT: u16 = 80;

#[derive(Debug, Deserialize)]
struct FlowsFile {
    internal_traffic_policy: Vec<ItpCase>,
    terminating_endpoints_etp_local: TerminatingSection,
    no_endpoints_reject: Vec<Flow>,
}

#[derive(Debug, Deserialize)]
struct ItpCase {
    name: String,
    itp: String,
    endpoints: Vec<FlowEndpoint>,
    flows: Vec<Flow>,
}

#[derive(Debug, Deserialize)]
struct TerminatingSection {
    service: FlowService,
    cases: Vec<TerminatingCase>,
}

#[derive(Debug, Deserialize)]
struct FlowService {
    #[serde(rename = "clusterIP")]
    cluster_ip: IpAddr,
    #[serde(rename = "externalTrafficPolicy")]
    external_traffic_policy: String,
}

#[derive(Debug, Deserialize)]
struct TerminatingCase {
    name: String,
    endpoints: Vec<FlowEndpoint>,
    flows: Vec<Flow>,
}

#[derive(Debug, Deserialize)]
struct FlowEndpoint {
    ip: IpAddr,
    node: String,
    #[serde(default = "yes")]
    ready: bool,
    #[serde(default = "yes")]
    serving: bool,
    #[serde(default)]
    terminating: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct Flow {
    name: String,
    src: String,
    dst: String,
    output: String,
}

impl FlowEndpoint {
    fn candidate(&self) -> Candidate {
        Candidate {
            addr: self.ip,
            port: PORT,
            local: self.node == THIS_NODE,
            ready: self.ready,
            serving: self.serving,
            terminating: self.terminating,
            zones: None,
        }
    }
}

/// What kube-proxy does with a flow, in terms of [`categorize`]'s result.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// DNAT to one of these.
    To(Set),
    /// Endpoints exist, none usable for this flow.
    Drop,
    /// No endpoint at all.
    Reject,
}

fn parse_output(output: &str) -> Option<Verdict> {
    match output.trim() {
        "" => None,
        "DROP" => Some(Verdict::Drop),
        "REJECT" => Some(Verdict::Reject),
        list => Some(Verdict::To(
            list.split(',').map(|s| s.trim().to_string()).collect(),
        )),
    }
}

/// The verdict for one flow: external clients use the external policy's set, pods to the
/// ClusterIP the internal policy's; this node's pods to a node port / LB address are
/// short-circuited to the Cluster set, as kube-proxy does.
fn verdict(
    flow: &Flow,
    cluster_ip: IpAddr,
    cands: &[Candidate],
    p: &Policy,
    c: &Categorized,
) -> Verdict {
    if !c.has_any_endpoints {
        return Verdict::Reject;
    }
    let set = if flow.src == EXTERNAL_CLIENT {
        c.external(p)
    } else if flow.dst.parse::<IpAddr>().ok() == Some(cluster_ip) {
        c.internal(p)
    } else {
        c.cluster.as_deref().unwrap_or(&[])
    };
    if set.is_empty() {
        Verdict::Drop
    } else {
        Verdict::To(names(cands, set))
    }
}

struct Tally {
    checked: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, case: &str, flow: &Flow, got: Verdict) {
        let Some(expected) = parse_output(&flow.output) else {
            println!("skipped (not a service flow): {case} / {}", flow.name);
            return;
        };
        if got != expected {
            self.failures.push(format!(
                "{case} / {}:\n  expected: {expected:?}\n  got:      {got:?}",
                flow.name
            ));
        }
        self.checked += 1;
    }
}

#[test]
fn packet_flows_table() {
    let file: FlowsFile = load("packet_flows.yaml");
    let mut tally = Tally {
        checked: 0,
        failures: Vec::new(),
    };

    // TestInternalTrafficPolicy: a ClusterIP service 172.30.1.1:80.
    let cluster_ip: IpAddr = "172.30.1.1".parse().expect("ip");
    for case in &file.internal_traffic_policy {
        let cands: Vec<Candidate> = case.endpoints.iter().map(FlowEndpoint::candidate).collect();
        let p = Policy {
            internal_local: case.itp == "Local",
            ..Policy::default()
        };
        let c = categorize(&cands, &p);
        for flow in &case.flows {
            tally.check(&case.name, flow, verdict(flow, cluster_ip, &cands, &p, &c));
        }
        // Upstream then deletes the EndpointSlice: every flow is rejected.
        let empty = categorize(&[], &p);
        for flow in &case.flows {
            let got = verdict(flow, cluster_ip, &[], &p, &empty);
            if got != Verdict::Reject {
                tally.failures.push(format!(
                    "{} / {} (endpoints deleted):\n  expected: Reject\n  got:      {got:?}",
                    case.name, flow.name
                ));
            }
        }
    }

    // TestTerminatingEndpointsTrafficPolicyLocal: a LoadBalancer service.
    let section = &file.terminating_endpoints_etp_local;
    let p = Policy {
        external_local: section.service.external_traffic_policy == "Local",
        externally_accessible: true,
        ..Policy::default()
    };
    for case in &section.cases {
        let cands: Vec<Candidate> = case.endpoints.iter().map(FlowEndpoint::candidate).collect();
        let c = categorize(&cands, &p);
        for flow in &case.flows {
            tally.check(
                &case.name,
                flow,
                verdict(flow, section.service.cluster_ip, &cands, &p, &c),
            );
        }
    }

    // TestNoEndpointsReject: a LoadBalancer service with no endpoints.
    let p = Policy {
        externally_accessible: true,
        ..Policy::default()
    };
    let c = categorize(&[], &p);
    let cluster_ip: IpAddr = "172.30.0.41".parse().expect("ip");
    for flow in &file.no_endpoints_reject {
        tally.check("no endpoints", flow, verdict(flow, cluster_ip, &[], &p, &c));
    }

    println!("packet_flows.yaml: {} flows checked", tally.checked);
    assert!(tally.failures.is_empty(), "{}", tally.failures.join("\n"));
}

// ---- kldnet's own backend states -----------------------------------------------------

fn backend(n: u8, local: bool, state: BackendState) -> Candidate {
    let (ready, serving, terminating) = from_state(state);
    Candidate {
        addr: IpAddr::from([10, 244, 1, n]),
        port: 8080,
        local,
        ready,
        serving,
        terminating,
        zones: None,
    }
}

#[test]
fn backend_states() {
    use BackendState::*;
    assert_eq!(from_state(Active), (true, true, false));
    assert_eq!(from_state(Terminating), (false, true, true));
    assert_eq!(from_state(Maintenance), (false, false, true));

    let cluster = Policy::default();
    // Terminating backends get no new connections while an active one exists...
    let cands = [backend(1, false, Active), backend(2, false, Terminating)];
    assert_eq!(categorize(&cands, &cluster).cluster, Some(vec![0]));
    // ...and take them when none does (kube-proxy's fallback); maintenance never does.
    let cands = [
        backend(1, false, Maintenance),
        backend(2, false, Terminating),
        backend(3, true, Terminating),
    ];
    let c = categorize(&cands, &cluster);
    assert_eq!(
        (c.cluster, c.all, c.has_any_endpoints),
        (Some(vec![1, 2]), vec![1, 2], true)
    );
    // Only maintenance backends: reject.
    let cands = [
        backend(1, true, Maintenance),
        backend(2, false, Maintenance),
    ];
    let c = categorize(&cands, &cluster);
    assert_eq!((c.cluster, c.has_any_endpoints), (Some(vec![]), false));
    // internal_traffic_policy = "local" with the only local backend in maintenance: drop.
    let local = Policy {
        internal_local: true,
        ..Policy::default()
    };
    let cands = [backend(1, true, Maintenance), backend(2, false, Active)];
    let c = categorize(&cands, &local);
    assert!(c.internal(&local).is_empty());
    assert_eq!(
        (c.cluster, c.local, c.has_any_endpoints),
        (None, Some(vec![]), true)
    );
}

#[test]
fn hints_annotation_values() {
    for (value, on) in [
        ("auto", true),
        ("Auto", true),
        ("AUTO", false),
        ("aUto", false),
        ("", false),
        ("disabled", false),
    ] {
        assert_eq!(hints_annotation_enabled(value), on, "{value:?}");
    }
}
