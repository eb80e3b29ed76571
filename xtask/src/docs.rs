// SPDX-License-Identifier: Apache-2.0
//! Man pages and shell completions, generated from the CLI definitions
//! ([`kldnet::cli::Cli`], [`kldnet::daemon::DaemonArgs`], [`kldnet_kube_adapter::cli::Cli`]) so
//! they cannot drift.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

fn escape(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// Extra sections appended to a page: (title, paragraphs; a paragraph starting with
/// `.` is raw roff).
fn sections(out: &mut String, sections: &[(&str, &[&str])]) {
    for (title, paras) in sections {
        out.push_str(&format!(".SH \"{title}\"\n"));
        for p in *paras {
            if p.starts_with('.') {
                out.push_str(p);
            } else {
                out.push_str(".PP\n");
                out.push_str(&escape(p));
            }
            out.push('\n');
        }
    }
}

const DAEMON_SECTIONS: &[(&str, &[&str])] = &[
    (
        "FILES",
        &[
            ".TP\n/etc/kldnet/*.toml, /run/kldnet/*.toml",
            "Configuration, read in lexical order of file name; a file in /etc/kldnet masks a same-named file in /run/kldnet. See /usr/share/doc/kldnet/config.md.",
            ".TP\n/run/kldnet/kldnet.sock",
            "The API socket used by kldnet(8).",
            ".TP\n/sys/fs/bpf/kldnet/v1",
            "Pinned maps and links: they outlive the daemon, so traffic keeps flowing across restarts and upgrades. kldnetd cleanup removes them.",
        ],
    ),
    (
        "SIGNALS",
        &[
            "SIGHUP reloads the configuration (systemctl reload kldnetd). A configuration with errors is reported and not applied: the last good generation keeps serving and the daemon does not exit. SIGTERM stops the daemon and leaves the dataplane in place.",
        ],
    ),
    (
        "EXIT STATUS",
        &[
            "0 after SIGTERM or SIGINT; 2 on a bad command line; 4 when the datapath cannot start (no bpffs, missing kernel feature, missing capability). The unit does not restart on 2 or 4.",
        ],
    ),
    (
        "D-BUS",
        &[
            "On the system bus kldnetd owns org.kldload.Kldnet1 at /org/kldload/Kldnet1: properties Version, Generation, State, LastReloadError, EndpointsLocal, Services, Policies, Identities; methods Reload() and Status(); signal Reloaded. Methods are allowed for root and the group kldnet.",
        ],
    ),
    (
        "SEE ALSO",
        &["kldnet(8), systemctl(1), journalctl(1); /usr/share/doc/kldnet/operations.md"],
    ),
];

const CLI_SECTIONS: &[(&str, &[&str])] = &[
    (
        "EXIT STATUS",
        &["0 success; 1 failure or a deny verdict; 2 usage error; 3 the daemon is unreachable."],
    ),
    (
        "EXAMPLES",
        &[
            ".nf\nkldnet check\nsystemctl reload kldnetd\nkldnet status\nkldnet service list \\-o json\n.fi",
        ],
    ),
    (
        "SEE ALSO",
        &["kldnetd(8); /usr/share/doc/kldnet/config.md, /usr/share/doc/kldnet/operations.md"],
    ),
];

/// `(file name, roff text)` of kldnetd.8, kldnet.8 and kldnet-kube-adapter.8. `date` like "2026-12-02".
pub fn man_pages(version: &str, date: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
    let pages = [
        (
            "kldnetd",
            kldnet::daemon::DaemonArgs::command(),
            DAEMON_SECTIONS,
        ),
        ("kldnet", kldnet::cli::Cli::command(), CLI_SECTIONS),
        (
            "kldnet-kube-adapter",
            kldnet_kube_adapter::cli::Cli::command(),
            ADAPTER_SECTIONS,
        ),
    ];
    let mut out = Vec::new();
    for (name, cmd, extra) in pages {
        let mut man = clap_mangen::Man::new(cmd)
            .section("8")
            .manual("kldnet")
            .source(format!("kldnet {version}"));
        if let Some(d) = date {
            man = man.date(d);
        }
        let mut buf = Vec::new();
        man.render(&mut buf)?;
        let mut text = String::from_utf8(buf)?;
        sections(&mut text, extra);
        out.push((format!("{name}.8"), text.into_bytes()));
    }
    Ok(out)
}

const ADAPTER_SECTIONS: &[(&str, &[&str])] = &[
    (
        "FILES",
        &[
            ".TP\n/run/kldnet/50-kube.toml",
            "What watch keeps up to date (written to a temporary file and renamed, rewritten only on a real change); kldnetd reads it with /etc/kldnet.",
        ],
    ),
    (
        "EXIT STATUS",
        &[
            "render: 0 everything translated; 3 files written but some objects skipped or translated in part (listed on standard error with the reason); 1 nothing written. watch: 1 when it cannot reach or authenticate to the API server.",
        ],
    ),
    (
        "SEE ALSO",
        &["kldnetd(8), kldnet(8); /usr/share/doc/kldnet/kube-adapter.md"],
    ),
];

/// One completion script.
#[derive(Debug)]
pub struct Completion {
    pub shell: Shell,
    /// `kldnet`, `_kldnet` or `kldnet.fish`.
    pub file_name: String,
    pub text: Vec<u8>,
}

/// bash, zsh and fish completions for kldnet and kldnetd.
pub fn completions() -> Result<Vec<Completion>> {
    let mut out = Vec::new();
    for (bin, mut cmd) in [
        ("kldnet", kldnet::cli::Cli::command()),
        ("kldnetd", kldnet::daemon::DaemonArgs::command()),
        (
            "kldnet-kube-adapter",
            kldnet_kube_adapter::cli::Cli::command(),
        ),
    ] {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, bin, &mut text);
            let file_name = match shell {
                Shell::Zsh => format!("_{bin}"),
                Shell::Fish => format!("{bin}.fish"),
                _ => bin.to_string(),
            };
            out.push(Completion {
                shell,
                file_name,
                text,
            });
        }
    }
    Ok(out)
}
