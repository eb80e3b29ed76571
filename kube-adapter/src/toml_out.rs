// SPDX-License-Identifier: Apache-2.0
//! A small, deterministic TOML writer for kldnet sections: scalars and inline tables on
//! one line each, rule lists (`[[policy.ingress]]`, `[[bgp.neighbor]]`) as sub-tables.
//!
//! Hand-written rather than serde so the output reads like the examples in
//! `docs/config.md` (labels and ports inline) and is stable for golden tests.

use std::fmt::Write;

/// A TOML value.
#[derive(Clone, Debug, PartialEq)]
pub enum V {
    S(String),
    I(i64),
    B(bool),
    A(Vec<V>),
    T(Table),
}

/// An ordered table: keys are written in insertion order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table(pub Vec<(String, V)>);

impl Table {
    pub fn new() -> Table {
        Table(Vec::new())
    }

    /// Adds `key = value`.
    pub fn set(&mut self, key: &str, v: impl Into<V>) -> &mut Table {
        self.0.push((key.to_string(), v.into()));
        self
    }

    /// Adds `key = value` when `v` is `Some`.
    pub fn opt(&mut self, key: &str, v: Option<impl Into<V>>) -> &mut Table {
        if let Some(v) = v {
            self.set(key, v);
        }
        self
    }

    /// Adds `key = [..]` when the list is not empty.
    pub fn list(&mut self, key: &str, v: Vec<V>) -> &mut Table {
        if !v.is_empty() {
            self.set(key, V::A(v));
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::S(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V::S(s)
    }
}
impl From<&String> for V {
    fn from(s: &String) -> V {
        V::S(s.clone())
    }
}
impl From<bool> for V {
    fn from(b: bool) -> V {
        V::B(b)
    }
}
impl From<u16> for V {
    fn from(n: u16) -> V {
        V::I(n.into())
    }
}
impl From<u32> for V {
    fn from(n: u32) -> V {
        V::I(n.into())
    }
}
impl From<i32> for V {
    fn from(n: i32) -> V {
        V::I(n.into())
    }
}
impl From<Table> for V {
    fn from(t: Table) -> V {
        V::T(t)
    }
}
impl From<Vec<V>> for V {
    fn from(a: Vec<V>) -> V {
        V::A(a)
    }
}

/// A quoted TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key, bare when TOML allows it.
pub fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

/// The value on one line (inline tables and arrays).
pub fn inline(v: &V) -> String {
    match v {
        V::S(s) => quote(s),
        V::I(n) => n.to_string(),
        V::B(b) => b.to_string(),
        V::A(items) => {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        V::T(t) if t.is_empty() => "{}".to_string(),
        V::T(t) => {
            let parts: Vec<String> =
                t.0.iter()
                    .map(|(k, v)| format!("{} = {}", key(k), inline(v)))
                    .collect();
            format!("{{ {} }}", parts.join(", "))
        }
    }
}

/// Whether `v` is a non-empty array of tables (written as `[[a.b]]` sub-tables).
fn is_table_array(v: &V) -> bool {
    matches!(v, V::A(items) if !items.is_empty() && items.iter().all(|i| matches!(i, V::T(_))))
}

/// Writes `t` under `header` (`[node]` or `[[endpoint]]`). Fields listed in `sub` that hold
/// arrays of tables become `[[header.field]]` blocks after the plain keys.
pub fn section(out: &mut String, header: &str, array: bool, t: &Table, sub: &[&str]) {
    if array {
        let _ = writeln!(out, "[[{header}]]");
    } else {
        let _ = writeln!(out, "[{header}]");
    }
    let mut deferred = Vec::new();
    for (k, v) in &t.0 {
        if sub.contains(&k.as_str()) && is_table_array(v) {
            deferred.push((k, v));
        } else {
            let _ = writeln!(out, "{} = {}", key(k), inline(v));
        }
    }
    for (k, v) in deferred {
        if let V::A(items) = v {
            for item in items {
                if let V::T(rule) = item {
                    let _ = writeln!(out, "[[{header}.{k}]]");
                    for (rk, rv) in &rule.0 {
                        let _ = writeln!(out, "{} = {}", key(rk), inline(rv));
                    }
                }
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys_are_quoted_when_needed() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(key("app"), "app");
        assert_eq!(key("kubernetes.io/name"), r#""kubernetes.io/name""#);
    }

    #[test]
    fn sections_put_rule_lists_last() {
        let mut rule = Table::new();
        rule.set(
            "ports",
            V::A(vec![V::T(Table(vec![("port".into(), V::I(80))]))]),
        );
        let mut t = Table::new();
        t.set("name", "p")
            .set("ingress", V::A(vec![V::T(rule), V::T(Table::new())]));
        t.set("selector", Table::new());
        let mut out = String::new();
        section(&mut out, "policy", true, &t, &["ingress"]);
        assert_eq!(
            out,
            "[[policy]]\nname = \"p\"\nselector = {}\n[[policy.ingress]]\nports = [{ port = 80 }]\n[[policy.ingress]]\n\n"
        );
    }
}
