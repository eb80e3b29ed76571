// SPDX-License-Identifier: Apache-2.0
//! The packages, tested like a user: `xtask dist` builds the .deb and .rpm (release build,
//! reused when fresh); their metadata and contents are checked with dpkg-deb, lintian and rpm;
//! the .deb is installed into a throwaway Debian root (debootstrap, cached under
//! target/test-roots), booted with systemd-nspawn where that works, reinstalled (upgrade
//! path) and purged.
//!
//! Skips what the machine lacks (dpkg-deb, rpmbuild, lintian, root, debootstrap,
//! systemd-nspawn) with the reason. Run: `cargo test -p xtask --test packages -- --nocapture`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn have(tool: &str) -> bool {
    xtask::util::have(tool)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, returning (success, stdout + stderr).
fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let (ok, text) = sh(cmd);
    assert!(ok, "{shown} failed:\n{text}");
    text
}

struct Built {
    _dir: tempfile::TempDir,
    deb: PathBuf,
    rpm: Option<PathBuf>,
}

/// Builds the packages once for every test in this file.
fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !have("dpkg-deb") {
                eprintln!("skipping package tests: dpkg-deb not installed");
                return None;
            }
            let dir = tempfile::tempdir().expect("temp dir");
            let started = Instant::now();
            let rpm = have("rpmbuild");
            let paths = xtask::dist::dist(&xtask::dist::Options {
                bin_dir: None,
                out: Some(dir.path().to_path_buf()),
                rpm,
            })
            .unwrap_or_else(|e| panic!("xtask dist: {e:#}"));
            for p in &paths {
                eprintln!(
                    "built {} ({} bytes) in {:?}",
                    p.display(),
                    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                    started.elapsed()
                );
            }
            Some(Built {
                deb: paths[0].clone(),
                rpm: rpm.then(|| paths[1].clone()),
                _dir: dir,
            })
        })
        .as_ref()
}

/// Files every package must install (path without leading /).
const PAYLOAD: &[&str] = &[
    "usr/sbin/kldnetd",
    "usr/bin/kldnet",
    "usr/bin/kldnet-kube-adapter",
    "usr/lib/systemd/system/kldnetd.service",
    "usr/lib/systemd/system/kldnet-kube-adapter.service",
    "usr/lib/sysusers.d/kldnet.conf",
    "usr/share/dbus-1/system.d/org.kldload.Kldnet1.conf",
    "etc/kldnet/kldnet.toml",
    "usr/share/doc/kldnet/examples/etc/kldnet/kldnet.toml",
    "usr/share/doc/kldnet/examples/etc/kldnet/services.toml",
    "usr/share/doc/kldnet/config.md",
    "usr/share/man/man8/kldnetd.8.gz",
    "usr/share/man/man8/kldnet.8.gz",
    "usr/share/man/man8/kldnet-kube-adapter.8.gz",
    "usr/share/bash-completion/completions/kldnet",
    "usr/share/fish/vendor_completions.d/kldnet.fish",
];

/// Lintian tags accepted, with why.
const LINTIAN_ACCEPTED: &[(&str, &str)] = &[(
    "initial-upload-closes-no-bugs",
    "not uploaded to the Debian archive",
)];

#[test]
fn deb_metadata_contents_and_lintian() {
    let Some(b) = built() else { return };
    let info = must(Command::new("dpkg-deb").arg("-I").arg(&b.deb));
    let field = |name: &str| -> String {
        must(Command::new("dpkg-deb").arg("-f").arg(&b.deb).arg(name))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "kldnet");
    assert_eq!(field("Version"), format!("{}-1", xtask::version()));
    assert!(field("Depends").contains("libc6"), "Depends: {info}");
    assert!(field("Installed-Size").parse::<u64>().unwrap_or(0) > 1000);
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        assert!(
            info.contains(script),
            "control archive has {script}: {info}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    must(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&b.deb)
            .arg(tmp.path().join("DEBIAN")),
    );
    let conf = std::fs::read_to_string(tmp.path().join("DEBIAN/conffiles")).unwrap();
    assert_eq!(conf.trim(), "/etc/kldnet/kldnet.toml");
    let postinst = std::fs::read_to_string(tmp.path().join("DEBIAN/postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper enable 'kldnetd.service'"));
    assert!(postinst.contains("deb-systemd-invoke restart 'kldnetd.service'"));

    let list = must(Command::new("dpkg-deb").arg("-c").arg(&b.deb));
    for path in PAYLOAD {
        let line = list
            .lines()
            .find(|l| l.ends_with(&format!("./{path}")))
            .unwrap_or_else(|| panic!("{path} missing from the .deb:\n{list}"));
        assert!(line.contains("root/root"), "{path} owned by root: {line}");
        let want = if path.contains("bin/") {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert!(line.starts_with(want), "{path} mode {want}: {line}");
    }

    assert!(
        list.contains("./usr/share/lintian/overrides/kldnet"),
        "the lintian override ships in the .deb:\n{list}"
    );

    // The man pages come from the clap definitions.
    must(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&b.deb)
            .arg(tmp.path().join("root")),
    );
    let man = must(
        Command::new("gzip")
            .arg("-dc")
            .arg(tmp.path().join("root/usr/share/man/man8/kldnetd.8.gz")),
    );
    assert!(man.contains(".TH kldnetd 8"), "kldnetd.8 title: {man}");
    assert!(
        man.contains("config\\-dir"),
        "kldnetd.8 documents --config-dir"
    );
    assert!(man.contains("RestartPreventExitStatus") || man.contains("EXIT STATUS"));

    if !have("lintian") {
        eprintln!("lintian not installed: skipped (apt-get install lintian)");
        return;
    }
    let (_, out) = sh(Command::new("lintian")
        .args(["--no-tag-display-limit"])
        .arg(&b.deb));
    eprintln!("lintian findings:\n{out}");
    let bad: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .filter(|l| !LINTIAN_ACCEPTED.iter().any(|(tag, _)| l.contains(tag)))
        .collect();
    assert!(
        bad.is_empty(),
        "lintian errors/warnings:\n{}",
        bad.join("\n")
    );
}

#[test]
fn rpm_payload_and_scriptlets() {
    let Some(b) = built() else { return };
    let Some(rpm) = &b.rpm else {
        eprintln!("rpmbuild not installed: rpm not built (apt-get install rpm)");
        return;
    };
    let list = must(Command::new("rpm").arg("-qlp").arg(rpm));
    for path in PAYLOAD {
        assert!(
            list.lines().any(|l| l == format!("/{path}")),
            "/{path} missing from the rpm:\n{list}"
        );
    }
    assert!(list.contains("/usr/share/zsh/site-functions/_kldnet"));
    assert!(list.contains("/usr/lib/systemd/system-preset/80-kldnet.preset"));
    let conf = must(Command::new("rpm").arg("-qp").arg("--configfiles").arg(rpm));
    assert_eq!(conf.trim(), "/etc/kldnet/kldnet.toml");
    let scripts = must(Command::new("rpm").arg("-qp").arg("--scripts").arg(rpm));
    for want in [
        "systemd-update-helper install-system-units kldnetd.service",
        "systemd-update-helper remove-system-units",
        "systemd-update-helper mark-restart-system-units kldnetd.service",
        "groupadd -r kldnet",
    ] {
        assert!(
            scripts.contains(want),
            "rpm scriptlets lack {want:?}:\n{scripts}"
        );
    }
    let info = must(Command::new("rpm").arg("-qip").arg(rpm));
    assert!(
        info.contains(&format!("Version     : {}", xtask::version())),
        "{info}"
    );
}

/// A pristine Debian 12 root with systemd and dbus, made once with debootstrap and kept in
/// `target/test-roots` (about 40 s from deb.debian.org the first time).
fn debian_root() -> Option<PathBuf> {
    if !is_root() || !have("debootstrap") {
        eprintln!("no debootstrap root: needs root and debootstrap (apt-get install debootstrap)");
        return None;
    }
    let cache = xtask::dist::target_dir().join("test-roots/bookworm-systemd");
    if cache.join("usr/bin/systemctl").exists() {
        return Some(cache);
    }
    let tmp = cache.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    let started = Instant::now();
    let (ok, out) = sh(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus",
            "bookworm",
        ])
        .arg(&tmp)
        .arg("http://deb.debian.org/debian"));
    if !ok {
        eprintln!("debootstrap failed, falling back to dpkg -x:\n{out}");
        let _ = std::fs::remove_dir_all(&tmp);
        return None;
    }
    eprintln!("debootstrap took {:?}", started.elapsed());
    std::fs::rename(&tmp, &cache).unwrap();
    Some(cache)
}

fn chroot(root: &Path, args: &[&str]) -> (bool, String) {
    sh(Command::new("chroot")
        .arg(root)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ))
}

#[test]
fn deb_installs_boots_upgrades_and_purges() {
    let Some(b) = built() else { return };
    let Some(pristine) = debian_root() else {
        // Fallback: unpack and check the paths.
        let tmp = tempfile::tempdir().unwrap();
        must(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&b.deb)
                .arg(tmp.path()),
        );
        for path in PAYLOAD {
            assert!(tmp.path().join(path).exists(), "{path} after dpkg -x");
        }
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    must(Command::new("cp").arg("-a").arg(&pristine).arg(&root));
    std::fs::copy(&b.deb, root.join("tmp/kldnet.deb")).unwrap();

    // As a user would: apt resolves the dependencies (procps) from deb.debian.org.
    let _ = std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"));
    let (ok, out) = chroot(&root, &["apt-get", "update", "-qq"]);
    assert!(ok, "apt-get update in the Debian root:\n{out}");
    let (ok, out) = chroot(
        &root,
        &[
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "/tmp/kldnet.deb",
        ],
    );
    assert!(
        ok,
        "apt-get install ./kldnet.deb in the Debian root:\n{out}"
    );
    for path in PAYLOAD {
        assert!(root.join(path).exists(), "{path} installed");
    }
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/kldnetd.service")
            .symlink_metadata()
            .is_ok(),
        "kldnetd enabled by postinst"
    );
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/kldnet-kube-adapter.service")
            .exists(),
        "the kube adapter is not enabled by default"
    );
    let (ok, groups) = chroot(&root, &["getent", "group", "kldnet"]);
    assert!(ok, "group kldnet created: {groups}");
    let (ok, v) = chroot(&root, &["kldnet", "--version"]);
    assert!(ok && v.contains(xtask::version()), "kldnet --version: {v}");
    for dir in ["/etc/kldnet", "/usr/share/doc/kldnet/examples/etc/kldnet"] {
        let (ok, out) = chroot(&root, &["kldnet", "check", "--config-dir", dir]);
        assert!(ok, "kldnet check --config-dir {dir} in the root:\n{out}");
    }
    let (ok, status) = chroot(
        &root,
        &["dpkg-query", "-W", "-f=${Status} ${Conffiles}", "kldnet"],
    );
    assert!(
        ok && status.contains("install ok installed") && status.contains("/etc/kldnet/kldnet.toml"),
        "dpkg-query: {status}"
    );

    boot_with_nspawn(&root);

    // Upgrade path (same version again) keeps an edited conffile.
    let conf = root.join("etc/kldnet/kldnet.toml");
    let edited = format!("{}\n# edited\n", std::fs::read_to_string(&conf).unwrap());
    std::fs::write(&conf, &edited).unwrap();
    let (ok, out) = chroot(&root, &["dpkg", "-i", "--force-confold", "/tmp/kldnet.deb"]);
    assert!(ok, "reinstall:\n{out}");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        edited,
        "conffile kept"
    );

    let (ok, out) = chroot(&root, &["dpkg", "--purge", "kldnet"]);
    assert!(ok, "purge:\n{out}");
    for path in PAYLOAD {
        assert!(!root.join(path).exists(), "{path} removed by purge");
    }
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/kldnetd.service")
            .symlink_metadata()
            .is_err(),
        "enable symlink removed by purge"
    );
}

/// Collects what a user checks after installing, from inside the booted container.
const PROBE: &str = r#"#!/bin/sh
exec > /kldnet-probe.out 2>&1
for i in $(seq 1 100); do systemctl is-active -q kldnetd && break; sleep 0.1; done
echo "is-active=$(systemctl is-active kldnetd)"
echo "status-state=$(kldnet status --json | sed -n 's/.*"state": *"\([a-z]*\)".*/\1/p' | head -1)"
systemctl reload kldnetd; echo "reload-rc=$?"
echo "is-active-after-reload=$(systemctl is-active kldnetd)"
echo "status-text=$(systemctl show -P StatusText kldnetd)"
for i in $(seq 1 50); do busctl status org.kldload.Kldnet1 >/dev/null 2>&1 && break; sleep 0.1; done
echo "dbus-state=$(busctl get-property org.kldload.Kldnet1 /org/kldload/Kldnet1 org.kldload.Kldnet1 State)"
echo "dbus-reload=$(busctl call org.kldload.Kldnet1 /org/kldload/Kldnet1 org.kldload.Kldnet1 Reload)"
echo "nobody-reload=$(setpriv --reuid=65534 --regid=65534 --clear-groups busctl call org.kldload.Kldnet1 /org/kldload/Kldnet1 org.kldload.Kldnet1 Reload 2>&1)"
echo "--- journal"
journalctl -u kldnetd --no-pager -o cat
systemctl poweroff
"#;

/// Boots the root with systemd-nspawn (own network namespace, a private bpffs at
/// /sys/fs/bpf, the unit's capabilities) and checks the unit like an operator would.
fn boot_with_nspawn(root: &Path) {
    if !have("systemd-nspawn") {
        eprintln!(
            "systemd-nspawn not installed: boot check skipped (apt-get install systemd-container)"
        );
        return;
    }
    let bpf = root.with_file_name("bpffs");
    std::fs::create_dir_all(&bpf).unwrap();
    let (ok, out) = sh(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpf));
    assert!(ok, "mount bpffs: {out}");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(bpf.clone());

    let probe = root.join("usr/local/sbin/kldnet-probe");
    std::fs::write(&probe, PROBE).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        root.join("etc/systemd/system/kldnet-probe.service"),
        "[Unit]\nAfter=kldnetd.service dbus.service\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/kldnet-probe\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    let _ = std::os::unix::fs::symlink(
        "/etc/systemd/system/kldnet-probe.service",
        wants.join("kldnet-probe.service"),
    );
    let machine = format!("kldnet-pkg-{}", std::process::id());
    let started = Instant::now();
    let mut child = Command::new("systemd-nspawn")
        .arg("-D")
        .arg(root)
        .args([
            "--boot",
            "--console=pipe",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
            "--system-call-filter=bpf perf_event_open",
            &format!("--machine={machine}"),
        ])
        .arg(format!("--bind={}:/sys/fs/bpf", bpf.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn systemd-nspawn");
    let deadline = started + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = child
        .wait_with_output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    let out = std::fs::read_to_string(root.join("kldnet-probe.out")).unwrap_or_default();
    eprintln!(
        "nspawn boot finished in {:?} ({status:?}); probe output:\n{out}",
        started.elapsed()
    );
    if out.is_empty() {
        panic!(
            "the container did not run the probe (boot failed?) status {status:?}\nconsole tail:\n{}",
            console
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let get = |k: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        get("is-active"),
        "active",
        "kldnetd active in the container:\n{out}"
    );
    assert_eq!(get("status-state"), "running", "kldnet status:\n{out}");
    assert_eq!(get("reload-rc"), "0", "systemctl reload:\n{out}");
    assert_eq!(
        get("is-active-after-reload"),
        "active",
        "after reload:\n{out}"
    );
    assert!(
        get("status-text").starts_with("generation"),
        "STATUS= line:\n{out}"
    );
    assert_eq!(
        get("dbus-state"),
        "s \"running\"",
        "State over the system bus:\n{out}"
    );
    assert!(
        get("dbus-reload").starts_with("bts true"),
        "Reload() over the system bus:\n{out}"
    );
    assert!(
        get("nobody-reload").contains("denied"),
        "nobody may not Reload() on the system bus:\n{out}"
    );
    assert!(
        out.contains("datapath loaded"),
        "journal has the daemon's log:\n{out}"
    );
    assert!(
        out.contains("reload (SIGHUP)"),
        "journal shows the reload:\n{out}"
    );
    std::fs::remove_file(root.join("kldnet-probe.out")).unwrap();
    std::fs::remove_file(wants.join("kldnet-probe.service")).unwrap();
}
