// SPDX-License-Identifier: Apache-2.0
//! Validating generated TOML with `kldnet-config` and writing it atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kldnet_config::{Diagnostics, SourceFile};

/// Validates `files` (path, text) as one config set. Err: the diagnostics, when any is an error.
pub fn validate(files: &[(PathBuf, String)]) -> Result<Diagnostics, Diagnostics> {
    let (_, diags) = kldnet_config::load_files(
        files
            .iter()
            .map(|(p, t)| SourceFile::new(p.clone(), t.clone()))
            .collect(),
    );
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(diags)
    }
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
