// SPDX-License-Identifier: Apache-2.0
//! Files → `Spec`: each object deserialized on its own, so one bad object does not hide
//! the problems of the others.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostic, closest};
use crate::source::SourceFile;
use std::sync::Arc;

use crate::spec::{Located, Meta, Shared, Spec};

/// Sections holding one table (`[node]`).
const TABLE_SECTIONS: &[&str] = &["node", "encryption", "bandwidth", "flows", "bgp"];
/// Sections holding an array of tables (`[[endpoint]]`).
const ARRAY_SECTIONS: &[&str] = &[
    "endpoint",
    "namespace",
    "identity",
    "service",
    "policy",
    "peer",
    "lb_pool",
    "route",
];

/// One file parsed on its own: its objects and diagnostics.
#[derive(Clone, Debug)]
pub struct ParsedFile {
    pub file: Arc<SourceFile>,
    spec: Spec,
    diags: Vec<Diagnostic>,
}

/// Parses one file. Pure: the result depends only on the file's path and text, so it can
/// be cached across reloads while the text is unchanged.
pub fn parse_file(file: SourceFile) -> ParsedFile {
    let file = Arc::new(file);
    let mut spec = Spec::default();
    let mut diags = Vec::new();
    parse_into(&mut spec, &file, &mut diags);
    ParsedFile { file, spec, diags }
}

/// Combines parsed files (in precedence order) into one `Spec`; a single-table section
/// (`[node]`, …) in two files is reported with both places.
pub fn merge(parsed: &[Arc<ParsedFile>], diags: &mut Vec<Diagnostic>) -> Spec {
    let mut spec = Spec::default();
    for p in parsed {
        diags.extend(p.diags.iter().cloned());
        let f = &p.spec;
        single(&mut spec.node, &f.node, "node", diags);
        single(&mut spec.encryption, &f.encryption, "encryption", diags);
        single(&mut spec.bandwidth, &f.bandwidth, "bandwidth", diags);
        single(&mut spec.flows, &f.flows, "flows", diags);
        single(&mut spec.bgp, &f.bgp, "bgp", diags);
        spec.endpoints.extend(f.endpoints.iter().cloned());
        spec.namespaces.extend(f.namespaces.iter().cloned());
        spec.identities.extend(f.identities.iter().cloned());
        spec.services.extend(f.services.iter().cloned());
        spec.policies.extend(f.policies.iter().cloned());
        spec.peers.extend(f.peers.iter().cloned());
        spec.lb_pools.extend(f.lb_pools.iter().cloned());
        spec.routes.extend(f.routes.iter().cloned());
    }
    spec.files = parsed.iter().map(|p| Arc::clone(&p.file)).collect();
    spec
}

fn single<T>(
    slot: &mut Option<Shared<T>>,
    obj: &Option<Shared<T>>,
    section: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(obj) = obj else { return };
    if let Some(first) = slot {
        let first_at = first.meta.file.location(first.meta.span.start);
        diags.push(
            Diagnostic::error(
                Some(obj.meta.file.location(obj.meta.span.start)),
                format!("duplicate `[{section}]` section; first defined at {first_at}"),
            )
            .with_help(format!(
                "`[{section}]` may appear once across all config files; merge the two"
            )),
        );
        return;
    }
    *slot = Some(Arc::clone(obj));
}

fn parse_into(spec: &mut Spec, file: &Arc<SourceFile>, diags: &mut Vec<Diagnostic>) {
    let root = match DeTable::parse(&file.text) {
        Ok(root) => root,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            diags.push(
                Diagnostic::error(Some(file.location(at)), format!("TOML syntax: {}", first_line(e.message())))
                    .with_help("the whole file is ignored until it parses; a half-written file keeps the last good state"),
            );
            return;
        }
    };
    let mut entries: Vec<_> = root.into_inner().into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let section = key.get_ref().as_ref();
        let at = file.location(key.span().start);
        let ctx = Ctx { file, diags };
        match section {
            "node" => ctx.table(section, value, &mut spec.node),
            "encryption" => ctx.table(section, value, &mut spec.encryption),
            "bandwidth" => ctx.table(section, value, &mut spec.bandwidth),
            "flows" => ctx.table(section, value, &mut spec.flows),
            "bgp" => ctx.table(section, value, &mut spec.bgp),
            "endpoint" => ctx.array(section, value, &mut spec.endpoints),
            "namespace" => ctx.array(section, value, &mut spec.namespaces),
            "identity" => ctx.array(section, value, &mut spec.identities),
            "service" => ctx.array(section, value, &mut spec.services),
            "policy" => ctx.array(section, value, &mut spec.policies),
            "peer" => ctx.array(section, value, &mut spec.peers),
            "lb_pool" => ctx.array(section, value, &mut spec.lb_pools),
            "route" => ctx.array(section, value, &mut spec.routes),
            other => {
                let all: Vec<&str> = TABLE_SECTIONS
                    .iter()
                    .chain(ARRAY_SECTIONS)
                    .copied()
                    .collect();
                let mut d = Diagnostic::error(Some(at), format!("unknown section `{other}`"));
                d = match closest(other, &all) {
                    Some(c) => d.with_help(format!("did you mean `{c}`?")),
                    None => d.with_help(format!("sections are: {}", all.join(", "))),
                };
                diags.push(d);
            }
        }
    }
}

struct Ctx<'a> {
    file: &'a Arc<SourceFile>,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn table<T: DeserializeOwned>(
        mut self,
        section: &str,
        value: Spanned<DeValue<'_>>,
        slot: &mut Option<Shared<T>>,
    ) {
        if !value.get_ref().is_table() {
            let at = self.file.location(value.span().start);
            self.diags.push(
                Diagnostic::error(Some(at), format!("`{section}` must be a table")).with_help(
                    format!("write `[{section}]` (one per configuration), not `[[{section}]]`"),
                ),
            );
            return;
        }
        if let Some(obj) = self.object(section.to_string(), value) {
            *slot = Some(obj);
        }
    }

    fn array<T: DeserializeOwned>(
        self,
        section: &str,
        value: Spanned<DeValue<'_>>,
        out: &mut Vec<Shared<T>>,
    ) {
        let span = value.span();
        let items = match value.into_inner() {
            DeValue::Array(items) => items,
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        Some(self.file.location(span.start)),
                        format!("`{section}` must be an array of tables"),
                    )
                    .with_help(format!("write `[[{section}]]` for each {section}")),
                );
                return;
            }
        };
        let Ctx { file, diags } = self;
        for (i, item) in items.into_iter().enumerate() {
            let mut ctx = Ctx {
                file,
                diags: &mut *diags,
            };
            if let Some(obj) = ctx.object(format!("{section}[{i}]"), item) {
                out.push(obj);
            }
        }
    }

    /// `path` is where the object stands in its file: `node`, `service[3]`.
    fn object<T: DeserializeOwned>(
        &mut self,
        path: String,
        value: Spanned<DeValue<'_>>,
    ) -> Option<Shared<T>> {
        let span = value.span();
        let section = path.split('[').next().unwrap_or_default().to_string();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(Arc::new(Located {
                value: v,
                meta: Meta {
                    file: Arc::clone(self.file),
                    span,
                    path: path.into_boxed_str(),
                },
            })),
            Err(e) => {
                let at = e.span().unwrap_or(span.clone()).start;
                let message = first_line(e.message());
                let mut d = Diagnostic::error(
                    Some(self.file.location(at)),
                    format!("in {section}: {message}"),
                );
                if let Some(help) = unknown_field_help(&message) {
                    d = d.with_help(help);
                }
                self.diags.push(d);
                None
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// serde's "unknown field `x`, expected one of `a`, `b`" becomes a did-you-mean.
fn unknown_field_help(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(field, &names) {
        Some(c) => Some(format!("did you mean `{c}`?")),
        None if !names.is_empty() => Some(format!("known fields: {}", names.join(", "))),
        None => None,
    }
}

pub(crate) fn collect_spans(
    path: String,
    value: &Spanned<DeValue<'_>>,
    out: &mut Vec<(Box<str>, Range<usize>)>,
) {
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                let p = if path.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{path}.{}", k.get_ref())
                };
                collect_spans(p, v, out);
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_spans(format!("{path}[{i}]"), v, out);
            }
        }
        _ => {}
    }
    if !path.is_empty() {
        out.push((path.into_boxed_str(), value.span()));
    }
}
