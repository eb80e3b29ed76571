// SPDX-License-Identifier: Apache-2.0
//! kldnet's configuration language: config dirs of TOML files → a validated [`Spec`], or
//! every problem at once as `FILE:LINE:COL: error: …` diagnostics.
//!
//! Pure: reads files, never touches the kernel. Shared by the daemon, the CLI's offline
//! commands and the kube-adapter.

pub mod diag;
pub mod load;
pub mod schema;
pub mod selector;
pub mod source;
pub mod spec;
pub mod types;
pub mod validate;

use std::path::PathBuf;

pub use diag::{Diagnostic, Diagnostics, Location, Severity};
pub use load::{ParsedFile, parse_file};
pub use source::SourceFile;
pub use spec::{Located, Meta, Spec};

/// The daemon's default config dirs, highest precedence first.
pub const DEFAULT_CONFIG_DIRS: &[&str] = &["/etc/kldnet", "/run/kldnet"];

/// Reads, parses and validates the config dirs. The spec is usable when
/// `!diagnostics.has_errors()`.
pub fn load_dirs(dirs: &[PathBuf]) -> (Spec, Diagnostics) {
    load_dirs_cached(dirs, &mut ParseCache::default())
}

/// Parse results of files whose text has not changed since the last load, so a reload
/// after editing one file re-parses only that file.
#[derive(Debug, Default)]
pub struct ParseCache {
    files: std::collections::HashMap<PathBuf, std::sync::Arc<ParsedFile>>,
    last_parsed_bytes: usize,
}

impl ParseCache {
    /// Bytes of text the last load had to parse (files new or changed since the one before).
    pub fn last_parsed_bytes(&self) -> usize {
        self.last_parsed_bytes
    }
}

/// [`load_dirs`] reusing (and refreshing) `cache`.
pub fn load_dirs_cached(dirs: &[PathBuf], cache: &mut ParseCache) -> (Spec, Diagnostics) {
    let (files, mut diags) = source::read_config_dirs(dirs);
    let mut parsed = Vec::with_capacity(files.len());
    let mut fresh = std::collections::HashMap::new();
    cache.last_parsed_bytes = 0;
    for file in files {
        let p = match cache.files.remove(&file.path) {
            Some(hit) if hit.file.text == file.text => hit,
            _ => {
                cache.last_parsed_bytes += file.text.len();
                std::sync::Arc::new(parse_file(file))
            }
        };
        fresh.insert(p.file.path.clone(), std::sync::Arc::clone(&p));
        parsed.push(p);
    }
    cache.files = fresh;
    let spec = load::merge(&parsed, &mut diags);
    validate::validate(&spec, &mut diags);
    let mut diags = Diagnostics(diags);
    diags.sort();
    (spec, diags)
}

/// Parses and validates in-memory files (tests, the kube-adapter).
pub fn load_files(files: Vec<SourceFile>) -> (Spec, Diagnostics) {
    let mut diags = Vec::new();
    let parsed: Vec<std::sync::Arc<ParsedFile>> = files
        .into_iter()
        .map(|f| std::sync::Arc::new(parse_file(f)))
        .collect();
    let spec = load::merge(&parsed, &mut diags);
    validate::validate(&spec, &mut diags);
    let mut diags = Diagnostics(diags);
    diags.sort();
    (spec, diags)
}
