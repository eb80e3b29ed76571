// SPDX-License-Identifier: Apache-2.0
//! `kldnet check`: validate and compile offline, print every diagnostic.

use std::path::PathBuf;

use kldnet_config::{DEFAULT_CONFIG_DIRS, Diagnostics};

use crate::compile::{self, Allocations, Environment};

use super::{EXIT_FAILURE, EXIT_OK};

/// Everything `check` finds: config diagnostics, then compile ones (capacity).
pub fn check_dirs(dirs: &[PathBuf]) -> (Diagnostics, Option<compile::Compiled>) {
    let (spec, mut diags) = kldnet_config::load_dirs(dirs);
    if diags.has_errors() {
        return (diags, None);
    }
    let env = Environment {
        hostname: crate::daemon::hostname(),
        offline: true,
        ..Environment::default()
    };
    let compiled = compile::compile(&spec, &env, &Allocations::default());
    diags.0.extend(compiled.diagnostics.iter().cloned());
    diags.sort();
    (diags, Some(compiled))
}

pub fn run(mut dirs: Vec<PathBuf>, dump: bool) -> i32 {
    if dirs.is_empty() {
        dirs = DEFAULT_CONFIG_DIRS.iter().map(PathBuf::from).collect();
    }
    let (diags, compiled) = check_dirs(&dirs);
    print!("{diags}");
    if dump && let Some(c) = &compiled {
        print!("{}", compile::dump::dump(&c.state));
    }
    println!("{}", diags.summary());
    if diags.has_errors() {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}
