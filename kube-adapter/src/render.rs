// SPDX-License-Identifier: Apache-2.0
//! Offline mode: manifests → `50-kube-*.toml` in a directory.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::checked::{Checked, FILE_PREFIX, Layout, translate_checked};
use crate::manifest;
use crate::report::Report;
use crate::translate::Options;
use crate::write::{read_others, write_atomic};

/// What a render did.
#[derive(Debug)]
pub struct Rendered {
    pub report: Report,
    /// Files written or left as they were, in name order.
    pub files: Vec<PathBuf>,
    /// Warnings and notes of the validation.
    pub diagnostics: kldnet_config::Diagnostics,
}

/// Why a render wrote nothing.
#[derive(Debug)]
pub enum RenderError {
    Io(anyhow::Error),
    /// The generated TOML does not validate (a bug, or objects that contradict each other,
    /// e.g. two services with one VIP): the diagnostics, and the report so far.
    Invalid(kldnet_config::Diagnostics, Report),
}

/// Reads `inputs`, translates, validates (with the configuration in `check_with`, whose
/// `50-kube-*` files in `out_dir` are the ones being replaced), writes into `out_dir`.
pub fn render(
    inputs: &[PathBuf],
    out_dir: &Path,
    opts: &Options,
    default_namespace: &str,
    check_with: &[PathBuf],
) -> Result<Rendered, RenderError> {
    let m = manifest::read(inputs, default_namespace)
        .context("read manifests")
        .map_err(RenderError::Io)?;
    let mut report = Report::default();
    report.objects.extend(m.unreadable);
    let own = |p: &Path| {
        p.parent() == Some(out_dir)
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(FILE_PREFIX))
    };
    let others = read_others(check_with, own);
    let checked = match translate_checked(&m.objects, opts, Layout::Split(out_dir), &others) {
        Ok(c) => c,
        Err((d, mut r)) => {
            report.objects.append(&mut r.objects);
            return Err(RenderError::Invalid(d, report));
        }
    };
    let Checked {
        report: mut r,
        files,
        diagnostics,
    } = checked;
    report.objects.append(&mut r.objects);
    let io = |e| RenderError::Io(e);
    for (path, text) in &files {
        write_atomic(path, text).map_err(io)?;
    }
    // Remove what an earlier render wrote and this one did not.
    if let Ok(entries) = std::fs::read_dir(out_dir) {
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(FILE_PREFIX)
                && name.ends_with(".toml")
                && !files.iter().any(|(f, _)| *f == p)
            {
                std::fs::remove_file(&p)
                    .with_context(|| format!("remove stale {}", p.display()))
                    .map_err(io)?;
            }
        }
    }
    Ok(Rendered {
        report,
        files: files.into_iter().map(|(p, _)| p).collect(),
        diagnostics,
    })
}
