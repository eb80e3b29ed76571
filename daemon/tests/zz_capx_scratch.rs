// scratch (not committed)
mod common;
use common::*;
use std::time::Duration;
#[test]
fn capx() {
    let sets = std::env::var("CAPSETS").unwrap();
    for set in sets.split(';') {
        let sbx = example_sandbox("capx").unwrap();
        let wrapper = sbx.dir().join("wrap.sh");
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec setpriv --inh-caps=-all --bounding-set=-all,{set} {} \"$@\"\n", kldnetd().display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        match sbx.start_daemon_with_timeout(&wrapper, &["--dbus", "none"], Duration::from_secs(10)) {
            Ok(d) => {
                let st = status(&sbx);
                let p = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 3, 500);
                let _s = serve_tcp(&sbx, &["backend-1", "backend-2"], 8080);
                let p2 = probe_tcp(&sbx, "frontend-1", BACKEND_VIP, 3, 500);
                eprintln!("SET {set}: running state={} progs={} missing={} probe_before_servers={} probe={}/{}\nLOG {}", st["state"], programs(&st).len(), st["kernel"]["missing"], p.ok, p2.ok, p2.attempts, kldnet_testkit::tail(&d.log(), 8));
            }
            Err(e) => eprintln!("SET {set}: FAILED {}", format!("{e:#}").lines().filter(|l| l.contains("ERROR")||l.contains("rror")).take(3).collect::<Vec<_>>().join(" | ")),
        }
    }
}
