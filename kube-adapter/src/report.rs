// SPDX-License-Identifier: Apache-2.0
//! What happened to each input object: translated, translated in part, skipped, or ignored
//! (not a networking kind). Nothing is dropped without an entry here.

use std::fmt;

use crate::model::ObjRef;

/// The outcome for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Fully translated.
    Translated,
    /// Translated, but the listed parts were left out or widened (each says why).
    Partial(Vec<String>),
    /// Not translated; why.
    Skipped(String),
    /// Not a kind kldnet acts on (Deployments, ConfigMaps…), or consumed by another object
    /// (CiliumCIDRGroup, EndpointSlices of selector services); why.
    Ignored(String),
}

/// One entry per input object, in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub objects: Vec<(ObjRef, Status)>,
}

impl Report {
    pub fn push(&mut self, obj: ObjRef, status: Status) {
        self.objects.push((obj, status));
    }

    /// Whether any object was skipped or only partly translated (render's exit code 3).
    pub fn lossy(&self) -> bool {
        self.objects
            .iter()
            .any(|(_, s)| matches!(s, Status::Partial(_) | Status::Skipped(_)))
    }

    /// Counts: (translated, partial, skipped, ignored).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for (_, s) in &self.objects {
            match s {
                Status::Translated => c.0 += 1,
                Status::Partial(_) => c.1 += 1,
                Status::Skipped(_) => c.2 += 1,
                Status::Ignored(_) => c.3 += 1,
            }
        }
        c
    }

    /// The lines printed for skipped, partial and (with `verbose`) the other objects.
    pub fn lines(&self, verbose: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (o, s) in &self.objects {
            match s {
                Status::Skipped(why) => out.push(format!("{o}: skipped: {why}")),
                Status::Partial(parts) => {
                    for p in parts {
                        out.push(format!("{o}: partial: {p}"));
                    }
                }
                Status::Ignored(why) if verbose => out.push(format!("{o}: ignored: {why}")),
                Status::Translated if verbose => out.push(format!("{o}: translated")),
                _ => {}
            }
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in self.lines(false) {
            writeln!(f, "{l}")?;
        }
        let (t, p, s, i) = self.counts();
        write!(
            f,
            "{t} translated, {p} partially translated, {s} skipped, {i} ignored"
        )
    }
}
