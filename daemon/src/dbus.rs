// SPDX-License-Identifier: Apache-2.0
//! The D-Bus front end `org.kldload.Kldnet1` (not built yet: a no-op).

use crate::daemon::Frontends;

/// Starts serving on `bus` ("system", "none" or an address); `None` when off.
pub async fn start(bus: &str, frontends: Frontends) -> Option<()> {
    let _ = (bus, frontends);
    None
}
