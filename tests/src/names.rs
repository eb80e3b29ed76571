// SPDX-License-Identifier: Apache-2.0
//! Unique, short resource names shared by every sandbox in this process.
//!
//! Names carry the process id plus a per-process counter, so parallel tests (threads) and
//! parallel test binaries (processes) never collide.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh `<pid>-<n>` token, unique on this machine while this process lives.
pub(crate) fn unique_token() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Checks that `s` is a short `[A-Za-z0-9_-]+` token safe for netns and file names.
pub(crate) fn check_token(what: &str, s: &str, max_len: usize) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && s.len() <= max_len
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    anyhow::ensure!(
        ok,
        "invalid {what} {s:?}: use 1..={max_len} characters from [A-Za-z0-9_-]"
    );
    Ok(())
}

/// Replaces anything outside `[A-Za-z0-9_-]` by `_` and truncates to `max_len`.
pub(crate) fn sanitize(s: &str, max_len: usize) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(max_len)
        .collect();
    if out.is_empty() {
        "sbx".to_string()
    } else {
        out
    }
}
