// SPDX-License-Identifier: Apache-2.0
//! Files → `Spec`: each object deserialized on its own, so one bad object does not hide
//! the problems of the others.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostic, closest};
use crate::source::SourceFile;
use crate::spec::{Located, Meta, Spec};

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

/// Parses every file into one `Spec`; syntax and schema problems go to `diags`.
pub fn parse_files(files: Vec<SourceFile>, diags: &mut Vec<Diagnostic>) -> Spec {
    let mut spec = Spec::default();
    for index in 0..files.len() {
        parse_file(&mut spec, &files, index, diags);
    }
    spec.files = files;
    spec
}

fn parse_file(spec: &mut Spec, files: &[SourceFile], index: usize, diags: &mut Vec<Diagnostic>) {
    let file = &files[index];
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
        let ctx = Ctx {
            files,
            index,
            file,
            diags,
        };
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
    files: &'a [SourceFile],
    index: usize,
    file: &'a SourceFile,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn table<T: DeserializeOwned>(
        mut self,
        section: &str,
        value: Spanned<DeValue<'_>>,
        slot: &mut Option<Located<T>>,
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
        if let Some(obj) = self.object(section, value) {
            // A second `[node]` in another file: `(kind, name)` keys must be unique.
            if let Some(first) = slot {
                let first_at = self.files[first.meta.file].location(first.meta.span.start);
                self.diags.push(
                    Diagnostic::error(
                        Some(self.file.location(obj.meta.span.start)),
                        format!("duplicate `[{section}]` section; first defined at {first_at}"),
                    )
                    .with_help(format!(
                        "`[{section}]` may appear once across all config files; merge the two"
                    )),
                );
                return;
            }
            *slot = Some(obj);
        }
    }

    fn array<T: DeserializeOwned>(
        self,
        section: &str,
        value: Spanned<DeValue<'_>>,
        out: &mut Vec<Located<T>>,
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
        let Ctx {
            files,
            index,
            file,
            diags,
        } = self;
        for item in items {
            let mut ctx = Ctx {
                files,
                index,
                file,
                diags: &mut *diags,
            };
            if let Some(obj) = ctx.object(section, item) {
                out.push(obj);
            }
        }
    }

    fn object<T: DeserializeOwned>(
        &mut self,
        section: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<Located<T>> {
        let span = value.span();
        let mut fields = Vec::new();
        collect_spans(String::new(), &value, &mut fields);
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(Located {
                value: v,
                meta: Meta {
                    file: self.index,
                    span,
                    fields,
                },
            }),
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

fn collect_spans(
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
