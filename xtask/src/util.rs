// SPDX-License-Identifier: Apache-2.0
//! Running tools and reproducible file handling.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs `cmd`, failing with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `SOURCE_DATE_EPOCH`, else the time of the last commit, else 0.
pub fn source_date_epoch() -> u64 {
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return v;
    }
    Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(crate::workspace())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// `date -u` formatted with `fmt` for `epoch` (RFC 2822 for changelogs, ISO dates for man pages).
pub fn format_date(epoch: u64, fmt: &str) -> Result<String> {
    Ok(run(Command::new("date")
        .arg("-u")
        .arg(format!("--date=@{epoch}"))
        .arg(format!("+{fmt}")))?
    .trim()
    .to_string())
}

/// `gzip -9n`: compressed without name or timestamp.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("run gzip")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(data)
        .context("write to gzip")?;
    let out = child.wait_with_output().context("gzip")?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// Sets the mtime of everything under `dir` (and `dir`) to `epoch`, without following links.
pub fn clamp_mtimes(dir: &Path, epoch: u64) -> Result<()> {
    run(Command::new("find")
        .arg(dir)
        .args(["-exec", "touch", "--no-dereference"])
        .arg(format!("--date=@{epoch}"))
        .args(["{}", "+"]))?;
    Ok(())
}

/// Total size in KiB of the files under `dir`, skipping `skip` (dpkg's Installed-Size).
pub fn installed_size_kib(dir: &Path, skip: &str) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == skip {
            continue;
        }
        let meta = entry.path().symlink_metadata()?;
        if meta.is_dir() {
            total += installed_size_kib(&entry.path(), skip)?;
        } else {
            total += meta.len().div_ceil(1024);
        }
    }
    Ok(total)
}
