// SPDX-License-Identifier: Apache-2.0
//! Reading multi-document YAML (or JSON) manifests from files and directories.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::model::{ObjRef, Object};
use crate::report::Status;

/// Objects read, and a report entry for every document that could not be read.
#[derive(Debug, Default)]
pub struct Manifests {
    pub objects: Vec<Object>,
    pub unreadable: Vec<(ObjRef, Status)>,
}

/// The manifest files of `paths`: files as given, directories walked recursively for
/// `*.yaml`, `*.yml` and `*.json`, in name order.
pub fn manifest_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.is_dir());
            out.extend(files.into_iter().filter(|f| {
                matches!(
                    f.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            }));
            out.extend(manifest_files(&dirs)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reads every manifest of `paths`.
pub fn read(paths: &[PathBuf], default_namespace: &str) -> std::io::Result<Manifests> {
    let mut m = Manifests::default();
    for f in manifest_files(paths)? {
        let text = std::fs::read_to_string(&f)?;
        parse(&text, &f, default_namespace, &mut m);
    }
    Ok(m)
}

fn doc_ref(file: &Path, n: usize) -> ObjRef {
    ObjRef {
        kind: "Document".into(),
        namespace: None,
        name: format!("{}#{n}", file.display()),
    }
}

/// Parses the documents of one file into `m` (`List` kinds are expanded).
pub fn parse(text: &str, file: &Path, default_namespace: &str, m: &mut Manifests) {
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => add(v, file, n, default_namespace, m),
            Err(e) => {
                m.unreadable.push((
                    doc_ref(file, n),
                    Status::Skipped(format!("invalid YAML: {e}")),
                ));
                // The YAML stream cannot be trusted past a syntax error.
                break;
            }
        }
    }
}

fn add(v: Value, file: &Path, n: usize, default_namespace: &str, m: &mut Manifests) {
    let is_list = v
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = v.get("items") {
            for item in items {
                add(item.clone(), file, n, default_namespace, m);
            }
        }
        return;
    }
    let fallback = ObjRef {
        kind: v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Document")
            .to_string(),
        namespace: None,
        name: v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{}#{n}", file.display()), str::to_string),
    };
    match Object::from_json(v, default_namespace) {
        Ok(o) => m.objects.push(o),
        Err(e) => m.unreadable.push((
            fallback,
            Status::Skipped(format!("{}#{n}: cannot read: {e}", file.display())),
        )),
    }
}
