// SPDX-License-Identifier: Apache-2.0
//! Privilege checks: end-to-end tests need root (netns, cgroup, bpffs) and skip politely without it.

/// True when the effective user id is 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns true (and says why on stderr) when `test` must be skipped because we are not root.
///
/// Use as `if skip_unless_root("my_test") { return; }` at the top of an end-to-end test.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root (run as root or via .ci/run)");
    true
}
