// SPDX-License-Identifier: Apache-2.0
//! Watch mode: reflectors (list + watch, resumed on drops, relisted on 410 Gone) for every
//! kind the adapter translates; after a change and a quiet `debounce`, the whole set is
//! translated again, validated, and written atomically when the text differs.
//!
//! Nothing is written before every reflector has finished its first list: a file built
//! from half the policies could open what the full set denies.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::checked::{Layout, translate_checked};
use crate::model::Object;
use crate::translate::Options;
use crate::write::{read_others, write_atomic};

/// Settings of `kldnet-kube-adapter watch`.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Kubeconfig file; `None`: `Config::infer` ($KUBECONFIG, ~/.kube/config, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The file kept up to date.
    pub out: PathBuf,
    /// Quiet time after the last change before rewriting.
    pub debounce: Duration,
    /// Watch the Cilium kinds (each is skipped when its CRD is not installed).
    pub cilium: bool,
    pub options: Options,
    /// kldnetd's other config dirs: the file is validated together with them.
    pub check_with: Vec<PathBuf>,
}

/// Core kinds watched: (API group, plural), for RBAC.
pub const CORE_KINDS: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "pods"),
    ("", "services"),
    ("", "nodes"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.k8s.io", "networkpolicies"),
];

/// Cilium kinds (group `cilium.io`): (kind, plural, versions to try, newest first).
pub const CILIUM_KINDS: &[(&str, &str, &[&str])] = &[
    ("CiliumNetworkPolicy", "ciliumnetworkpolicies", &["v2"]),
    (
        "CiliumClusterwideNetworkPolicy",
        "ciliumclusterwidenetworkpolicies",
        &["v2"],
    ),
    ("CiliumCIDRGroup", "ciliumcidrgroups", &["v2", "v2alpha1"]),
    (
        "CiliumLoadBalancerIPPool",
        "ciliumloadbalancerippools",
        &["v2", "v2alpha1"],
    ),
    (
        "CiliumBGPPeeringPolicy",
        "ciliumbgppeeringpolicies",
        &["v2alpha1"],
    ),
];

/// Connects with the kubeconfig (or inferred config).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .with_context(|| format!("read kubeconfig {}", p.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("load kubeconfig {}", p.display()))?
        }
        None => Config::infer()
            .await
            .context("find a kubeconfig or in-cluster config")?,
    };
    Client::try_from(config).context("create Kubernetes client")
}

/// Starts a reflector for `api`; `changed` is notified on every event.
fn reflect<K>(api: Api<K>, dyntype: K::DynamicType, changed: Arc<Notify>, what: String) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => warn!("watch {what}: {e} (retrying)"),
            }
        }
    });
    reader
}

/// A reflector over a Cilium kind, with the apiVersion and kind each object is read as.
struct Dynamic {
    store: Store<DynamicObject>,
    ar: ApiResource,
}

impl Dynamic {
    fn objects(&self, out: &mut Vec<Object>) {
        for o in self.store.state() {
            let Ok(mut v) = serde_json::to_value(&*o) else {
                continue;
            };
            v["apiVersion"] = self.ar.api_version.clone().into();
            v["kind"] = self.ar.kind.clone().into();
            match Object::from_json(v, "default") {
                Ok(obj) => out.push(obj),
                Err(e) => warn!(
                    "{} {}: cannot read: {e}",
                    self.ar.kind,
                    o.metadata.name.clone().unwrap_or_default()
                ),
            }
        }
    }
}

/// Readers of every watched kind.
struct Stores {
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    policies: Store<NetworkPolicy>,
    nodes: Store<Node>,
    dynamic: Vec<Dynamic>,
}

impl Stores {
    async fn ready(&self) -> anyhow::Result<()> {
        let e = |_| anyhow::anyhow!("a watcher stopped");
        self.namespaces.wait_until_ready().await.map_err(e)?;
        self.pods.wait_until_ready().await.map_err(e)?;
        self.services.wait_until_ready().await.map_err(e)?;
        self.slices.wait_until_ready().await.map_err(e)?;
        self.policies.wait_until_ready().await.map_err(e)?;
        self.nodes.wait_until_ready().await.map_err(e)?;
        for d in &self.dynamic {
            d.store.wait_until_ready().await.map_err(e)?;
        }
        Ok(())
    }

    fn objects(&self) -> Vec<Object> {
        let mut out = Vec::new();
        out.extend(
            self.namespaces
                .state()
                .iter()
                .map(|o| Object::Namespace((**o).clone())),
        );
        out.extend(self.pods.state().iter().map(|o| Object::Pod((**o).clone())));
        out.extend(
            self.services
                .state()
                .iter()
                .map(|o| Object::Service((**o).clone())),
        );
        out.extend(
            self.slices
                .state()
                .iter()
                .map(|o| Object::EndpointSlice((**o).clone())),
        );
        out.extend(
            self.policies
                .state()
                .iter()
                .map(|o| Object::NetworkPolicy((**o).clone())),
        );
        out.extend(
            self.nodes
                .state()
                .iter()
                .map(|o| Object::Node((**o).clone())),
        );
        for d in &self.dynamic {
            d.objects(&mut out);
        }
        out
    }
}

/// The first served version of a Cilium kind, or None when its CRD is not installed.
async fn discover(
    client: &Client,
    kind: &str,
    plural: &str,
    versions: &[&str],
) -> Option<ApiResource> {
    for v in versions {
        let ar = ApiResource {
            group: "cilium.io".into(),
            version: (*v).into(),
            api_version: format!("cilium.io/{v}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Some(ar),
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => {
                warn!("probe {kind} {v}: {e}; watching it anyway");
                return Some(ar);
            }
        }
    }
    None
}

/// Runs until `shutdown` resolves (or a watcher fails for good).
pub async fn run(cfg: WatchConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let client = client(cfg.kubeconfig.as_deref()).await?;
    run_with_client(client, cfg, shutdown).await
}

/// [`run`] with a given client.
pub async fn run_with_client(
    client: Client,
    cfg: WatchConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let c = &changed;
    let mut dynamic = Vec::new();
    if cfg.cilium {
        for (kind, plural, versions) in CILIUM_KINDS {
            match discover(&client, kind, plural, versions).await {
                Some(ar) => {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                    let store = reflect(api, ar.clone(), Arc::clone(c), kind.to_string());
                    dynamic.push(Dynamic { store, ar });
                }
                None => info!("{kind}: CRD not installed, not watched"),
            }
        }
    }
    let stores = Stores {
        namespaces: reflect(
            Api::all(client.clone()),
            (),
            Arc::clone(c),
            "namespaces".into(),
        ),
        pods: reflect(Api::all(client.clone()), (), Arc::clone(c), "pods".into()),
        services: reflect(
            Api::all(client.clone()),
            (),
            Arc::clone(c),
            "services".into(),
        ),
        slices: reflect(
            Api::all(client.clone()),
            (),
            Arc::clone(c),
            "endpointslices".into(),
        ),
        policies: reflect(
            Api::all(client.clone()),
            (),
            Arc::clone(c),
            "networkpolicies".into(),
        ),
        nodes: reflect(Api::all(client.clone()), (), Arc::clone(c), "nodes".into()),
        dynamic,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        r = stores.ready() => r?,
        () = &mut shutdown => return Ok(()),
    }
    info!("initial lists done; writing {}", cfg.out.display());
    let mut last_report: BTreeSet<String> = BTreeSet::new();
    loop {
        write_once(&stores, &cfg, &mut last_report);
        // Wait for a change, then for a quiet period.
        tokio::select! {
            () = changed.notified() => {}
            () = &mut shutdown => return Ok(()),
        }
        loop {
            tokio::select! {
                () = changed.notified() => continue,
                () = tokio::time::sleep(cfg.debounce) => break,
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}

/// Translates the current state and writes it when it validates and differs.
fn write_once(stores: &Stores, cfg: &WatchConfig, last_report: &mut BTreeSet<String>) {
    let others = read_others(&cfg.check_with, |p| p == cfg.out);
    match translate_checked(
        &stores.objects(),
        &cfg.options,
        Layout::Combined(&cfg.out),
        &others,
    ) {
        Err((d, _)) => {
            warn!("translated configuration does not validate; keeping the last good file:\n{d}")
        }
        Ok(c) => {
            let lines: BTreeSet<String> = c.report.lines(false).into_iter().collect();
            for l in lines.difference(last_report) {
                warn!("{l}");
            }
            *last_report = lines;
            for (path, text) in &c.files {
                match write_atomic(path, text) {
                    Ok(true) => {
                        let (t, p, s, i) = c.report.counts();
                        info!(
                            "wrote {} ({t} translated, {p} partial, {s} skipped, {i} ignored)",
                            path.display()
                        );
                    }
                    Ok(false) => {}
                    Err(e) => warn!("{e:#}"),
                }
            }
        }
    }
}
