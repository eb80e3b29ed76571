// SPDX-License-Identifier: Apache-2.0
//! Watches the config dirs (inotify through `notify`) and debounces bursts of events.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Starts watching; the receiver gets `()` per relevant change. Keep the watcher alive.
pub fn watch(dirs: &[PathBuf]) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(64);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && ev
                .paths
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "toml"))
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.try_send(());
        }
    })
    .context("start file watcher")?;
    for dir in dirs {
        if dir.is_dir() {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("watch {}", dir.display()))?;
        }
    }
    Ok((watcher, rx))
}

/// Waits until no event arrived for `quiet`, draining the ones that did.
pub async fn settle(rx: &mut mpsc::Receiver<()>, quiet: Duration) {
    while let Ok(Some(())) = tokio::time::timeout(quiet, rx.recv()).await {}
}
