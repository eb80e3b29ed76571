// SPDX-License-Identifier: Apache-2.0
//! Build tasks for kldnet: man pages and completions generated from the clap definitions,
//! the staged install tree, and the .deb (dpkg-deb) and .rpm (rpmbuild) built from it.
//!
//! Builds are reproducible: every timestamp is `SOURCE_DATE_EPOCH` (default: the last
//! commit's time), owners are root, files are sorted.

pub mod deb;
pub mod dist;
pub mod docs;
pub mod rpm;
pub mod stage;
pub mod util;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The version packaged (the workspace version).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The package name.
pub const PACKAGE: &str = "kldnet";
/// Maintainer field of both packages.
pub const MAINTAINER: &str = "kldnet developers <kldnet@example.invalid>";
/// One-line summary.
pub const SUMMARY: &str = "eBPF host dataplane: service load balancing and network policy";
