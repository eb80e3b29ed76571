// SPDX-License-Identifier: Apache-2.0
//! Label selectors: Kubernetes `LabelSelector` → kldnet selector, and Cilium endpoint
//! selectors split into pod labels, namespace constraints, reserved entities and the
//! cluster name (which has a single value here, so it is decided at translation time).

use std::collections::BTreeMap;

use kldnet_config::types::{check_label_key, check_label_value};

use crate::model::{LabelSel, Requirement};
use crate::toml_out::{Table, V};

/// The namespace-name label every namespace carries implicitly.
pub const NS_NAME: &str = "kubernetes.io/metadata.name";
/// Cilium's label for a pod's namespace.
pub const CILIUM_NS: &str = "io.kubernetes.pod.namespace";
/// Cilium's prefix for the labels of a pod's namespace.
pub const CILIUM_NS_LABELS: &str = "io.cilium.k8s.namespace.labels.";
/// Cilium's cluster-name label.
pub const CILIUM_CLUSTER: &str = "io.cilium.k8s.policy.cluster";
/// Cilium's service-account label (pods carry it as an endpoint label).
pub const CILIUM_SA: &str = "io.cilium.k8s.policy.serviceaccount";

/// A kldnet selector value; plain labels when there are no expressions.
pub fn selector_value(sel: &LabelSel) -> Result<V, String> {
    let mut labels = Table::new();
    for (k, v) in &sel.match_labels {
        check_label_key(k)?;
        check_label_value(k, v)?;
        labels.set(k, v);
    }
    if sel.match_expressions.is_empty() {
        return Ok(V::T(labels));
    }
    let mut exprs = Vec::new();
    for e in &sel.match_expressions {
        check_label_key(&e.key)?;
        let op = match e.operator.as_str() {
            "In" | "NotIn" if e.values.is_empty() => {
                return Err(format!(
                    "match expression on `{}` with operator {} has no values",
                    e.key, e.operator
                ));
            }
            op @ ("In" | "NotIn" | "Exists" | "DoesNotExist") => op,
            other => {
                return Err(format!(
                    "unknown match expression operator `{other}` on `{}`",
                    e.key
                ));
            }
        };
        let mut t = Table::new();
        t.set("key", &e.key).set("operator", op);
        if matches!(op, "In" | "NotIn") {
            for v in &e.values {
                check_label_value(&e.key, v)?;
            }
            t.set("values", V::A(e.values.iter().map(V::from).collect()));
        }
        exprs.push(V::T(t));
    }
    let mut t = Table::new();
    if !labels.is_empty() {
        t.set("match_labels", labels);
    }
    t.set("match_expressions", V::A(exprs));
    Ok(V::T(t))
}

/// Whether `sel` matches `labels` (Kubernetes semantics).
pub fn matches(sel: &LabelSel, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel
            .match_expressions
            .iter()
            .all(|e| requirement_holds(e, labels.get(&e.key).map(String::as_str)))
}

fn requirement_holds(e: &Requirement, got: Option<&str>) -> bool {
    match e.operator.as_str() {
        "In" => got.is_some_and(|g| e.values.iter().any(|v| v == g)),
        "NotIn" => got.is_none_or(|g| e.values.iter().all(|v| v != g)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        _ => false,
    }
}

/// A Cilium endpoint selector, taken apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CiliumSel {
    /// Requirements on the endpoint's own labels.
    pub pod: LabelSel,
    /// Requirements on its namespace (name as `kubernetes.io/metadata.name`), if any.
    pub ns: Option<LabelSel>,
    /// A reserved identity (`reserved:host`…) instead of labels.
    pub entity: Option<String>,
    /// The cluster-name requirement excludes this cluster: the selector matches nothing.
    pub never: bool,
}

enum Key {
    Pod(String),
    Ns(String),
    Cluster,
    Reserved(String),
}

fn classify(key: &str) -> Result<Key, String> {
    let bare = match key.split_once(':') {
        Some(("k8s" | "any", rest)) => rest,
        Some(("reserved", rest)) => return Ok(Key::Reserved(rest.to_string())),
        Some((src, _)) => {
            return Err(format!(
                "label source `{src}:` in `{key}` has no kldnet equivalent (only k8s:, any: and reserved: are translated)"
            ));
        }
        None => key,
    };
    Ok(if bare == CILIUM_NS {
        Key::Ns(NS_NAME.to_string())
    } else if let Some(l) = bare.strip_prefix(CILIUM_NS_LABELS) {
        Key::Ns(l.to_string())
    } else if bare == CILIUM_CLUSTER {
        Key::Cluster
    } else {
        Key::Pod(bare.to_string())
    })
}

/// Splits a Cilium endpoint selector; `cluster` is this cluster's name.
pub fn split(sel: &LabelSel, cluster: &str) -> Result<CiliumSel, String> {
    let mut out = CiliumSel::default();
    let mut ns = LabelSel::default();
    let mut has_ns = false;
    let mut other_labels = false;
    for (k, v) in &sel.match_labels {
        match classify(k)? {
            Key::Pod(k) => {
                other_labels = true;
                out.pod.match_labels.insert(k, v.clone());
            }
            Key::Ns(k) => {
                has_ns = true;
                ns.match_labels.insert(k, v.clone());
            }
            Key::Cluster => out.never |= v != cluster,
            Key::Reserved(r) => set_entity(&mut out, r)?,
        }
    }
    for e in &sel.match_expressions {
        match classify(&e.key)? {
            Key::Pod(k) => {
                other_labels = true;
                out.pod.match_expressions.push(Requirement {
                    key: k,
                    ..e.clone()
                });
            }
            Key::Ns(k) => {
                has_ns = true;
                ns.match_expressions.push(Requirement {
                    key: k,
                    ..e.clone()
                });
            }
            Key::Cluster => out.never |= !requirement_holds(e, Some(cluster)),
            Key::Reserved(r) if e.operator == "Exists" => set_entity(&mut out, r)?,
            Key::Reserved(r) => {
                return Err(format!(
                    "reserved label `reserved:{r}` with operator {} has no kldnet equivalent",
                    e.operator
                ));
            }
        }
    }
    if out.entity.is_some() && (other_labels || has_ns) {
        return Err(
            "a selector mixing reserved: labels with other labels has no kldnet equivalent".into(),
        );
    }
    if has_ns {
        out.ns = Some(ns);
    }
    Ok(out)
}

fn set_entity(out: &mut CiliumSel, r: String) -> Result<(), String> {
    if out.entity.as_ref().is_some_and(|e| *e != r) {
        return Err(
            "a selector naming two reserved identities matches nothing kldnet can express".into(),
        );
    }
    out.entity = Some(r);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(labels: &[(&str, &str)], exprs: &[(&str, &str, &[&str])]) -> LabelSel {
        LabelSel {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: exprs
                .iter()
                .map(|(k, op, vs)| Requirement {
                    key: k.to_string(),
                    operator: op.to_string(),
                    values: vs.iter().map(|v| v.to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn cilium_namespace_and_cluster_keys_are_taken_apart() {
        let s = split(
            &sel(
                &[
                    ("k8s:io.kubernetes.pod.namespace", "kube-system"),
                    ("k8s-app", "kube-dns"),
                ],
                &[("io.cilium.k8s.policy.cluster", "Exists", &[])],
            ),
            "default",
        )
        .unwrap();
        assert_eq!(s.pod, sel(&[("k8s-app", "kube-dns")], &[]));
        assert_eq!(s.ns, Some(sel(&[(NS_NAME, "kube-system")], &[])));
        assert!(!s.never);
        let s = split(
            &sel(&[], &[("io.cilium.k8s.policy.cluster", "In", &["other"])]),
            "default",
        )
        .unwrap();
        assert!(s.never);
        let s = split(
            &sel(&[("io.cilium.k8s.namespace.labels.team", "a")], &[]),
            "c",
        )
        .unwrap();
        assert_eq!(s.ns, Some(sel(&[("team", "a")], &[])));
    }

    #[test]
    fn reserved_labels_become_entities() {
        let s = split(&sel(&[], &[("reserved:host", "Exists", &[])]), "c").unwrap();
        assert_eq!(s.entity.as_deref(), Some("host"));
        assert!(split(&sel(&[("reserved:host", ""), ("app", "x")], &[]), "c").is_err());
        assert!(split(&sel(&[("cidr:10.0.0.0/8", "")], &[]), "c").is_err());
    }
}
