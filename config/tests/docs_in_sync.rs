// SPDX-License-Identifier: Apache-2.0
//! `docs/config.md` lists exactly the keys the parser accepts, section by section.
//!
//! The parser's side is found by probing, not by a hand-kept list: a section written with
//! one unknown key `zz_unknown = 1` makes serde answer "unknown field `zz_unknown`,
//! expected one of `a`, `b`…". Nested sections are discovered the same way: a key whose
//! value, written as `{ zz_unknown = 1 }` or `[{ zz_unknown = 1 }]`, draws that answer is a
//! section of its own (`policy.ingress`, `service.ports`, `route.rule.matches.headers`…).
//! So a key or a nested table added to `schema.rs` without docs fails this test.
//!
//! The docs' side: every `### ` heading names its section(s) in backticks (`[node]`,
//! `[[policy.ingress]]`, `endpoint.ports`; brackets are ignored, several names for one
//! shape are allowed), and the first column of the tables under it holds the keys in backticks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use kldnet_config::{SourceFile, load_files};

const PROBE_KEY: &str = "zz_unknown";

/// One step into a nested value: the key, and whether its value is an array of tables.
type Step = (String, bool);

/// Loads `text` as one file and returns the messages and helps of its errors.
fn errors_of(text: &str) -> Vec<(String, String)> {
    let (_, diags) = load_files(vec![SourceFile::new("probe.toml", text)]);
    diags
        .0
        .iter()
        .filter(|d| d.severity == kldnet_config::Severity::Error)
        .map(|d| (d.message.clone(), d.help.clone().unwrap_or_default()))
        .collect()
}

/// The field names in serde's "unknown field `zz_unknown`, expected …" answer, if that is
/// the answer to `text`.
fn unknown_field_answer(text: &str) -> Option<BTreeSet<String>> {
    let needle = format!("unknown field `{PROBE_KEY}`");
    errors_of(text).into_iter().find_map(|(message, _)| {
        let rest = &message[message.find(&needle)? + needle.len()..];
        // ", expected one of `a`, `b`", ", expected `a` or `b`", ", expected `a`",
        // ", there are no fields".
        Some(
            rest.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        )
    })
}

/// `top = <value>` where the innermost table of the `path` holds the probe key.
fn probe_text(top: &str, top_is_array: bool, path: &[Step], inner: &str) -> String {
    let mut value = inner.to_string();
    for (key, is_array) in path.iter().rev() {
        let v = if *is_array {
            format!("[{value}]")
        } else {
            value
        };
        value = format!("{{ {key} = {v} }}");
    }
    if top_is_array {
        format!("{top} = [{value}]\n")
    } else {
        format!("{top} = {value}\n")
    }
}

/// Every section the parser accepts (dotted path → its keys), by probing.
fn schema_sections() -> BTreeMap<String, BTreeSet<String>> {
    let probe = format!("{{ {PROBE_KEY} = 1 }}");
    // Top-level sections: the "unknown section" help lists them.
    let (_, help) = errors_of(&format!("[{PROBE_KEY}]\n"))
        .into_iter()
        .find(|(m, _)| m.starts_with("unknown section"))
        .expect("an unknown section is reported");
    let tops: Vec<String> = help
        .strip_prefix("sections are: ")
        .unwrap_or_else(|| panic!("unexpected help `{help}`"))
        .split(", ")
        .map(str::to_string)
        .collect();
    assert!(tops.len() >= 10, "{tops:?}");

    let mut sections = BTreeMap::new();
    // (top, top is array, path below top)
    let mut queue: VecDeque<(String, bool, Vec<Step>)> = VecDeque::new();
    for top in &tops {
        let as_table = unknown_field_answer(&probe_text(top, false, &[], &probe));
        let as_array = unknown_field_answer(&probe_text(top, true, &[], &probe));
        let is_array = match (as_table.is_some(), as_array.is_some()) {
            (true, false) => false,
            (false, true) => true,
            other => panic!("section {top}: probe as table/array gave {other:?}"),
        };
        queue.push_back((top.clone(), is_array, Vec::new()));
    }
    // Selectors accept any key (a label), so their structured form is probed on purpose.
    let selector_probe = format!("{{ match_expressions = [{probe}] }}");
    let fields = unknown_field_answer(&probe_text(
        "policy",
        true,
        &[("selector".into(), false)],
        &selector_probe,
    ))
    .expect("match_expressions probe");
    sections.insert("selector.match_expressions".to_string(), fields);

    while let Some((top, top_is_array, path)) = queue.pop_front() {
        let name = std::iter::once(top.as_str())
            .chain(path.iter().map(|(k, _)| k.as_str()))
            .collect::<Vec<_>>()
            .join(".");
        let fields = unknown_field_answer(&probe_text(&top, top_is_array, &path, &probe))
            .unwrap_or_else(|| panic!("section {name}: no unknown-field answer"));
        for field in &fields {
            for is_array in [false, true] {
                let mut sub = path.clone();
                sub.push((field.clone(), is_array));
                if unknown_field_answer(&probe_text(&top, top_is_array, &sub, &probe)).is_some() {
                    queue.push_back((top.clone(), top_is_array, sub));
                    break;
                }
            }
        }
        sections.insert(name, fields);
    }
    sections
}

/// Every section documented in `docs/config.md` (dotted path → its keys).
fn documented_sections(markdown: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Vec<String> = Vec::new();
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            current = heading
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|s| s.trim_matches(['[', ']']).to_string())
                .collect();
            for s in &current {
                assert!(
                    sections.insert(s.clone(), BTreeSet::new()).is_none(),
                    "docs/config.md documents {s} twice"
                );
            }
        } else if line.starts_with("## ") {
            current.clear();
        } else if let Some(row) = line.strip_prefix("| `")
            && !current.is_empty()
        {
            let key = row.split('`').next().unwrap_or_default().to_string();
            for s in &current {
                let keys = sections
                    .get_mut(s)
                    .expect("section inserted at its heading");
                assert!(
                    keys.insert(key.clone()),
                    "docs/config.md lists `{key}` twice in {s}"
                );
            }
        }
    }
    sections
}

fn docs() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_key_the_parser_accepts_is_documented_and_nothing_else() {
    let schema = schema_sections();
    let documented = documented_sections(&docs());
    let mut problems = Vec::new();
    for (section, fields) in &schema {
        match documented.get(section) {
            None => problems.push(format!(
                "section `{section}` (keys {fields:?}) has no `### ` heading in docs/config.md"
            )),
            Some(doc) => {
                for f in fields.difference(doc) {
                    problems.push(format!("{section}: key `{f}` is not documented"));
                }
                for f in doc.difference(fields) {
                    problems.push(format!(
                        "{section}: docs list `{f}`, which the parser does not accept"
                    ));
                }
            }
        }
    }
    for section in documented.keys() {
        if !schema.contains_key(section) {
            problems.push(format!(
                "docs/config.md documents `{section}`, which the parser does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The probe itself finds what it must: the nested sections named in CONTRACT §2.
#[test]
fn probing_discovers_nested_sections() {
    let schema = schema_sections();
    for s in [
        "node",
        "endpoint.ports",
        "service.ports",
        "service.backends",
        "policy.ingress",
        "policy.egress.to",
        "policy.ingress_deny.ports",
        "policy.egress.dns",
        "bgp.neighbor",
        "bgp.advertisement",
        "route.rule.matches.headers",
        "route.rule.retries",
        "selector.match_expressions",
    ] {
        assert!(
            schema.contains_key(s),
            "{s} not found in {:?}",
            schema.keys()
        );
    }
    assert!(schema["service"].contains("type"));
    assert!(schema["policy.ingress.from"].contains("fqdn_pattern"));
}

/// The docs' parser reads headings with several names and ignores prose tables.
#[test]
fn documented_sections_are_read_from_headings_and_tables() {
    let md = "## Intro\n| `not_a_key` | x |\n### `[node]`\n| key | t |\n|---|---|\n| `name` | s |\n\
              ### `a.from`, `b.to`\n| `cidr` | s |\n## Other\n| `stray` | x |\n";
    let got = documented_sections(md);
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(got["node"], set(&["name"]));
    assert_eq!(got["a.from"], set(&["cidr"]));
    assert_eq!(got["b.to"], set(&["cidr"]));
    assert_eq!(got.len(), 3);
}
