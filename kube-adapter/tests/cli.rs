// SPDX-License-Identifier: Apache-2.0
//! The `render` command's contract: exit codes, files written and removed, and the RBAC
//! manifest granting every kind watch mode reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kldnet_kube_adapter::watch::{CILIUM_KINDS, CORE_KINDS};

fn render(args: &[&str], inputs: &[&Path], out: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kldnet-kube-adapter"));
    c.arg("render").args(args).arg("-o").arg(out).arg("-f");
    c.args(inputs);
    c.output().unwrap()
}

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: web, image: x, ports: [{name: http, containerPort: 8080}]}]
status: {phase: Running, podIPs: [{ip: 10.244.1.5}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: http}]}]
"#;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn render_exit_codes_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app.yaml");
    let pol = tmp.path().join("policy.yaml");
    std::fs::write(&app, APP).unwrap();
    std::fs::write(&pol, POLICY).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("10-admin.toml"), "").unwrap();

    // Everything translated: exit 0.
    let r = render(&[], &[&app, &pol], &out);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        names(&out),
        [
            "10-admin.toml",
            "50-kube-endpoints.toml",
            "50-kube-namespaces.toml",
            "50-kube-policies.toml",
            "50-kube-services.toml"
        ]
    );
    let (_, d) = kldnet_config::load_dirs(std::slice::from_ref(&out));
    assert_eq!(d.errors(), 0, "{d}");

    // Without the policy: its file goes, other files stay.
    let r = render(&[], &[&app], &out);
    assert_eq!(r.status.code(), Some(0));
    assert!(!names(&out).contains(&"50-kube-policies.toml".to_string()));
    assert!(names(&out).contains(&"10-admin.toml".to_string()));

    // Something skipped: exit 3, the reason on stderr.
    let extra = tmp.path().join("headless.yaml");
    std::fs::write(&extra, "apiVersion: v1\nkind: Service\nmetadata: {name: h, namespace: shop}\nspec: {clusterIP: None, ports: [{port: 80}]}\n").unwrap();
    let r = render(&[], &[&app, &extra], &out);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("Service/shop/h: skipped: headless service"),
        "{stderr}"
    );

    // Unreadable input: exit 1, nothing written.
    let r = render(
        &[],
        &[&tmp.path().join("missing.yaml")],
        &tmp.path().join("out2"),
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(!tmp.path().join("out2").exists());

    // Usage error: exit 2.
    let r = Command::new(env!("CARGO_BIN_EXE_kldnet-kube-adapter"))
        .arg("render")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
}

/// `--check-with DIR`: the translation is validated together with the node's own config,
/// and an object that clashes with it is skipped with the validator's reason, so kldnetd
/// never gets a set it must refuse as a whole.
#[test]
fn render_check_with_skips_what_clashes_with_the_node_config() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    let etc = tmp.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(
        etc.join("services.toml"),
        "[[service]]\nname = \"web\"\nnamespace = \"shop\"\naddresses = [\"10.96.0.99\"]\n\
         ports = [{ port = 80, target_port = 8080 }]\nselector = { app = \"web\" }\n",
    )
    .unwrap();
    let merged_errors = |out: &Path| {
        let (_, d) = kldnet_config::load_dirs(&[etc.clone(), out.to_path_buf()]);
        d.errors()
    };

    // Unchecked: the files are fine alone, but kldnetd would refuse them with /etc.
    let unchecked = tmp.path().join("unchecked");
    let r = render(&[], &[&app], &unchecked);
    assert_eq!(r.status.code(), Some(0));
    assert!(merged_errors(&unchecked) > 0, "the clash exists");

    // Checked: the clashing Service is skipped with the reason; the rest is written.
    let out = tmp.path().join("out");
    let etc_arg = etc.to_string_lossy().to_string();
    let r = render(&["--check-with", &etc_arg], &[&app], &out);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("Service/shop/web: skipped") && stderr.contains("services.toml"),
        "the reason names the clash and the other file: {stderr}"
    );
    assert!(names(&out).contains(&"50-kube-endpoints.toml".to_string()));
    assert!(!names(&out).contains(&"50-kube-services.toml".to_string()));
    assert_eq!(merged_errors(&out), 0, "kldnetd accepts the set");
}

#[test]
fn rbac_grants_every_watched_kind() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let role: serde_json::Value = text
        .split("\n---\n")
        .map(|d| serde_norway::from_str::<serde_json::Value>(d).unwrap())
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap();
    let granted = |group: &str, plural: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
            has("apiGroups", group)
                && has("resources", plural)
                && ["get", "list", "watch"].iter().all(|v| has("verbs", v))
        })
    };
    for (g, p) in CORE_KINDS {
        assert!(granted(g, p), "{g}/{p}");
    }
    for (_, p, _) in CILIUM_KINDS {
        assert!(granted("cilium.io", p), "cilium.io/{p}");
    }
    let verbs: Vec<&serde_json::Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["verbs"].as_array().unwrap())
        .collect();
    assert!(
        verbs
            .iter()
            .all(|v| ["get", "list", "watch"].contains(&v.as_str().unwrap())),
        "read-only"
    );
}
