// SPDX-License-Identifier: Apache-2.0
//! The .rpm: packaging/rpm/kldnet.spec over the staged tree, built with rpmbuild (Debian's
//! `rpm` package works). Where systemd-rpm-macros is missing, the same macros are loaded
//! from packaging/rpm/macros.systemd-fallback so the scriptlets match a native build.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::stage::Inputs;
use crate::util::{self, run};

/// The rpm architecture of this machine (x86_64, aarch64).
pub fn architecture() -> Result<String> {
    Ok(run(Command::new("uname").arg("-m"))?.trim().to_string())
}

/// Builds `<out>/kldnet-<version>-1.<arch>.rpm`.
pub fn build(inputs: &Inputs, stage: &Path, work: &Path, out: &Path) -> Result<PathBuf> {
    if !util::have("rpmbuild") {
        bail!("rpmbuild not found: install it (Debian: apt-get install rpm) or pass --no-rpm");
    }
    let arch = architecture()?;
    let top = work.join("rpmbuild");
    let _ = std::fs::remove_dir_all(&top);
    std::fs::create_dir_all(&top)?;
    std::fs::create_dir_all(out)?;
    let pkg = &inputs.root.join("packaging/rpm");
    let mut cmd = Command::new("rpmbuild");
    cmd.env("SOURCE_DATE_EPOCH", inputs.epoch.to_string())
        .arg("-bb");
    // No --target: it makes rpmbuild re-read its configuration, dropping --load macros.
    let have_macros = run(Command::new("rpm").args(["--eval", "%{?systemd_post:yes}"]))
        .map(|s| s.trim() == "yes")
        .unwrap_or(false);
    if !have_macros {
        cmd.arg(format!(
            "--load={}",
            pkg.join("macros.systemd-fallback").display()
        ));
    }
    let defines = [
        ("_topdir", top.display().to_string()),
        ("_rpmdir", out.display().to_string()),
        (
            "_rpmfilename",
            "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm".to_string(),
        ),
        ("stage", stage.display().to_string()),
        ("version", inputs.version.clone()),
        (
            "presetfile",
            pkg.join("80-kldnet.preset").display().to_string(),
        ),
        // Binaries are stripped and man pages compressed by the stage already.
        ("__os_install_post", "%{nil}".to_string()),
        ("debug_package", "%{nil}".to_string()),
        ("_build_id_links", "none".to_string()),
        ("use_source_date_epoch_as_buildtime", "1".to_string()),
        ("clamp_mtime_to_source_date_epoch", "1".to_string()),
        ("_buildhost", "kldnet-build".to_string()),
        ("_binary_payload", "w19.zstdio".to_string()),
    ];
    for (k, v) in defines {
        cmd.arg("--define").arg(format!("{k} {v}"));
    }
    cmd.arg(pkg.join("kldnet.spec"));
    run(&mut cmd).context("rpmbuild")?;
    let rpm = out.join(format!(
        "{}-{}-1.{arch}.rpm",
        crate::PACKAGE,
        inputs.version
    ));
    if !rpm.exists() {
        bail!("rpmbuild did not write {}", rpm.display());
    }
    let _ = std::fs::remove_dir_all(&top);
    Ok(rpm)
}
