// SPDX-License-Identifier: Apache-2.0
//! Watch mode against an API server written here: list with resourceVersion, a watch
//! stream of ADDED/MODIFIED/DELETED events, a watch that is dropped and resumed from the
//! last resourceVersion, and a 410 Gone that forces a relist. Real object JSON throughout.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response};
use kldnet_kube_adapter::Options;
use kldnet_kube_adapter::watch::{WatchConfig, run};
use serde_json::{Value, json};

/// A resource collection the server serves: its URL path and list kind.
const RESOURCES: &[(&str, &str, &str)] = &[
    ("/api/v1/namespaces", "NamespaceList", "v1"),
    ("/api/v1/pods", "PodList", "v1"),
    ("/api/v1/services", "ServiceList", "v1"),
    ("/api/v1/nodes", "NodeList", "v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSliceList",
        "discovery.k8s.io/v1",
    ),
    (
        "/apis/networking.k8s.io/v1/networkpolicies",
        "NetworkPolicyList",
        "networking.k8s.io/v1",
    ),
    (
        "/apis/cilium.io/v2/ciliumnetworkpolicies",
        "CiliumNetworkPolicyList",
        "cilium.io/v2",
    ),
];

#[derive(Default)]
struct State {
    rv: u64,
    /// path → key → object
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// (rv, path, event type, object)
    log: Vec<(u64, &'static str, &'static str, Value)>,
    /// Watches from a resourceVersion at or below this get 410 Gone.
    compacted: u64,
    /// Requests seen: (path, "list" | "watch", resourceVersion).
    requests: Vec<(String, String, String)>,
}

struct Server {
    state: Mutex<State>,
    /// Bumped on every event, so open watches look at the log again.
    events: tokio::sync::watch::Sender<u64>,
    /// Bumped to drop every open watch.
    drops: tokio::sync::watch::Sender<u64>,
}

fn path_of(kind: &str) -> &'static str {
    match kind {
        "Namespace" => RESOURCES[0].0,
        "Pod" => RESOURCES[1].0,
        "Service" => RESOURCES[2].0,
        "Node" => RESOURCES[3].0,
        "EndpointSlice" => RESOURCES[4].0,
        "NetworkPolicy" => RESOURCES[5].0,
        "CiliumNetworkPolicy" => RESOURCES[6].0,
        k => panic!("kind {k}"),
    }
}

impl Server {
    /// Applies an object change and logs the event (`ADDED`, `MODIFIED`, `DELETED`).
    fn apply(&self, ty: &'static str, mut obj: Value) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let path = path_of(obj["kind"].as_str().unwrap());
        let key = format!(
            "{}/{}",
            obj["metadata"]["namespace"].as_str().unwrap_or(""),
            obj["metadata"]["name"].as_str().unwrap()
        );
        let objects = st.objects.entry(path).or_default();
        if ty == "DELETED" {
            objects.remove(&key);
        } else {
            objects.insert(key, obj.clone());
        }
        st.log.push((rv, path, ty, obj));
        drop(st);
        self.events.send_replace(rv);
    }

    fn list(&self, path: &'static str, kind: &str, api: &str) -> Value {
        let mut st = self.state.lock().unwrap();
        let rv = st.rv;
        let items: Vec<Value> = st
            .objects
            .entry(path)
            .or_default()
            .values()
            .map(|o| {
                // List items carry no kind/apiVersion, as the API server sends them.
                let mut o = o.clone();
                o.as_object_mut().unwrap().remove("kind");
                o.as_object_mut().unwrap().remove("apiVersion");
                o
            })
            .collect();
        json!({"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": rv.to_string()}, "items": items})
    }

    fn count(&self, path: &str, what: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.requests
            .iter()
            .filter(|(p, w, _)| p == path && w == what)
            .count()
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

async fn handle(
    srv: Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Some(&(rpath, kind, api)) = RESOURCES.iter().find(|(p, _, _)| *p == path) else {
        return Ok(full(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("the server could not find the requested resource ({path})"), "reason": "NotFound", "code": 404}),
        ));
    };
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let rv = query.get("resourceVersion").cloned().unwrap_or_default();
    srv.state.lock().unwrap().requests.push((
        path.clone(),
        if watching { "watch" } else { "list" }.into(),
        rv.clone(),
    ));
    if !watching {
        return Ok(full(200, srv.list(rpath, kind, api)));
    }
    let from: u64 = rv.parse().unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let mut events = srv.events.subscribe();
    let mut drops = srv.drops.subscribe();
    drops.mark_unchanged();
    tokio::spawn(async move {
        let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
        if from < srv.state.lock().unwrap().compacted {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
            let _ = tx.send(line(gone)).await;
            return;
        }
        let mut sent = from;
        loop {
            // Mark seen before reading the log, so an event logged meanwhile wakes us again.
            events.borrow_and_update();
            let pending: Vec<(u64, &str, Value)> = srv
                .state
                .lock()
                .unwrap()
                .log
                .iter()
                .filter(|(rv, p, _, _)| *rv > sent && *p == rpath)
                .map(|(rv, _, ty, o)| (*rv, *ty, o.clone()))
                .collect();
            for (rv, ty, o) in pending {
                if tx
                    .send(line(json!({"type": ty, "object": o})))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = rv;
            }
            tokio::select! {
                r = events.changed() => if r.is_err() { return },
                _ = drops.changed() => return, // the connection ends: a dropped watch
                () = tx.closed() => return,
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx));
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .unwrap())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn start(srv: Arc<Server>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let srv = Arc::clone(&srv);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&srv), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn kubeconfig(dir: &Path, addr: SocketAddr) -> PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{addr}\nusers:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n"
        ),
    )
    .unwrap();
    p
}

fn pod(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn policy(port: i64) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-np"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": port, "protocol": "TCP"}]}]}})
}

/// Waits until the output file satisfies `f`.
async fn wait_for(path: &Path, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if f(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; file:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_api_server_through_drops_and_410() {
    let (events, _) = tokio::sync::watch::channel(0);
    let (drops, _) = tokio::sync::watch::channel(0);
    let srv = Arc::new(Server {
        state: Mutex::new(State::default()),
        events,
        drops,
    });
    srv.apply("ADDED", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "uid": "uid-ns", "labels": {"env": "prod"}}}));
    srv.apply("ADDED", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "uid": "uid-node"},
        "spec": {"podCIDRs": ["10.244.1.0/24"]}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}}));
    srv.apply("ADDED", pod("web-1", "10.244.1.5"));
    srv.apply("ADDED", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop", "uid": "uid-svc"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "type": "ClusterIP", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}));
    srv.apply("ADDED", policy(8080));
    srv.apply("ADDED", json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "dns", "namespace": "shop", "uid": "uid-cnp"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": ["world"], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}]}}));

    let addr = start(Arc::clone(&srv)).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run/50-kube.toml");
    let cfg = WatchConfig {
        kubeconfig: Some(kubeconfig(tmp.path(), addr)),
        out: out.clone(),
        debounce: Duration::from_millis(50),
        cilium: true,
        options: Options {
            node: Some("node-a".into()),
            ..Options::default()
        },
        check_with: Vec::new(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(cfg, async move {
        let _ = stop_rx.await;
    }));

    // Initial lists → the first file, with every kind (Cilium's CRD found by probing).
    let text = wait_for(&out, "first write", |t| {
        t.contains("cnp.dns") && t.contains("web-1")
    })
    .await;
    assert!(
        text.contains("[node]")
            && text.contains("10.96.0.10")
            && text.contains("ports = [{ port = 8080, protocol = \"tcp\" }]"),
        "{text}"
    );
    assert_eq!(
        kldnet_config::load_dirs(&[out.parent().unwrap().to_path_buf()])
            .1
            .errors(),
        0
    );

    // ADDED through the open watch.
    srv.apply("ADDED", pod("web-2", "10.244.1.6"));
    wait_for(&out, "web-2", |t| t.contains("web-2")).await;

    // MODIFIED.
    srv.apply("MODIFIED", policy(9090));
    wait_for(&out, "policy port 9090", |t| {
        t.contains("ports = [{ port = 9090, protocol = \"tcp\" }]")
            && !t.contains("ports = [{ port = 8080, protocol = \"tcp\" }]")
    })
    .await;

    // A change that does not change the translation rewrites nothing.
    let ino = inode(&out);
    let mut p = pod("web-2", "10.244.1.6");
    p["metadata"]["annotations"] = json!({"unrelated": "x"});
    srv.apply("MODIFIED", p);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(inode(&out), ino, "rewritten without a change");

    // The watch is dropped; an event happens meanwhile; the watch resumes from its
    // resourceVersion (no new list) and catches up.
    let pod_lists = srv.count("/api/v1/pods", "list");
    let pod_watches = srv.count("/api/v1/pods", "watch");
    srv.drops.send_modify(|g| *g += 1);
    srv.apply("ADDED", pod("web-3", "10.244.1.7"));
    wait_for(&out, "web-3 after a dropped watch", |t| t.contains("web-3")).await;
    assert!(srv.count("/api/v1/pods", "watch") > pod_watches);
    assert_eq!(
        srv.count("/api/v1/pods", "list"),
        pod_lists,
        "a dropped watch resumes without a relist"
    );

    // web-1 is deleted and the history compacted past it (the open watch never sees the
    // event); after the drop, the watch from the old resourceVersion gets 410 Gone and relists.
    {
        let mut st = srv.state.lock().unwrap();
        st.objects
            .get_mut("/api/v1/pods")
            .unwrap()
            .remove("shop/web-1");
        st.rv += 1;
        st.log.clear();
        st.compacted = st.rv; // the relist's resourceVersion is still good
    }
    srv.drops.send_modify(|g| *g += 1);
    let text = wait_for(&out, "web-1 gone after 410 + relist", |t| {
        !t.contains("web-1")
    })
    .await;
    assert!(text.contains("web-2") && text.contains("web-3"), "{text}");
    assert!(
        srv.count("/api/v1/pods", "list") > pod_lists,
        "410 Gone forces a relist"
    );
    let gone_watches = srv.count("/api/v1/pods", "watch");
    srv.apply("ADDED", pod("web-4", "10.244.1.8"));
    wait_for(&out, "web-4 through the watch after the relist", |t| {
        t.contains("web-4")
    })
    .await;
    assert_eq!(
        srv.count("/api/v1/pods", "list"),
        pod_lists + 1,
        "one relist"
    );
    assert!(srv.count("/api/v1/pods", "watch") >= gone_watches);

    // No temporary files are left next to the output.
    let names: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["50-kube.toml"]);

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
