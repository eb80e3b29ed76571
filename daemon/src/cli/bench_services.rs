// SPDX-License-Identifier: Apache-2.0
//! `kldnet bench services`: kldnet's service load balancing side by side with what users
//! would otherwise run — kube-proxy's iptables rules (iptables-legacy and iptables-nft)
//! and its nftables verdict map — in one run, at several service counts:
//!
//! - (a) time to program every service, (b) time to add one more ([`program`]);
//! - (c) connect() p50/p99 to the last service vs a direct connect, and (e) iperf3
//!   throughput through a VIP ([`traffic`], real traffic in a sandbox);
//! - (d) the tc program's cost per packet from BPF_PROG_TEST_RUN ([`packet`]).
//!
//! Root only. Every netfilter command runs inside a network namespace this command
//! creates, kldnet uses private bpffs mounts and a throwaway cgroup; all of it is removed
//! at the end (drop guards), also on error. Results of a full run: docs/benchmarks.md.

mod packet;
mod program;
mod rules;
pub(super) mod traffic;

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;

use self::program::{Kldnet, Netfilter, NetfilterTimes, Step};
use self::traffic::{Latency, Lb, Traffic};
use super::{EXIT_FAILURE, EXIT_OK};

#[derive(Debug, Args)]
pub struct ServicesBenchArgs {
    /// Service counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u32, 10_000, 30_000])]
    pub sizes: Vec<u32>,
    /// Small and short, for tests: sizes 100,1000, 1 run, 300 connects, 1 s of iperf3.
    #[arg(long)]
    pub quick: bool,
    /// Backends per service.
    #[arg(long, default_value_t = 2)]
    pub backends: u32,
    /// Repetitions of each programming step (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// connect() calls per path and size.
    #[arg(long, default_value_t = 2_000)]
    pub connects: u32,
    /// Seconds per iperf3 run (0 skips throughput).
    #[arg(long, default_value_t = 3)]
    pub seconds: u32,
    /// Seconds after which one iptables/nft command is killed (reported as "> N s"; the
    /// back end is skipped at larger sizes).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// BPF_PROG_TEST_RUN repetitions per packet case.
    #[arg(long, default_value_t = 100_000)]
    pub repeat: u32,
    /// Internal: run the connect() loop against this address and print the samples (the
    /// bench spawns itself so inside a client namespace and cgroup).
    #[arg(long, hide = true)]
    pub connect_loop: Option<SocketAddrV4>,
}

impl ServicesBenchArgs {
    fn apply_quick(&mut self) {
        if self.quick {
            self.sizes = vec![100, 1_000];
            self.runs = 1;
            self.connects = 300;
            self.seconds = self.seconds.min(1);
            self.repeat = self.repeat.min(10_000);
        }
    }
}

pub fn run(mut args: ServicesBenchArgs) -> i32 {
    if let Some(target) = args.connect_loop {
        return match traffic::connect_loop(target, args.connects) {
            Ok((v, timeouts)) => {
                let text: Vec<String> = v.iter().map(u64::to_string).collect();
                println!("samples_ns {}", text.join(" "));
                println!("timeouts {timeouts}");
                EXIT_OK
            }
            Err(e) => {
                eprintln!("{e:#}");
                EXIT_FAILURE
            }
        };
    }
    args.apply_quick();
    match bench(&args) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("kldnet bench services: {e:#}");
            EXIT_FAILURE
        }
    }
}

/// A markdown table, printed with aligned columns.
struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        // A column is text (left-aligned) when any of its cells starts with a letter.
        let text: Vec<bool> = (0..width.len())
            .map(|i| {
                i == 0
                    || self
                        .rows
                        .iter()
                        .any(|r| r.get(i).is_some_and(|c| c.starts_with(char::is_alphabetic)))
            })
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, c) in cells.iter().enumerate() {
                let pad = " ".repeat(width[i] - c.chars().count());
                if text[i] {
                    let _ = write!(s, " {c}{pad} |");
                } else {
                    let _ = write!(s, " {pad}{c} |");
                }
            }
            s + "\n"
        };
        let mut out = format!("\n### {}\n\n", self.title);
        out += &line(&self.header);
        let sep: Vec<String> = width
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if text[i] {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w - 1))
                }
            })
            .collect();
        out += &line(&sep);
        for r in &self.rows {
            out += &line(r);
        }
        out
    }

    fn print(&self) {
        print!("{}", self.render());
    }
}

/// Milliseconds with a precision that suits the size.
fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.3} ms")
    }
}

/// A netfilter step: its time, "> N s" when killed, "-" when not run.
fn step(s: Step) -> String {
    match s {
        Step::Took(d) => ms(d),
        Step::TimedOut(l) => format!("> {} s (killed)", l.as_secs()),
        Step::Skipped => "-".into(),
    }
}

/// `s ÷ k` for a netfilter step; a lower bound when the step was killed.
fn step_ratio(s: Step, k: Duration) -> String {
    match s {
        Step::Took(d) => dtimes(d, k),
        Step::TimedOut(l) => format!("> {}", dtimes(l, k)),
        Step::Skipped => "-".into(),
    }
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

/// `a ÷ b` as "12.3×".
fn times(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "-".into();
    }
    let r = a / b;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.2}×")
    }
}

fn dtimes(a: Duration, b: Duration) -> String {
    times(a.as_secs_f64(), b.as_secs_f64())
}

/// UTC date and time from the system clock (civil-from-days, H. Hinnant).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{model}, {cores} cores, Linux {kernel}")
}

fn tool_version(tool: &str, arg: &str) -> Option<String> {
    let out = std::process::Command::new(tool).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

fn check_tools(throughput: bool) -> Result<()> {
    let mut tools = vec![
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "nft",
        "ip",
    ];
    if throughput {
        tools.push("iperf3");
    }
    let missing: Vec<&str> = tools
        .into_iter()
        .filter(|t| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (Debian: apt-get install iptables nftables iperf3 iproute2; --seconds 0 skips iperf3)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn bench(a: &ServicesBenchArgs) -> Result<()> {
    if !kldnet_testkit::is_root() {
        bail!(
            "needs root: it creates network namespaces, a cgroup and bpffs mounts (nothing outside them is touched)"
        );
    }
    anyhow::ensure!(
        !a.sizes.is_empty() && a.sizes.iter().all(|n| *n >= 1),
        "--sizes needs counts ≥ 1"
    );
    anyhow::ensure!(a.backends >= 1, "--backends must be ≥ 1");
    check_tools(a.seconds > 0)?;
    let exe = std::env::current_exe().context("locate kldnet")?;
    let kldnetd = exe.with_file_name("kldnetd");
    anyhow::ensure!(
        kldnetd.exists(),
        "{} not found (build it: cargo build --release --bins)",
        kldnetd.display()
    );
    let started = Instant::now();
    println!("# kldnet bench services");
    println!();
    println!("- date: {}", utc_now());
    println!("- machine: {}", machine());
    println!("- load average at start: {}", loadavg());
    println!(
        "- tools: {}; {}; iperf3 {}",
        tool_version("iptables-legacy", "--version").unwrap_or_default(),
        tool_version("nft", "--version").unwrap_or_default(),
        tool_version("iperf3", "--version")
            .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
            .unwrap_or_default()
    );
    println!(
        "- services: {} × {} backends (TCP, one port); median of {} run(s); {} connects per path; iperf3 {} s; test_run repeat {}",
        a.sizes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        a.backends,
        a.runs.max(1),
        a.connects,
        a.seconds,
        a.repeat
    );

    let tmp = tempfile::tempdir()?;

    // (d) first: quick, and independent of the sizes.
    eprintln!("[bench] (d) tc per-packet cost …");
    let bpf = kldnet_testkit::BpffsMount::mount(&tmp.path().join("bpf-packet"))?;
    let rows = packet::measure(bpf.path(), a.repeat)?;
    drop(bpf);

    // (a) and (b).
    let bpf = kldnet_testkit::BpffsMount::mount(&tmp.path().join("bpf-program"))?;
    let mut kld = Kldnet::open(
        &kldnet_bpf::pin_dir(bpf.path()),
        &tmp.path().join("kld-config"),
    )?;
    let limit = Duration::from_secs(a.timeout.max(1));
    let mut prog: Vec<(u32, Vec<NetfilterTimes>, program::KldnetTimes)> = Vec::new();
    // Back ends whose programming timed out: skipped at larger sizes and in (c)/(e) there.
    let mut timed_out: Vec<Netfilter> = Vec::new();
    for &n in &a.sizes {
        let svcs = rules::services(n, a.backends, &[]);
        let mut nf = Vec::new();
        for f in Netfilter::ALL {
            if timed_out.contains(&f) {
                eprintln!(
                    "[bench] (a)(b) {} at {n} services: skipped (timed out at a smaller size)",
                    f.label()
                );
                nf.push(NetfilterTimes::skipped());
                continue;
            }
            eprintln!("[bench] (a)(b) {} at {n} services …", f.label());
            let dir = tmp.path().join(format!("nf-{}-{n}", f.short()));
            std::fs::create_dir_all(&dir)?;
            let t = program::netfilter(f, &svcs, a.backends, a.runs, &dir, limit)?;
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!(
                "[bench]   program {}, add one: full {}, incremental {} ({} runs)",
                step(t.program),
                step(t.add_full),
                step(t.add_one),
                t.runs
            );
            if t.program.took().is_none() {
                timed_out.push(f);
            }
            nf.push(t);
        }
        eprintln!("[bench] (a)(b) kldnet at {n} services …");
        let k = kld.measure(&svcs, a.backends, a.runs)?;
        eprintln!(
            "[bench]   program {} (+ parse {}), reload with one more {}",
            ms(k.compile + k.apply),
            ms(k.parse),
            ms(k.reload)
        );
        prog.push((n, nf, k));
    }
    kld.close()?;
    drop(bpf);
    print_program(&prog);

    // (c) and (e).
    eprintln!("[bench] sandbox for traffic …");
    let mut traffic = Traffic::create(a.backends, &exe, &kldnetd)?;
    let mut conn = Vec::new();
    let mut tput = Vec::new();
    for (k, &n) in a.sizes.iter().enumerate() {
        let svcs = rules::services(n, a.backends, traffic.backends());
        eprintln!("[bench] (c) programming {n} services into every LB …");
        let skip: Vec<Netfilter> = prog
            .iter()
            .find(|(m, ..)| *m == n)
            .map(|(_, nf, _)| {
                Netfilter::ALL
                    .into_iter()
                    .zip(nf)
                    .filter(|(_, t)| t.program.took().is_none())
                    .map(|(f, _)| f)
                    .collect()
            })
            .unwrap_or_default();
        traffic.configure(&svcs, &skip, limit)?;
        eprintln!("[bench] (c) connect() latency at {n} services …");
        let rounds = if a.quick { 2 } else { 4 };
        let last = svcs.last().expect("n ≥ 1");
        conn.push((n, traffic.connect_latency(last, a.connects, rounds)?, skip));
        if k + 1 == a.sizes.len() && a.seconds > 0 {
            eprintln!("[bench] (e) iperf3 throughput at {n} services …");
            tput = traffic.throughput(a.seconds, a.runs)?;
        }
    }
    drop(traffic);
    print_connect(&conn);
    print_packet(&rows, a.repeat);
    if !tput.is_empty() {
        print_throughput(&tput, a.seconds, *a.sizes.last().unwrap_or(&0));
    }
    println!();
    println!(
        "- load average at end: {}; total time {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_program(prog: &[(u32, Vec<NetfilterTimes>, program::KldnetTimes)]) {
    let mut t = Table::new(
        "(a) Program all services (kldnet: compile + apply into empty pinned maps)",
        &[
            "services",
            "iptables-legacy",
            "iptables-nft",
            "nftables vmap",
            "kldnet",
            "(kldnet compile / apply)",
            "(kldnet TOML parse)",
        ],
    );
    let mut r = Table::new(
        "(a) Ratios: how many times longer than kldnet",
        &[
            "services",
            "iptables-legacy ÷ kldnet",
            "iptables-nft ÷ kldnet",
            "nftables ÷ kldnet",
        ],
    );
    for (n, nf, k) in prog {
        let kd = k.compile + k.apply;
        t.row(vec![
            n.to_string(),
            step(nf[0].program),
            step(nf[1].program),
            step(nf[2].program),
            ms(kd),
            format!("{} / {}", ms(k.compile), ms(k.apply)),
            ms(k.parse),
        ]);
        r.row(vec![
            n.to_string(),
            step_ratio(nf[0].program, kd),
            step_ratio(nf[1].program, kd),
            step_ratio(nf[2].program, kd),
        ]);
    }
    t.print();
    r.print();

    let mut t = Table::new(
        "(b) Add one service on top of N",
        &[
            "services",
            "legacy full restore",
            "legacy one service",
            "ipt-nft full restore",
            "ipt-nft one service",
            "nft chains + element",
            "kldnet reload (new file)",
            "kldnet compile + apply",
            "kldnet apply delta",
        ],
    );
    let mut r = Table::new(
        "(b) Ratios: kldnet reload vs the others (× longer than kldnet)",
        &[
            "services",
            "legacy full ÷ kldnet",
            "legacy one ÷ kldnet",
            "ipt-nft full ÷ kldnet",
            "ipt-nft one ÷ kldnet",
            "nft ÷ kldnet",
        ],
    );
    for (n, nf, k) in prog {
        t.row(vec![
            n.to_string(),
            step(nf[0].add_full),
            step(nf[0].add_one),
            step(nf[1].add_full),
            step(nf[1].add_one),
            step(nf[2].add_one),
            ms(k.reload),
            ms(k.compile_apply),
            ms(k.apply_delta),
        ]);
        let kd = k.reload;
        r.row(vec![
            n.to_string(),
            step_ratio(nf[0].add_full, kd),
            step_ratio(nf[0].add_one, kd),
            step_ratio(nf[1].add_full, kd),
            step_ratio(nf[1].add_one, kd),
            step_ratio(nf[2].add_one, kd),
        ]);
    }
    t.print();
    r.print();
}

type ConnectResult = (u32, (Latency, Vec<traffic::ConnectRow>), Vec<Netfilter>);

fn print_connect(conn: &[ConnectResult]) {
    let mut t = Table::new(
        "(c) connect() to the last service vs direct to its backend",
        &[
            "services",
            "path",
            "p50",
            "p99",
            "p50 ÷ direct",
            "p99 ÷ direct",
            "same client direct p50 / p99",
            "p50 ÷ same client direct",
            "timeouts (VIP / direct)",
        ],
    );
    for (n, (base, rows), skipped) in conn {
        t.row(vec![
            n.to_string(),
            Lb::Direct.label().into(),
            us(base.p50_ns),
            us(base.p99_ns),
            "1.00×".into(),
            "1.00×".into(),
            String::new(),
            String::new(),
            base.timeouts.to_string(),
        ]);
        for r in rows {
            t.row(vec![
                n.to_string(),
                r.lb.label().into(),
                us(r.vip.p50_ns),
                us(r.vip.p99_ns),
                times(r.vip.p50_ns as f64, base.p50_ns as f64),
                times(r.vip.p99_ns as f64, base.p99_ns as f64),
                format!("{} / {}", us(r.direct.p50_ns), us(r.direct.p99_ns)),
                times(r.vip.p50_ns as f64, r.direct.p50_ns as f64),
                format!("{} / {}", r.vip.timeouts, r.direct.timeouts),
            ]);
        }
        for f in skipped {
            let mut cells = vec![n.to_string(), f.label().into()];
            cells.resize(8, "-".into());
            cells.push("not programmed (> timeout in (a))".into());
            t.row(cells);
        }
    }
    t.print();
}

fn print_packet(rows: &[packet::Row], repeat: u32) {
    let plain = rows.first().map_or(1, |r| r.1).max(1);
    let mut t = Table::new(
        &format!(
            "(d) tc per-packet LB cost, BPF_PROG_TEST_RUN (mean of {repeat} runs, flow events off)"
        ),
        &["case", "ns/packet", "÷ plain forward (established)"],
    );
    for (name, ns) in rows {
        t.row(vec![
            name.to_string(),
            ns.to_string(),
            times(f64::from(*ns), f64::from(plain)),
        ]);
    }
    t.print();
}

fn print_throughput(rows: &[(Lb, f64)], seconds: u32, n: u32) {
    let direct = rows
        .iter()
        .find(|(lb, _)| *lb == Lb::Direct)
        .map_or(0.0, |r| r.1);
    let mut t = Table::new(
        &format!("(e) TCP throughput, iperf3 -t {seconds}, one stream, {n} services loaded"),
        &["path", "Gbit/s", "÷ direct"],
    );
    for (lb, g) in rows {
        t.row(vec![
            lb.label().into(),
            format!("{g:.2}"),
            times(*g, direct),
        ]);
    }
    t.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_renders_markdown() {
        let mut t = Table::new("T", &["a", "bb"]);
        t.row(vec!["x".into(), "1.0 ms".into()]);
        assert_eq!(
            t.render(),
            "\n### T\n\n| a |     bb |\n| - | -----: |\n| x | 1.0 ms |\n"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(ms(Duration::from_micros(250)), "0.250 ms");
        assert_eq!(ms(Duration::from_micros(25_040)), "25.0 ms");
        assert_eq!(times(50.0, 2.0), "25×");
        assert_eq!(times(1.05, 1.0), "1.05×");
        assert!(utc_now().ends_with(" UTC"));
    }
}
