// SPDX-License-Identifier: Apache-2.0
//! `cargo xtask dist`: release build → stage → .deb and .rpm in target/dist.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::stage::{self, Inputs};
use crate::util::{self, run};

/// What `dist` does.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Package these binaries instead of building target/release.
    pub bin_dir: Option<PathBuf>,
    /// Default: `<target>/dist`.
    pub out: Option<PathBuf>,
    /// Also build the .rpm.
    pub rpm: bool,
}

/// `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target"))
}

/// `cargo build --release` of the packaged binaries (a no-op when fresh).
pub fn build_release() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).current_dir(crate::workspace()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "kldnet",
        "-p",
        "kldnet-kube-adapter",
    ]))?;
    Ok(target_dir().join("release"))
}

/// Builds the packages; returns their paths.
pub fn dist(opts: &Options) -> Result<Vec<PathBuf>> {
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => build_release()?,
    };
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("dist"));
    let inputs = Inputs {
        root: crate::workspace(),
        bin_dir,
        version: crate::version().to_string(),
        epoch: util::source_date_epoch(),
    };
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let staged = work.join("stage");
    stage::stage(&inputs, &staged)?;
    let mut built = vec![crate::deb::build(&inputs, &staged, &work, &out)?];
    if opts.rpm {
        built.push(crate::rpm::build(&inputs, &staged, &work, &out)?);
    }
    remove(&work)?;
    Ok(built)
}

fn remove(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
