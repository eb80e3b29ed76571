// SPDX-License-Identifier: Apache-2.0
//! The install tree both packages are made from: every file at its final path, root-owned
//! modes, stripped binaries, generated man pages and completions, reproducible mtimes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{self, run};

/// Where the pieces come from.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The workspace root (units, docs, examples, packaging/).
    pub root: PathBuf,
    /// Holds kldnetd, kldnet and kldnet-kube-adapter (target/release).
    pub bin_dir: PathBuf,
    pub version: String,
    pub epoch: u64,
}

/// Binaries: (name in bin_dir, install path).
pub const BINARIES: &[(&str, &str)] = &[
    ("kldnetd", "usr/sbin/kldnetd"),
    ("kldnet", "usr/bin/kldnet"),
    ("kldnet-kube-adapter", "usr/bin/kldnet-kube-adapter"),
];

/// The conffile (/etc, kept on upgrade when edited).
pub const CONFFILE: &str = "etc/kldnet/kldnet.toml";
/// Where the examples go (`kldnet demo` looks there).
pub const EXAMPLES_DIR: &str = "usr/share/doc/kldnet/examples/etc/kldnet";
/// The documentation dir.
pub const DOC_DIR: &str = "usr/share/doc/kldnet";

fn mkdirs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// Writes `data` at `dest/rel` with `mode`.
fn put(dest: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = dest.join(rel);
    mkdirs(path.parent().expect("file has a parent"))?;
    std::fs::write(&path, data).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy(dest: &Path, rel: &str, src: &Path, mode: u32) -> Result<()> {
    let data = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    put(dest, rel, &data, mode)
}

/// Every dir 0755 (create_dir_all honours the umask).
fn fix_dir_modes(dir: &Path) -> Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fix_dir_modes(&e.path())?;
        }
    }
    Ok(())
}

fn changelog(inputs: &Inputs) -> Result<String> {
    let date = util::format_date(inputs.epoch, "%a, %d %b %Y %H:%M:%S +0000")?;
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&inputs.root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    Ok(format!(
        "{pkg} ({v}-1) unstable; urgency=medium\n\n  * Upstream release {v} (git {commit}).\n\n -- {m}  {date}\n",
        pkg = crate::PACKAGE,
        v = inputs.version,
        m = crate::MAINTAINER,
    ))
}

/// Builds the install tree in `dest` (which must not exist).
pub fn stage(inputs: &Inputs, dest: &Path) -> Result<()> {
    let root = &inputs.root;
    mkdirs(dest)?;
    for (name, path) in BINARIES {
        let src = inputs.bin_dir.join(name);
        copy(dest, path, &src, 0o755)?;
        // What dh_strip does: no debug info, no .comment/.note sections.
        run(Command::new("strip")
            .args([
                "--remove-section=.comment",
                "--remove-section=.note",
                "--strip-unneeded",
            ])
            .arg(dest.join(path)))?;
    }
    for unit in ["kldnetd.service", "kldnet-kube-adapter.service"] {
        copy(
            dest,
            &format!("usr/lib/systemd/system/{unit}"),
            &root.join("systemd").join(unit),
            0o644,
        )?;
    }
    copy(
        dest,
        "usr/share/dbus-1/system.d/org.kldload.Kldnet1.conf",
        &root.join("systemd/org.kldload.Kldnet1.conf"),
        0o644,
    )?;
    copy(
        dest,
        "usr/lib/sysusers.d/kldnet.conf",
        &root.join("packaging/common/kldnet.sysusers"),
        0o644,
    )?;
    copy(
        dest,
        CONFFILE,
        &root.join("packaging/common/kldnet.toml"),
        0o644,
    )?;

    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples/etc/kldnet"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    examples.sort();
    for ex in examples
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let name = ex.file_name().expect("file name").to_string_lossy();
        copy(dest, &format!("{EXAMPLES_DIR}/{name}"), ex, 0o644)?;
    }
    for (src, name) in [
        ("README.md", "README.md"),
        ("docs/config.md", "config.md"),
        ("docs/operations.md", "operations.md"),
        ("docs/install.md", "install.md"),
    ] {
        if root.join(src).exists() {
            copy(dest, &format!("{DOC_DIR}/{name}"), &root.join(src), 0o644)?;
        }
    }
    copy(
        dest,
        &format!("{DOC_DIR}/copyright"),
        &root.join("packaging/common/copyright"),
        0o644,
    )?;
    put(
        dest,
        &format!("{DOC_DIR}/changelog.Debian.gz"),
        &util::gzip(changelog(inputs)?.as_bytes())?,
        0o644,
    )?;

    let date = util::format_date(inputs.epoch, "%Y-%m-%d")?;
    for (name, text) in crate::docs::man_pages(&inputs.version, Some(&date))? {
        put(
            dest,
            &format!("usr/share/man/man8/{name}.gz"),
            &util::gzip(&text)?,
            0o644,
        )?;
    }
    for c in crate::docs::completions()? {
        let dir = match c.shell {
            clap_complete::Shell::Bash => "usr/share/bash-completion/completions",
            clap_complete::Shell::Zsh => "usr/share/zsh/vendor-completions",
            _ => "usr/share/fish/vendor_completions.d",
        };
        put(dest, &format!("{dir}/{}", c.file_name), &c.text, 0o644)?;
    }
    fix_dir_modes(dest)?;
    util::clamp_mtimes(dest, inputs.epoch)?;
    Ok(())
}
