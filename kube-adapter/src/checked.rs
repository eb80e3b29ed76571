// SPDX-License-Identifier: Apache-2.0
//! Translation checked by `kldnet-config` before anything is written. An object whose
//! TOML the validator rejects (an invalid name, a VIP another service already has, a DNS
//! name it refuses) is taken out and reported as skipped with the validator's message, and
//! the rest is translated again — one bad object never blocks the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kldnet_config::{Diagnostics, Severity};

use crate::model::{ObjRef, Object};
use crate::report::{Report, Status};
use crate::translate::{HEADER, Options, Output, translate};
use crate::write::{concerns, validate};

/// How the sections become files.
#[derive(Clone, Copy, Debug)]
pub enum Layout<'a> {
    /// One `50-kube-<section>.toml` per section in this directory (render).
    Split(&'a Path),
    /// Everything in this one file (watch).
    Combined(&'a Path),
}

/// The prefix of the files of [`Layout::Split`].
pub const FILE_PREFIX: &str = "50-kube-";

/// A file to write: path, text, and (section, line offset of the section's text) pairs.
type Planned = (PathBuf, String, Vec<(&'static str, usize)>);

fn plan(out: &Output, layout: Layout) -> Vec<Planned> {
    let header_lines = HEADER.lines().count();
    match layout {
        Layout::Split(dir) => out
            .files
            .iter()
            .map(|(name, text)| {
                (
                    dir.join(format!("{FILE_PREFIX}{name}.toml")),
                    format!("{HEADER}{text}"),
                    vec![(*name, header_lines)],
                )
            })
            .collect(),
        Layout::Combined(file) => {
            let mut s = String::from(HEADER);
            let mut offsets = Vec::new();
            for (name, text) in &out.files {
                s.push_str(&format!("# --- {name} ---\n\n"));
                offsets.push((*name, s.lines().count()));
                s.push_str(text);
            }
            vec![(file.to_path_buf(), s, offsets)]
        }
    }
}

/// The result of a checked translation.
#[derive(Debug)]
pub struct Checked {
    pub report: Report,
    /// Files to write (path, text), validated together.
    pub files: Vec<(PathBuf, String)>,
    /// Warnings and notes of the validation.
    pub diagnostics: Diagnostics,
}

/// Translates, validates, and retries without the objects the validator rejects. Err: the
/// diagnostics that name no object (a bug in the adapter), with the report so far.
///
/// `others` is the rest of kldnetd's configuration (`--check-with`): an object that clashes
/// with it (a duplicate name, a VIP taken) is skipped like any other rejected object.
pub fn translate_checked(
    objects: &[Object],
    opts: &Options,
    layout: Layout,
    others: &[kldnet_config::SourceFile],
) -> Result<Checked, (Diagnostics, Report)> {
    let mut rejected: BTreeMap<ObjRef, Vec<String>> = BTreeMap::new();
    let mut objs: Vec<Object> = objects.to_vec();
    loop {
        let out = translate(&objs, opts);
        let planned = plan(&out, layout);
        let files: Vec<(PathBuf, String)> = planned
            .iter()
            .map(|(p, t, _)| (p.clone(), t.clone()))
            .collect();
        let finish = |out: Output, rejected: &BTreeMap<ObjRef, Vec<String>>| {
            let mut report = out.report;
            for (r, msgs) in rejected {
                report.push(
                    r.clone(),
                    Status::Skipped(format!(
                        "kldnet's validation rejects its translation: {}",
                        msgs.join("; ")
                    )),
                );
            }
            report
        };
        let d = match validate(&files, others) {
            Ok(diagnostics) => {
                return Ok(Checked {
                    report: finish(out, &rejected),
                    files,
                    diagnostics,
                });
            }
            Err(d) => d,
        };
        let mut new = false;
        for diag in
            d.0.iter()
                .filter(|x| x.severity == Severity::Error)
                .filter(|x| concerns(x, &files))
        {
            let Some(obj) = diag.location.as_ref().and_then(|loc| {
                let (_, _, offsets) = planned.iter().find(|(p, _, _)| *p == loc.file)?;
                let (name, off) = offsets.iter().rev().find(|(_, off)| loc.line > *off)?;
                let line = loc.line - off;
                out.origins
                    .get(name)?
                    .iter()
                    .find(|(a, b, _)| (*a..=*b).contains(&line))
                    .map(|(_, _, o)| o.clone())
            }) else {
                return Err((d.clone(), finish(out, &rejected)));
            };
            let msgs = rejected.entry(obj).or_default();
            if !msgs.contains(&diag.message) {
                msgs.push(diag.message.clone());
                new = true;
            }
        }
        if !new {
            return Err((d, finish(out, &rejected)));
        }
        objs.retain(|o| !rejected.contains_key(&o.obj_ref()));
    }
}
