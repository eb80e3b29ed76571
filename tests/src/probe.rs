// SPDX-License-Identifier: Apache-2.0
//! A tiny traffic tool: [`serve`] answers every TCP connection / UDP datagram with a fixed
//! line, [`probe`] sends N attempts and tallies who answered.
//!
//! Used in-process by tests and as a subprocess inside workload namespaces (`kldnet probe …`,
//! see [`cli_main`]), so the socket-LB hooks see a real process in the right cgroup. Each
//! attempt uses a fresh socket (new source port), so a load balancer sees a new flow each time.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Transport protocol for [`serve`] and [`probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP: one connection per attempt; the server writes its reply and closes.
    Tcp,
    /// UDP: one datagram per attempt from an unconnected socket (sendto/recvfrom).
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("unknown protocol {s:?} (expected tcp or udp)")),
        }
    }
}

/// Payload a UDP probe sends (servers ignore it).
const UDP_REQUEST: &[u8] = b"probe\n";
/// Longest reply a probe reads.
const MAX_REPLY: usize = 4096;

/// A bound server socket; [`Server::run`] answers requests.
///
/// Bind it on a thread inside a namespace ([`crate::netns::run_in`]) and run it anywhere.
#[derive(Debug)]
pub enum Server {
    /// Listening TCP socket.
    Tcp(TcpListener),
    /// Bound UDP socket.
    Udp(UdpSocket),
}

impl Server {
    /// Binds `bind` (port 0 picks a free port).
    pub fn bind(proto: Proto, bind: SocketAddr) -> io::Result<Server> {
        Ok(match proto {
            Proto::Tcp => Server::Tcp(TcpListener::bind(bind)?),
            Proto::Udp => Server::Udp(UdpSocket::bind(bind)?),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Server::Tcp(l) => l.local_addr(),
            Server::Udp(u) => u.local_addr(),
        }
    }

    /// Answers every connection/datagram with `reply_with` + `"\n"` for `max_secs` seconds;
    /// returns how many requests were answered.
    pub fn run(&self, reply_with: &str, max_secs: u64) -> io::Result<u64> {
        self.run_until(reply_with, max_secs, &AtomicBool::new(false))
    }

    /// Like [`run`](Self::run), but also returns (within ~200 ms) once `stop` becomes true.
    pub fn run_until(&self, reply_with: &str, max_secs: u64, stop: &AtomicBool) -> io::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(max_secs);
        let running = || !stop.load(Ordering::Relaxed);
        let reply = format!("{reply_with}\n");
        let mut served = 0;
        match self {
            Server::Tcp(l) => {
                while let Some(wait) = deadline
                    .checked_duration_since(Instant::now())
                    .filter(|_| running())
                {
                    if !poll_readable(l.as_raw_fd(), wait.min(Duration::from_millis(200)))? {
                        continue;
                    }
                    let (mut s, _) = match l.accept() {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    s.set_write_timeout(Some(Duration::from_secs(1)))?;
                    // A peer that resets early is its problem, not the server's.
                    if s.write_all(reply.as_bytes()).is_ok() {
                        served += 1;
                    }
                }
            }
            Server::Udp(u) => {
                let pktinfo = u.local_addr()?.is_ipv4() && crate::udp_pktinfo::enable(u).is_ok();
                let mut buf = [0u8; 2048];
                while let Some(wait) = deadline
                    .checked_duration_since(Instant::now())
                    .filter(|_| running())
                {
                    if !poll_readable(u.as_raw_fd(), wait.min(Duration::from_millis(200)))? {
                        continue;
                    }
                    let got = if pktinfo {
                        crate::udp_pktinfo::recv(u, &mut buf).map(|(src, dst)| (src, Some(dst)))
                    } else {
                        u.recv_from(&mut buf).map(|(_, src)| (src, None))
                    };
                    let sent = match got {
                        // Answer from the address the request was sent to, as DNS servers do:
                        // a wildcard-bound socket would otherwise reply from the primary address.
                        Ok((src, Some(dst))) => {
                            crate::udp_pktinfo::send(u, reply.as_bytes(), src, dst)
                        }
                        Ok((src, None)) => u.send_to(reply.as_bytes(), src).map(|_| ()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if sent.is_ok() {
                        served += 1;
                    }
                }
            }
        }
        Ok(served)
    }
}

/// Waits up to `timeout` for `fd` to become readable.
fn poll_readable(fd: i32, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: pfd is a valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    match rc {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Serves on `bind` for `max_secs` seconds, answering each request with `reply_with` + `"\n"`.
///
/// Stdout (stable, one line each): `listening <proto> <addr>` once bound (flushed, so a parent
/// can wait for it), then `served <n>` on exit.
pub fn serve(proto: Proto, bind: SocketAddr, reply_with: &str, max_secs: u64) -> io::Result<()> {
    let server = Server::bind(proto, bind)?;
    let mut out = io::stdout();
    writeln!(out, "listening {proto} {}", server.local_addr()?)?;
    out.flush()?;
    let n = server.run(reply_with, max_secs)?;
    writeln!(out, "served {n}")?;
    out.flush()
}

/// Result of [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Protocol used.
    pub proto: Proto,
    /// Address probed.
    pub target: SocketAddr,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts that got a reply from `target`.
    pub ok: u32,
    /// One message per failed attempt, `attempt <i>: <what went wrong>`.
    pub failures: Vec<String>,
    /// Reply text (without the newline) → how many attempts got it.
    pub replies: BTreeMap<String, u32>,
    /// Median latency of successful attempts in microseconds (0 when none succeeded).
    pub latency_us_p50: u64,
    /// 99th percentile latency of successful attempts in microseconds (0 when none succeeded).
    pub latency_us_p99: u64,
}

impl ProbeReport {
    /// True when every attempt succeeded (and there was at least one).
    pub fn all_ok(&self) -> bool {
        self.attempts > 0 && self.ok == self.attempts
    }

    /// How many attempts got reply `text`.
    pub fn count(&self, text: &str) -> u32 {
        self.replies.get(text).copied().unwrap_or(0)
    }

    /// The report as one JSON object (stable field names = the struct's).
    pub fn to_json(&self) -> String {
        let failures: Vec<String> = self.failures.iter().map(|f| json_str(f)).collect();
        let replies: Vec<String> = self
            .replies
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        format!(
            "{{\"proto\":\"{}\",\"target\":\"{}\",\"attempts\":{},\"ok\":{},\"failures\":[{}],\
             \"replies\":{{{}}},\"latency_us_p50\":{},\"latency_us_p99\":{}}}",
            self.proto,
            self.target,
            self.attempts,
            self.ok,
            failures.join(","),
            replies.join(","),
            self.latency_us_p50,
            self.latency_us_p99
        )
    }
}

/// One line: `proto=tcp target=10.0.0.1:80 attempts=10 ok=10 failures=0 replies=w1:5,w2:5
/// p50_us=95 p99_us=310` plus ` first_failure="…"` when something failed.
impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replies: Vec<String> = self
            .replies
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        write!(
            f,
            "proto={} target={} attempts={} ok={} failures={} replies={} p50_us={} p99_us={}",
            self.proto,
            self.target,
            self.attempts,
            self.ok,
            self.failures.len(),
            if replies.is_empty() {
                "-".to_string()
            } else {
                replies.join(",")
            },
            self.latency_us_p50,
            self.latency_us_p99
        )?;
        if let Some(first) = self.failures.first() {
            write!(f, " first_failure={first:?}")?;
        }
        Ok(())
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Nearest-rank percentile of sorted `v` (0 for empty).
fn percentile(v: &[u64], p: u64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = (p as usize * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// Sends `count` attempts to `target`, each with its own socket and `timeout`.
///
/// An attempt succeeds when a non-empty reply comes from `target` itself: for TCP the peer
/// address (`getpeername`) must equal `target`, for UDP the datagram's source — which is what a
/// real client expects and what socket LB must restore (getpeername4/recvmsg4 hooks).
pub fn probe(proto: Proto, target: SocketAddr, count: u32, timeout: Duration) -> ProbeReport {
    probe_with(
        proto,
        target,
        count,
        timeout,
        &ProbeOptions::default(),
        |_| {},
    )
}

/// Extra knobs for [`probe_with`]; the default is what [`probe`] does.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Bind this local port before connecting/sending (TCP with `SO_REUSEADDR`), so every
    /// attempt has the same 5-tuple. `None`: an ephemeral port per attempt.
    pub source_port: Option<u16>,
    /// Pause between attempts (from the end of one to the start of the next).
    pub interval: Duration,
    /// Stop starting new attempts after this long, even before `count` attempts.
    pub duration: Option<Duration>,
}

/// One attempt of [`probe_with`], handed to its callback as it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 0-based attempt number.
    pub index: u32,
    /// Wall-clock start of the attempt, milliseconds since the Unix epoch (comparable across
    /// processes).
    pub unix_ms: u64,
    /// How long the attempt took, successful or not, in microseconds.
    pub elapsed_us: u64,
    /// The reply text, or what went wrong.
    pub outcome: Result<String, String>,
}

impl Attempt {
    /// One JSON object: `{"i":0,"unix_ms":…,"us":…,"ok":true,"reply":"w1"}` or with
    /// `"ok":false,"error":"…"`.
    pub fn to_json(&self) -> String {
        let tail = match &self.outcome {
            Ok(r) => format!("\"ok\":true,\"reply\":{}", json_str(r)),
            Err(e) => format!("\"ok\":false,\"error\":{}", json_str(e)),
        };
        format!(
            "{{\"i\":{},\"unix_ms\":{},\"us\":{},{tail}}}",
            self.index, self.unix_ms, self.elapsed_us
        )
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// [`probe`] with [`ProbeOptions`]; `on_attempt` sees every attempt as it completes.
pub fn probe_with(
    proto: Proto,
    target: SocketAddr,
    count: u32,
    timeout: Duration,
    opts: &ProbeOptions,
    mut on_attempt: impl FnMut(&Attempt),
) -> ProbeReport {
    let mut report = ProbeReport {
        proto,
        target,
        attempts: 0,
        ok: 0,
        failures: Vec::new(),
        replies: BTreeMap::new(),
        latency_us_p50: 0,
        latency_us_p99: 0,
    };
    let mut lat = Vec::new();
    let began = Instant::now();
    for i in 0..count {
        if opts.duration.is_some_and(|d| began.elapsed() >= d) {
            break;
        }
        if i > 0 && !opts.interval.is_zero() {
            std::thread::sleep(opts.interval);
        }
        report.attempts += 1;
        let unix = unix_ms();
        let start = Instant::now();
        let r = match proto {
            Proto::Tcp => attempt_tcp(target, timeout, opts.source_port),
            Proto::Udp => attempt_udp(target, timeout, opts.source_port),
        };
        let us = start.elapsed().as_micros() as u64;
        match &r {
            Ok(text) => {
                lat.push(us);
                report.ok += 1;
                *report.replies.entry(text.clone()).or_default() += 1;
            }
            Err(e) => report.failures.push(format!("attempt {i}: {e}")),
        }
        on_attempt(&Attempt {
            index: i,
            unix_ms: unix,
            elapsed_us: us,
            outcome: r,
        });
    }
    lat.sort_unstable();
    report.latency_us_p50 = percentile(&lat, 50);
    report.latency_us_p99 = percentile(&lat, 99);
    report
}

fn reply_text(buf: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(buf);
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        Err("empty reply".to_string())
    } else {
        Ok(line)
    }
}

fn attempt_tcp(
    target: SocketAddr,
    timeout: Duration,
    source_port: Option<u16>,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut s = match source_port {
        None => TcpStream::connect_timeout(&target, timeout),
        Some(port) => tcp_connect_from(port, target, timeout),
    }
    .map_err(|e| format!("connect: {e}"))?;
    let peer = s.peer_addr().map_err(|e| format!("getpeername: {e}"))?;
    if peer != target {
        return Err(format!("peer address {peer}, expected {target}"));
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no reply within {}ms", timeout.as_millis()))?;
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("set timeout: {e}"))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') || buf.len() >= MAX_REPLY {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no reply within {}ms", timeout.as_millis()));
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    reply_text(&buf)
}

fn attempt_udp(
    target: SocketAddr,
    timeout: Duration,
    source_port: Option<u16>,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    any.set_port(source_port.unwrap_or(0));
    let u = UdpSocket::bind(any).map_err(|e| format!("bind: {e}"))?;
    u.send_to(UDP_REQUEST, target)
        .map_err(|e| format!("sendto: {e}"))?;
    let mut buf = [0u8; MAX_REPLY];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no reply within {}ms", timeout.as_millis()))?;
        u.set_read_timeout(Some(left))
            .map_err(|e| format!("set timeout: {e}"))?;
        match u.recv_from(&mut buf) {
            Ok((n, src)) if src == target => return reply_text(&buf[..n]),
            Ok((_, src)) => return Err(format!("reply from {src}, expected {target}")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no reply within {}ms", timeout.as_millis()));
            }
            Err(e) => return Err(format!("recvfrom: {e}")),
        }
    }
}

/// A blocking IPv4 TCP connect from local port `port` (`SO_REUSEADDR`), bounded by `timeout`
/// (`SO_SNDTIMEO` bounds a blocking connect()).
fn tcp_connect_from(port: u16, target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(t) = target else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a source port is supported for IPv4 only",
        ));
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns; on success the
    // descriptor moves into the TcpStream, on failure it is closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fail = |fd: i32| {
            let e = io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        ) != 0
        {
            return fail(fd);
        }
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        ) != 0
        {
            return fail(fd);
        }
        let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sin(std::net::Ipv4Addr::UNSPECIFIED, port);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return fail(fd);
        }
        let remote = sin(*t.ip(), t.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
            } else {
                e
            });
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_port_and_stream_callback() {
        for proto in [Proto::Tcp, Proto::Udp] {
            let srv = Server::bind(proto, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = srv.local_addr().unwrap();
            // A free local port for the client side.
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            std::thread::scope(|s| {
                s.spawn(|| srv.run("p", 1).unwrap());
                let opts = ProbeOptions {
                    source_port: Some(port),
                    interval: Duration::from_millis(5),
                    duration: None,
                };
                let mut seen = Vec::new();
                let r = probe_with(proto, addr, 2, Duration::from_secs(1), &opts, |a| {
                    seen.push(a.to_json())
                });
                assert!(r.all_ok(), "{proto}: {r}");
                assert_eq!(seen.len(), 2);
                assert!(
                    seen[1].starts_with("{\"i\":1,\"unix_ms\":")
                        && seen[1].ends_with("\"ok\":true,\"reply\":\"p\"}"),
                    "{}",
                    seen[1]
                );
            });
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn loopback_tcp_and_udp() {
        for proto in [Proto::Tcp, Proto::Udp] {
            let srv = Server::bind(proto, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = srv.local_addr().unwrap();
            std::thread::scope(|s| {
                s.spawn(|| srv.run("hello \"x\"", 1).unwrap());
                let r = probe(proto, addr, 3, Duration::from_secs(1));
                assert!(r.all_ok(), "{r}");
                assert_eq!(r.count("hello \"x\""), 3, "{r}");
                assert!(
                    r.to_json().contains(r#""replies":{"hello \"x\"":3}"#),
                    "{}",
                    r.to_json()
                );
                assert!(
                    r.to_string()
                        .starts_with(&format!("proto={proto} target={addr} attempts=3 ok=3"))
                );
            });
        }
    }

    #[test]
    fn failures_are_reported() {
        // Bind then drop to get a port that is (very likely) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = probe(Proto::Tcp, port, 2, Duration::from_millis(300));
        assert_eq!((r.attempts, r.ok, r.failures.len()), (2, 0, 2), "{r}");
        assert!(
            r.to_string()
                .contains("first_failure=\"attempt 0: connect:"),
            "{r}"
        );
        let r = probe(Proto::Udp, port, 1, Duration::from_millis(100));
        assert_eq!(r.ok, 0, "{r}");
    }
}
