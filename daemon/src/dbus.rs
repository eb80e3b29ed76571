// SPDX-License-Identifier: Apache-2.0
//! The D-Bus front end: `org.kldload.Kldnet1` at `/org/kldload/Kldnet1`.
//!
//! A thin adapter over the same API as the Unix socket: every method call becomes an
//! [`api::Request`](crate::api::Request) sent through [`Frontends::calls`], answered by the
//! daemon's main loop. Properties are a cache refreshed from `Status` after every reload
//! (heard on [`Frontends::reloaded`]), so `PropertiesChanged` is emitted for what changed and
//! reading a property never waits for the main loop. Who may call methods is decided by the bus
//! policy `org.kldload.Kldnet1.conf` (root and group `kldnet`), not here.
//!
//! D-Bus is optional: when the bus is absent or refuses us, the daemon logs why and serves on
//! its socket alone.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::{fdo, interface};

use crate::api::{ReloadResult, Request, Response, Status};
use crate::daemon::{ApiCall, Frontends};

/// The well-known bus name (and interface name).
pub const NAME: &str = "org.kldload.Kldnet1";
/// The object path of the one object.
pub const PATH: &str = "/org/kldload/Kldnet1";
/// Where the system bus listens when there is one.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// Connecting, authenticating and owning the name must not hold up the daemon for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A reload of a large config may take a while; the main loop answers every call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Which bus `--dbus` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusChoice {
    /// No D-Bus front end.
    Off,
    /// The system bus.
    System,
    /// A bus at this D-Bus address (`unix:path=…`).
    Address(String),
}

/// Interprets `--dbus`: "none" → off; "system" → the system bus when it exists
/// (`DBUS_SYSTEM_BUS_ADDRESS` set or [`SYSTEM_BUS_SOCKET`] present), else off with the reason;
/// anything else is a bus address.
pub fn choose_bus(bus: &str, system_bus_present: bool) -> Result<BusChoice, String> {
    match bus {
        "none" | "" => Ok(BusChoice::Off),
        "system" if system_bus_present => Ok(BusChoice::System),
        "system" => Err(format!(
            "no system bus ({SYSTEM_BUS_SOCKET} missing): D-Bus interface {NAME} off"
        )),
        address => Ok(BusChoice::Address(address.to_string())),
    }
}

fn system_bus_present() -> bool {
    std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_some()
        || std::path::Path::new(SYSTEM_BUS_SOCKET).exists()
}

/// The running front end; dropping it leaves the bus.
#[derive(Debug)]
pub struct DbusService {
    connection: zbus::Connection,
    refresher: tokio::task::JoinHandle<()>,
}

impl DbusService {
    /// The bus connection (for tests and diagnostics).
    pub fn connection(&self) -> &zbus::Connection {
        &self.connection
    }
}

impl Drop for DbusService {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Starts serving on `bus` ("system", "none" or an address); `None` when off or when the bus
/// cannot be used (logged: the daemon works without D-Bus).
///
/// Must not wait for the main loop: it runs before the loop does. The first property refresh
/// happens in the background once the loop answers.
pub async fn start(bus: &str, frontends: Frontends) -> Option<DbusService> {
    let choice = match choose_bus(bus, system_bus_present()) {
        Ok(BusChoice::Off) => return None,
        Ok(choice) => choice,
        Err(why) => {
            tracing::info!("{why}");
            return None;
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect(&choice, frontends)).await {
        Ok(Ok(service)) => {
            tracing::info!(
                "D-Bus: serving {NAME} at {PATH} on the {} bus",
                describe(&choice)
            );
            Some(service)
        }
        Ok(Err(e)) => {
            tracing::warn!(
                "D-Bus: cannot serve {NAME} on the {} bus: {e} (is {} installed in /usr/share/dbus-1/system.d and dbus reloaded?); serving on the socket only",
                describe(&choice),
                policy_file_name()
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                "D-Bus: the {} bus did not answer within {CONNECT_TIMEOUT:?}; serving on the socket only",
                describe(&choice)
            );
            None
        }
    }
}

fn policy_file_name() -> String {
    format!("{NAME}.conf")
}

fn describe(choice: &BusChoice) -> String {
    match choice {
        BusChoice::Off => "no".into(),
        BusChoice::System => "system".into(),
        BusChoice::Address(a) => a.clone(),
    }
}

async fn connect(choice: &BusChoice, frontends: Frontends) -> zbus::Result<DbusService> {
    let builder = match choice {
        BusChoice::Address(address) => zbus::connection::Builder::address(address.as_str()),
        _ => zbus::connection::Builder::system(),
    };
    // Subscribe before anything can reload, so no reload goes unsignalled.
    let reloaded = frontends.reloaded.subscribe();
    let iface = Kldnet1 {
        calls: frontends.calls.clone(),
        props: Props::starting(),
    };
    let connection = builder.serve_at(PATH, iface).name(NAME).build().await?;
    let iface_ref = connection
        .object_server()
        .interface::<_, Kldnet1>(PATH)
        .await?;
    let refresher = tokio::spawn(refresh_loop(iface_ref, frontends.calls, reloaded));
    Ok(DbusService {
        connection,
        refresher,
    })
}

/// Sends `req` to the main loop and waits for its answer.
async fn call(calls: &mpsc::Sender<ApiCall>, req: Request) -> fdo::Result<Response> {
    let (tx, rx) = oneshot::channel();
    calls
        .send((req, tx))
        .await
        .map_err(|_| fdo::Error::Failed("kldnetd is shutting down".into()))?;
    match tokio::time::timeout(CALL_TIMEOUT, rx).await {
        Ok(Ok(Response::Error { message })) => Err(fdo::Error::Failed(message)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(_)) => Err(fdo::Error::Failed("kldnetd dropped the request".into())),
        Err(_) => Err(fdo::Error::TimedOut(format!(
            "kldnetd did not answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

async fn status(calls: &mpsc::Sender<ApiCall>) -> fdo::Result<Status> {
    match call(calls, Request::Status).await? {
        Response::Status(s) => Ok(*s),
        other => Err(fdo::Error::Failed(format!(
            "unexpected answer to Status: {other:?}"
        ))),
    }
}

/// The cached property values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Props {
    pub version: String,
    pub generation: u64,
    pub state: String,
    pub last_reload_error: String,
    pub endpoints_local: u32,
    pub services: u32,
    pub policies: u32,
    pub identities: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Props {
    /// Before the first answer from the main loop.
    pub fn starting() -> Props {
        Props {
            version: env!("CARGO_PKG_VERSION").into(),
            state: "starting".into(),
            ..Props::default()
        }
    }

    /// The properties shown for `status`. `LastReloadError` is empty when the last reload
    /// succeeded, else its summary and diagnostics, one per line.
    pub fn from_status(s: &Status) -> Props {
        let last_reload_error = match &s.last_reload {
            Some(r) if !r.ok => reload_error(r),
            _ => String::new(),
        };
        Props {
            version: s.version.clone(),
            generation: s.generation,
            state: s.state.clone(),
            last_reload_error,
            endpoints_local: count(s.endpoints_local),
            services: count(s.services),
            policies: count(s.policies),
            identities: count(s.identities),
        }
    }
}

fn reload_error(r: &ReloadResult) -> String {
    std::iter::once(r.summary.as_str())
        .chain(r.diagnostics.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The object at [`PATH`].
struct Kldnet1 {
    calls: mpsc::Sender<ApiCall>,
    props: Props,
}

#[interface(name = "org.kldload.Kldnet1")]
impl Kldnet1 {
    /// Reloads the configuration now (like `kldnet reload` or SIGHUP). A config that fails
    /// validation leaves the previous generation serving: ok is false and summary says why.
    #[zbus(out_args("ok", "generation", "summary"))]
    async fn reload(&self) -> fdo::Result<(bool, u64, String)> {
        match call(&self.calls, Request::Reload).await? {
            Response::Reload(r) => Ok((r.ok, r.generation, r.summary)),
            other => Err(fdo::Error::Failed(format!(
                "unexpected answer to Reload: {other:?}"
            ))),
        }
    }

    /// The daemon's full status as JSON, the same object as `kldnet status --json`.
    async fn status(&self) -> fdo::Result<String> {
        let s = status(&self.calls).await?;
        serde_json::to_string(&s).map_err(|e| fdo::Error::Failed(e.to_string()))
    }

    /// Emitted after every reload, whatever triggered it (file change, SIGHUP, API, D-Bus).
    #[zbus(signal)]
    async fn reloaded(
        emitter: &SignalEmitter<'_>,
        ok: bool,
        generation: u64,
        summary: &str,
    ) -> zbus::Result<()>;

    /// kldnetd's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        self.props.version.clone()
    }

    /// Config generation serving now.
    #[zbus(property)]
    fn generation(&self) -> u64 {
        self.props.generation
    }

    /// "starting", "running", or "degraded" (the last reload failed; the previous
    /// generation serves).
    #[zbus(property)]
    fn state(&self) -> String {
        self.props.state.clone()
    }

    /// Empty when the last reload succeeded; else its summary and diagnostics, one per line.
    #[zbus(property)]
    fn last_reload_error(&self) -> String {
        self.props.last_reload_error.clone()
    }

    /// Endpoints on this node.
    #[zbus(property)]
    fn endpoints_local(&self) -> u32 {
        self.props.endpoints_local
    }

    /// Services configured.
    #[zbus(property)]
    fn services(&self) -> u32 {
        self.props.services
    }

    /// Policies configured.
    #[zbus(property)]
    fn policies(&self) -> u32 {
        self.props.policies
    }

    /// Security identities known.
    #[zbus(property)]
    fn identities(&self) -> u32 {
        self.props.identities
    }
}

/// Keeps the cached properties current and turns every reload into a `Reloaded` signal.
async fn refresh_loop(
    iface: InterfaceRef<Kldnet1>,
    calls: mpsc::Sender<ApiCall>,
    mut reloaded: broadcast::Receiver<ReloadResult>,
) {
    refresh(&iface, &calls).await;
    loop {
        match reloaded.recv().await {
            Ok(r) => {
                // Properties first: a client reacting to the signal reads the new values.
                refresh(&iface, &calls).await;
                if let Err(e) =
                    Kldnet1::reloaded(iface.signal_emitter(), r.ok, r.generation, &r.summary).await
                {
                    tracing::debug!("D-Bus: emit Reloaded: {e}");
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => refresh(&iface, &calls).await,
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

async fn refresh(iface: &InterfaceRef<Kldnet1>, calls: &mpsc::Sender<ApiCall>) {
    let new = match status(calls).await {
        Ok(s) => Props::from_status(&s),
        Err(e) => {
            tracing::debug!("D-Bus: refresh properties: {e}");
            return;
        }
    };
    let old = {
        let mut guard = iface.get_mut().await;
        std::mem::replace(&mut guard.props, new.clone())
    };
    if let Err(e) = emit_changes(iface, &old, &new).await {
        tracing::debug!("D-Bus: emit PropertiesChanged: {e}");
    }
}

async fn emit_changes(iface: &InterfaceRef<Kldnet1>, old: &Props, new: &Props) -> zbus::Result<()> {
    let guard = iface.get().await;
    let emitter = iface.signal_emitter();
    if old.generation != new.generation {
        guard.generation_changed(emitter).await?;
    }
    if old.state != new.state {
        guard.state_changed(emitter).await?;
    }
    if old.last_reload_error != new.last_reload_error {
        guard.last_reload_error_changed(emitter).await?;
    }
    if old.endpoints_local != new.endpoints_local {
        guard.endpoints_local_changed(emitter).await?;
    }
    if old.services != new.services {
        guard.services_changed(emitter).await?;
    }
    if old.policies != new.policies {
        guard.policies_changed(emitter).await?;
    }
    if old.identities != new.identities {
        guard.identities_changed(emitter).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_choice() {
        assert_eq!(choose_bus("none", true), Ok(BusChoice::Off));
        assert_eq!(choose_bus("system", true), Ok(BusChoice::System));
        assert!(
            choose_bus("system", false)
                .unwrap_err()
                .contains(SYSTEM_BUS_SOCKET)
        );
        assert_eq!(
            choose_bus("unix:path=/tmp/b", false),
            Ok(BusChoice::Address("unix:path=/tmp/b".into()))
        );
    }

    #[test]
    fn last_reload_error_only_when_failed() {
        let failed = ReloadResult {
            ok: false,
            generation: 3,
            summary: "1 error".into(),
            diagnostics: vec!["a.toml:1:1: error: x".into()],
            duration_us: 1,
        };
        let mut s = Status {
            version: "0.1.0".into(),
            state: "degraded".into(),
            generation: 3,
            services: 2,
            last_reload: Some(failed.clone()),
            ..Status::default()
        };
        let p = Props::from_status(&s);
        assert_eq!(p.last_reload_error, "1 error\na.toml:1:1: error: x");
        assert_eq!(
            (p.generation, p.services, p.state.as_str()),
            (3, 2, "degraded")
        );
        s.last_reload = Some(ReloadResult { ok: true, ..failed });
        assert_eq!(Props::from_status(&s).last_reload_error, "");
    }
}
