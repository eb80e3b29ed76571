// SPDX-License-Identifier: Apache-2.0
//! Command-line front end of [`crate::probe`], shared by `kldnet probe …` and the testkit binary.
//!
//! ```text
//! serve   <tcp|udp> <bind-addr> [--reply TEXT] [--max-secs N]
//! connect <tcp|udp> <target>    [--count N] [--timeout-ms MS] [--json]
//!         [--interval-ms MS] [--duration-ms MS] [--source-port P] [--each]
//! ```
//! `serve` prints `listening <proto> <addr>` once bound and `served <n>` at the end.
//! `connect` prints one report line ([`ProbeReport`](crate::ProbeReport)'s `Display`, or JSON
//! with `--json`) and exits 0 when every attempt succeeded, 1 otherwise; usage errors exit 2.
//! `--each` also prints one JSON line per attempt as it completes
//! ([`Attempt::to_json`](crate::probe::Attempt::to_json), flushed), before the report line;
//! `--interval-ms` pauses between attempts, `--duration-ms` stops early, `--source-port`
//! binds the client's port (see [`ProbeOptions`](crate::probe::ProbeOptions)).

use std::net::SocketAddr;
use std::time::Duration;

use std::io::Write;

use crate::probe::{ProbeOptions, Proto, probe_with, serve};

/// Usage text for both subcommands.
pub const USAGE: &str = "usage:\n  serve   <tcp|udp> <bind-addr> [--reply TEXT] [--max-secs N]\n  \
                         connect <tcp|udp> <target> [--count N] [--timeout-ms MS] [--json]\n          \
                         [--interval-ms MS] [--duration-ms MS] [--source-port P] [--each]";

/// Arguments for `serve` (to append after `kldnet probe` or the testkit binary's `probe`).
pub fn serve_args(proto: Proto, bind: SocketAddr, reply_with: &str, max_secs: u64) -> Vec<String> {
    vec![
        "serve".into(),
        proto.to_string(),
        bind.to_string(),
        "--reply".into(),
        reply_with.into(),
        "--max-secs".into(),
        max_secs.to_string(),
    ]
}

/// Arguments for `connect`, always with `--json` so [`parse_json_ok`] can read the result.
pub fn connect_args(
    proto: Proto,
    target: SocketAddr,
    count: u32,
    timeout: Duration,
) -> Vec<String> {
    vec![
        "connect".into(),
        proto.to_string(),
        target.to_string(),
        "--count".into(),
        count.to_string(),
        "--timeout-ms".into(),
        timeout.as_millis().to_string(),
        "--json".into(),
    ]
}

/// Extracts `(ok, replies)` from a `--json` report line without a JSON library.
///
/// Replies are returned as `(text, count)`; reply texts with escaped quotes are not supported.
pub fn parse_json_ok(line: &str) -> Option<(u32, Vec<(String, u32)>)> {
    let num = |key: &str| -> Option<u32> {
        let rest = &line[line.find(&format!("\"{key}\":"))? + key.len() + 3..];
        rest[..rest.find(|c: char| !c.is_ascii_digit())?]
            .parse()
            .ok()
    };
    let ok = num("ok")?;
    let rstart = line.find("\"replies\":{")? + "\"replies\":{".len();
    let body = &line[rstart..rstart + line[rstart..].find('}')?];
    let mut replies = Vec::new();
    for part in body.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.rsplit_once(':')?;
        replies.push((k.trim_matches('"').to_string(), v.parse().ok()?));
    }
    Some((ok, replies))
}

/// Runs the probe CLI on `args` (without the program name); returns the exit code.
pub fn cli_main(args: &[String]) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("{msg}\n{USAGE}");
            2
        }
    }
}

fn run(args: &[String]) -> Result<i32, String> {
    let (cmd, rest) = args.split_first().ok_or("missing subcommand")?;
    let [proto, addr, opts @ ..] = rest else {
        return Err(format!("{cmd}: expected <tcp|udp> <addr>"));
    };
    let proto: Proto = proto.parse()?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let mut flags = Flags::parse(opts)?;
    match cmd.as_str() {
        "serve" => {
            let reply = flags.take("--reply").unwrap_or_else(|| "ok".to_string());
            let secs = flags.take_num("--max-secs")?.unwrap_or(60);
            flags.finish()?;
            serve(proto, addr, &reply, secs).map_err(|e| format!("serve {proto} {addr}: {e}"))?;
            Ok(0)
        }
        "connect" => {
            let count = flags.take_num("--count")?.unwrap_or(1) as u32;
            let ms = flags.take_num("--timeout-ms")?.unwrap_or(1000);
            let json = flags.switch("--json");
            let each = flags.switch("--each");
            let opts = ProbeOptions {
                interval: Duration::from_millis(flags.take_num("--interval-ms")?.unwrap_or(0)),
                duration: flags.take_num("--duration-ms")?.map(Duration::from_millis),
                source_port: flags
                    .take_num("--source-port")?
                    .map(|p| u16::try_from(p).map_err(|_| format!("bad --source-port {p}")))
                    .transpose()?,
            };
            flags.finish()?;
            let mut out = std::io::stdout();
            let r = probe_with(proto, addr, count, Duration::from_millis(ms), &opts, |a| {
                if each {
                    let _ = writeln!(out, "{}", a.to_json());
                    let _ = out.flush();
                }
            });
            println!("{}", if json { r.to_json() } else { r.to_string() });
            Ok(if r.all_ok() { 0 } else { 1 })
        }
        other => Err(format!("unknown subcommand {other:?}")),
    }
}

/// `--key value` and `--switch` options.
struct Flags(Vec<(String, Option<String>)>);

impl Flags {
    fn parse(opts: &[String]) -> Result<Flags, String> {
        let mut v = Vec::new();
        let mut it = opts.iter().peekable();
        while let Some(k) = it.next() {
            if !k.starts_with("--") {
                return Err(format!("unexpected argument {k:?}"));
            }
            let val = it.next_if(|n| !n.starts_with("--")).cloned();
            v.push((k.clone(), val));
        }
        Ok(Flags(v))
    }
    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        self.0.remove(i).1
    }
    fn take_num(&mut self, key: &str) -> Result<Option<u64>, String> {
        self.take(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("{key} needs a number, got {v:?}"))
            })
            .transpose()
    }
    fn switch(&mut self, key: &str) -> bool {
        self.0
            .iter()
            .position(|(k, _)| k == key)
            .map(|i| self.0.remove(i))
            .is_some()
    }
    fn finish(self) -> Result<(), String> {
        match self.0.first() {
            Some((k, _)) => Err(format!("unknown or incomplete option {k:?}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_through_parser() {
        let a = connect_args(
            Proto::Udp,
            "10.0.0.1:53".parse().unwrap(),
            4,
            Duration::from_millis(250),
        );
        assert_eq!(
            a.join(" "),
            "connect udp 10.0.0.1:53 --count 4 --timeout-ms 250 --json"
        );
        let s = serve_args(Proto::Tcp, "0.0.0.0:80".parse().unwrap(), "w1", 5);
        assert_eq!(s.join(" "), "serve tcp 0.0.0.0:80 --reply w1 --max-secs 5");
        assert_eq!(cli_main(&["bogus".into()]), 2);
        assert_eq!(
            cli_main(&[
                "connect".into(),
                "tcp".into(),
                "1.2.3.4:1".into(),
                "--nope".into()
            ]),
            2
        );
    }

    #[test]
    fn parses_json_report() {
        let line = r#"{"proto":"tcp","target":"1.2.3.4:80","attempts":3,"ok":3,"failures":[],"replies":{"a":1,"b":2},"latency_us_p50":1,"latency_us_p99":2}"#;
        assert_eq!(
            parse_json_ok(line),
            Some((3, vec![("a".into(), 1), ("b".into(), 2)]))
        );
    }
}
