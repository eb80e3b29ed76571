// SPDX-License-Identifier: Apache-2.0
//! kldnet's configuration language: config dirs of TOML files → a validated [`Spec`], or
//! every problem at once as `FILE:LINE:COL: error: …` diagnostics.
//!
//! Pure: reads files, never touches the kernel. Shared by the daemon, the CLI's offline
//! commands and the kube-adapter.

pub mod diag;
mod load;
pub mod schema;
pub mod selector;
pub mod source;
pub mod spec;
pub mod types;
pub mod validate;

use std::path::PathBuf;

pub use diag::{Diagnostic, Diagnostics, Location, Severity};
pub use source::SourceFile;
pub use spec::{Located, Meta, Spec};

/// The daemon's default config dirs, highest precedence first.
pub const DEFAULT_CONFIG_DIRS: &[&str] = &["/etc/kldnet", "/run/kldnet"];

/// Reads, parses and validates the config dirs. The spec is usable when
/// `!diagnostics.has_errors()`.
pub fn load_dirs(dirs: &[PathBuf]) -> (Spec, Diagnostics) {
    let (files, mut diags) = source::read_config_dirs(dirs);
    let spec = parse(files, &mut diags);
    let mut diags = Diagnostics(diags);
    diags.sort();
    (spec, diags)
}

/// Parses and validates in-memory files (tests, the kube-adapter).
pub fn load_files(files: Vec<SourceFile>) -> (Spec, Diagnostics) {
    let mut diags = Vec::new();
    let spec = parse(files, &mut diags);
    let mut diags = Diagnostics(diags);
    diags.sort();
    (spec, diags)
}

fn parse(files: Vec<SourceFile>, diags: &mut Vec<Diagnostic>) -> Spec {
    let spec = load::parse_files(files, diags);
    validate::validate(&spec, diags);
    spec
}
