// SPDX-License-Identifier: Apache-2.0
//! Label selectors, as in Kubernetes: `{ app = "x" }` (match labels) or
//! `{ match_labels = {…}, match_expressions = [{ key, operator, values }] }`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::types::{Labels, check_label_key, check_label_value};

/// A set-based requirement on one label key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expression {
    pub key: String,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Selector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Expression>,
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator {
                    Operator::In => got.is_some_and(|g| e.values.iter().any(|v| v == g)),
                    Operator::NotIn => got.is_none_or(|g| e.values.iter().all(|v| v != g)),
                    Operator::Exists => got.is_some(),
                    Operator::DoesNotExist => got.is_none(),
                }
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    fn check_expressions(&self) -> Result<(), String> {
        for e in &self.match_expressions {
            check_label_key(&e.key)?;
            match e.operator {
                Operator::In | Operator::NotIn if e.values.is_empty() => {
                    return Err(format!(
                        "match expression on `{}` with operator {:?} needs at least one value",
                        e.key, e.operator
                    ));
                }
                Operator::Exists | Operator::DoesNotExist if !e.values.is_empty() => {
                    return Err(format!(
                        "match expression on `{}` with operator {:?} takes no values",
                        e.key, e.operator
                    ));
                }
                _ => {}
            }
            for v in &e.values {
                check_label_value(&e.key, v)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for e in &self.match_expressions {
            parts.push(match e.operator {
                Operator::In => format!("{} in ({})", e.key, e.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", e.key, e.values.join(",")),
                Operator::Exists => e.key.clone(),
                Operator::DoesNotExist => format!("!{}", e.key),
            });
        }
        if parts.is_empty() {
            f.write_str("{}")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SelectorVisitor)
    }
}

struct SelectorVisitor;

impl<'de> Visitor<'de> for SelectorVisitor {
    type Value = Selector;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a label selector: { key = \"value\", … } or { match_labels = {…}, match_expressions = […] }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Selector, A::Error> {
        use serde::de::Error;
        let mut plain = BTreeMap::new();
        let mut sel = Selector::default();
        let mut structured = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "match_labels" => {
                    structured = true;
                    sel.match_labels = map.next_value()?;
                }
                "match_expressions" => {
                    structured = true;
                    sel.match_expressions = map.next_value()?;
                }
                _ => {
                    let v: String = map.next_value()?;
                    check_label_key(&key).map_err(A::Error::custom)?;
                    check_label_value(&key, &v).map_err(A::Error::custom)?;
                    plain.insert(key, v);
                }
            }
        }
        if structured && !plain.is_empty() {
            return Err(A::Error::custom(
                "a selector uses either plain labels or match_labels/match_expressions, not both",
            ));
        }
        if !structured {
            sel.match_labels = Labels(plain);
        }
        sel.check_expressions().map_err(A::Error::custom)?;
        Ok(sel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn sel(s: &str) -> Selector {
        #[derive(Deserialize)]
        struct W {
            s: Selector,
        }
        toml::from_str::<W>(&format!("s = {s}")).unwrap().s
    }

    #[test]
    fn plain_and_structured_forms() {
        let l = labels(&[("app", "web"), ("tier", "api")]);
        assert!(sel(r#"{ app = "web" }"#).matches(&l));
        assert!(!sel(r#"{ app = "db" }"#).matches(&l));
        assert!(sel("{}").matches(&l));
        let s = sel(
            r#"{ match_expressions = [{ key = "tier", operator = "In", values = ["api", "x"] }] }"#,
        );
        assert!(s.matches(&l));
        assert!(
            sel(r#"{ match_expressions = [{ key = "env", operator = "DoesNotExist" }] }"#)
                .matches(&l)
        );
        assert!(
            !sel(
                r#"{ match_expressions = [{ key = "app", operator = "NotIn", values = ["web"] }] }"#
            )
            .matches(&l)
        );
        assert!(sel(r#"{ match_labels = { app = "web" }, match_expressions = [{ key = "tier", operator = "Exists" }] }"#).matches(&l));
    }

    #[test]
    fn bad_selectors_are_rejected() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct W {
            s: Selector,
        }
        for bad in [
            r#"{ app = "x", match_labels = { a = "b" } }"#,
            r#"{ match_expressions = [{ key = "a", operator = "In" }] }"#,
            r#"{ match_expressions = [{ key = "a", operator = "Exists", values = ["x"] }] }"#,
            r#"{ match_expressions = [{ key = "a", operator = "Like", values = ["x"] }] }"#,
            r#"{ app = 3 }"#,
        ] {
            assert!(toml::from_str::<W>(&format!("s = {bad}")).is_err(), "{bad}");
        }
    }
}
