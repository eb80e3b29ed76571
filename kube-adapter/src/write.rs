// SPDX-License-Identifier: Apache-2.0
//! Validating generated TOML with `kldnet-config` and writing it atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kldnet_config::{Diagnostics, SourceFile};

/// Validates `files` (path, text) as one config set together with `others` (the rest of
/// the daemon's configuration, see [`read_others`]), which come first so that a clash
/// between the two is reported at the adapter's side. Err: the diagnostics, when an error
/// is in `files` or belongs to no file; errors inside `others` alone are not the adapter's
/// to fix and only come back in the Ok diagnostics.
pub fn validate(
    files: &[(PathBuf, String)],
    others: &[SourceFile],
) -> Result<Diagnostics, Diagnostics> {
    let mut all: Vec<SourceFile> = others.to_vec();
    all.extend(
        files
            .iter()
            .map(|(p, t)| SourceFile::new(p.clone(), t.clone())),
    );
    let (_, diags) = kldnet_config::load_files(all);
    if diags
        .0
        .iter()
        .any(|d| d.severity == kldnet_config::Severity::Error && concerns(d, files))
    {
        Err(diags)
    } else {
        Ok(diags)
    }
}

/// Is `d` about the adapter's `files` (or about no file at all)?
pub fn concerns(d: &kldnet_config::Diagnostic, files: &[(PathBuf, String)]) -> bool {
    d.location
        .as_ref()
        .is_none_or(|l| files.iter().any(|(p, _)| *p == l.file))
}

/// The configuration files kldnetd reads from `dirs` (same masking rules), minus the files
/// the adapter writes (`own`: paths, or the directory of split output).
pub fn read_others(dirs: &[PathBuf], own: impl Fn(&Path) -> bool) -> Vec<SourceFile> {
    let (files, _) = kldnet_config::source::read_config_dirs(dirs);
    files.into_iter().filter(|f| !own(&f.path)).collect()
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, never a part. The temporary name starts with `.`
/// (kldnetd ignores such files). Returns false when the file already held `text`.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("output path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("write {}", path.display()));
    }
    Ok(true)
}
