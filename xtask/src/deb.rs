// SPDX-License-Identifier: Apache-2.0
//! The .deb: the staged tree plus DEBIAN/ (control, conffiles, md5sums, maintainer scripts),
//! built with `dpkg-deb --root-owner-group` (no debhelper or cargo-deb needed).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::stage::Inputs;
use crate::util::{self, run};

/// `dpkg --print-architecture` (amd64, arm64).
pub fn architecture() -> Result<String> {
    Ok(run(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string())
}

/// Shared-library dependencies of the binaries from dpkg-shlibdeps (it wants a
/// debian/control, so it runs in a scratch dir); a safe default when it is missing.
fn shlib_depends(root: &Path) -> String {
    let fallback = "libc6 (>= 2.34), libgcc-s1 (>= 4.2)".to_string();
    if !util::have("dpkg-shlibdeps") {
        return fallback;
    }
    let Ok(scratch) = tempdir() else {
        return fallback;
    };
    let ok = std::fs::create_dir_all(scratch.join("debian")).is_ok()
        && std::fs::write(
            scratch.join("debian/control"),
            "Source: kldnet\n\nPackage: kldnet\nArchitecture: any\n",
        )
        .is_ok();
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&scratch).arg("-O");
    for (_, path) in crate::stage::BINARIES {
        cmd.arg(format!("-e{}", root.join(path).display()));
    }
    let out = if ok { run(&mut cmd).ok() } else { None };
    let _ = std::fs::remove_dir_all(&scratch);
    out.and_then(|o| {
        o.lines()
            .find_map(|l| l.strip_prefix("shlibs:Depends=").map(str::to_string))
    })
    .unwrap_or(fallback)
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kldnet-xtask-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The control file.
pub fn control(version: &str, arch: &str, installed_kib: u64, depends: &str) -> String {
    format!(
        "Package: {pkg}\n\
         Version: {version}-1\n\
         Architecture: {arch}\n\
         Maintainer: {maint}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Recommends: dbus\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://example.invalid/kldnet\n\
         Description: {summary}\n \
         kldnet steers the traffic of VMs, containers and host processes with eBPF:\n \
         services (ClusterIP, NodePort, LoadBalancer) balanced at connect() and per\n \
         packet, identity-based network policy with Kubernetes semantics, and\n \
         Hubble-style flow observability.\n \
         .\n \
         The kldnetd daemon reads /etc/kldnet/*.toml, applies every change\n \
         transactionally and keeps the dataplane pinned across restarts and\n \
         upgrades; kldnet is its command line; kldnet-kube-adapter turns Kubernetes\n \
         objects into kldnet configuration.\n",
        pkg = crate::PACKAGE,
        maint = crate::MAINTAINER,
        summary = crate::SUMMARY,
    )
}

/// Builds `<out>/kldnet_<version>-1_<arch>.deb` from the staged tree `stage`.
pub fn build(inputs: &Inputs, stage: &Path, work: &Path, out: &Path) -> Result<PathBuf> {
    let arch = architecture()?;
    let root = work.join("deb-root");
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("cp").arg("-a").arg(stage).arg(&root))?;
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;

    // The adapter's YAML parser (serde_norway) carries unsafe-libyaml-norway, a Rust
    // translation of libyaml compiled into the binary; lintian recognises libyaml's strings
    // in it. There is no shared library it could link instead.
    let overrides = root.join("usr/share/lintian/overrides");
    std::fs::create_dir_all(&overrides)?;
    std::fs::write(
        overrides.join(crate::PACKAGE),
        format!(
            "# libyaml translated to Rust (unsafe-libyaml-norway), statically part of the binary\n\
             {pkg}: embedded-library libyaml [usr/bin/kldnet-kube-adapter]\n",
            pkg = crate::PACKAGE
        ),
    )?;
    run(Command::new("chmod")
        .args(["-R", "u=rwX,go=rX"])
        .arg(root.join("usr/share/lintian")))?;

    let md5 = run(Command::new("sh")
        .arg("-c")
        .arg("find . -type f ! -path './DEBIAN/*' | LC_ALL=C sort | sed 's|^\\./||' | xargs md5sum")
        .current_dir(&root))?;
    let write = |name: &str, data: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let p = debian.join(name);
        std::fs::write(&p, data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let installed = util::installed_size_kib(&root, "DEBIAN")?;
    // procps: /bin/kill for the unit's ExecReload (not in a minimal Debian; found by the
    // nspawn boot test).
    let depends = format!("{}, procps", shlib_depends(&root));
    write(
        "control",
        &control(&inputs.version, &arch, installed, &depends),
        0o644,
    )?;
    write(
        "conffiles",
        &format!("/{}\n", crate::stage::CONFFILE),
        0o644,
    )?;
    write("md5sums", &md5, 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(inputs.root.join("packaging/deb").join(script))
            .with_context(|| format!("read packaging/deb/{script}"))?;
        write(script, &text, 0o755)?;
    }
    std::fs::set_permissions(&debian, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    util::clamp_mtimes(&root, inputs.epoch)?;

    std::fs::create_dir_all(out)?;
    let deb = out.join(format!(
        "{}_{}-1_{arch}.deb",
        crate::PACKAGE,
        inputs.version
    ));
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", inputs.epoch.to_string())
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb))?;
    std::fs::remove_dir_all(&root)?;
    Ok(deb)
}
