//! The VM lifecycle through the real CLI and the real Firecracker binary:
//! create, list, stop (falling back to signals), reconcile after kill -9,
//! start again, delete leaving nothing behind, concurrent creates.
//! The guest never boots on this tier's hosts, so no test waits for it.

use std::collections::HashSet;
use std::time::Duration;

use banger_testkit::context::firecracker_context as context;
use banger_testkit::procs::is_vmm;
use banger_testkit::{Args, create_small, eventually, make_ext4, pid_alive, vmlinux};
use serde_json::Value;

#[test]
fn create_stop_kill_start_delete() {
    let Some(ctx) = context() else { return };
    let created = ctx.json(&[
        "vm",
        "create",
        "dev1",
        "--vcpus",
        "1",
        "--memory",
        "256",
        "--work-size",
        "1G",
        "--no-wait",
        "--json",
        "--timings",
    ]);
    assert_eq!(created["name"], "dev1");
    assert_eq!(created["state"], "running");
    assert_eq!(created["dns_name"], "dev1.vm");
    assert_eq!(
        created["tap"],
        format!("bg-{}", created["id"].as_str().unwrap())
    );
    let cow = created["cow_strategy"].as_str().unwrap();
    assert!(["dm-snapshot", "reflink", "copy"].contains(&cow), "{cow}");
    for stage in [
        "allocate",
        "disks",
        "root disk",
        "tap",
        "spawn",
        "configure",
    ] {
        assert!(
            created["timings"][stage].is_number(),
            "missing stage {stage}: {created}"
        );
    }
    let pid = created["pid"].as_i64().unwrap();
    assert!(pid_alive(pid));

    // The list agrees, in every format.
    let listed = ctx.json(&["vm", "ls", "--json"]);
    assert_eq!(listed[0]["name"], "dev1");
    assert_eq!(listed[0]["pid"], pid);
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "dev1\n");
    let table = ctx.ok(&["vm", "list"]);
    assert!(
        table.starts_with("NAME") && table.contains("dev1") && table.contains("running"),
        "{table}"
    );

    // Logs: the console (the VMM's own output before its logger is set up)
    // and, with --vmm, the VMM's log of the configuration banger sent.
    let console = ctx.ok(&["vm", "logs", "dev1"]);
    assert!(console.contains("Running Firecracker"), "{console}");
    let vmm_log = ctx.ok(&["vm", "logs", "dev1", "--vmm"]);
    assert!(vmm_log.contains("InstanceStart"), "{vmm_log}");

    // The work disk exists at the requested size and carries banger's key.
    let id = created["id"].as_str().unwrap().to_owned();
    let work = ctx.home.join("vms").join(&id).join("work.ext4");
    assert_eq!(std::fs::metadata(&work).unwrap().len(), 1 << 30);
    let key = std::process::Command::new("debugfs")
        .args(["-R", "cat /.ssh/authorized_keys"])
        .arg(&work)
        .output()
        .unwrap();
    let public = std::fs::read_to_string(ctx.home.join("ssh/id_ed25519.pub")).unwrap();
    assert_eq!(String::from_utf8_lossy(&key.stdout).trim(), public.trim());

    // No guest answers Ctrl-Alt-Del here: stop falls back to signals in time.
    let started = std::time::Instant::now();
    let err = ctx.run(&["vm", "stop", "dev1", "--timeout", "1s"]);
    assert!(
        err.status.success(),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!pid_alive(pid));
    let stopped = ctx.show("dev1");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["pid"], Value::Null);
    assert_eq!(stopped["tap"], Value::Null);
    assert!(ctx.links("bg-").is_empty());
    assert!(ctx.loops().is_empty());

    // Start again, then kill -9 the VMM: the next listing reconciles.
    ctx.ok(&["vm", "start", "dev1", "--no-wait"]);
    let running = ctx.show("dev1");
    assert_eq!(running["state"], "running");
    let pid = running["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || !pid_alive(pid)));
    let listed = ctx.json(&["vm", "ls", "--json"]);
    assert_eq!(listed[0]["state"], "stopped");
    assert!(
        listed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("exited unexpectedly")
    );
    assert!(
        ctx.links("bg-").is_empty(),
        "TAP left behind: {:?}",
        ctx.links("bg-")
    );
    assert!(ctx.loops().is_empty());
    assert!(
        !ctx.run_dir.join("vms").join(&id).exists(),
        "sockets left behind"
    );

    // The work disk survives stop/start; delete removes everything.
    ctx.ok(&["vm", "start", "dev1", "--no-wait"]);
    ctx.ok(&["vm", "restart", "dev1", "--no-wait"]);
    ctx.ok(&["vm", "rm", "dev1", "--force"]);
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");
    assert!(!ctx.home.join("vms").join(&id).exists());
    assert!(ctx.links("bg-").is_empty());
    assert!(ctx.loops().is_empty());
    assert!(!ctx.run_dir.join("vms").join(&id).exists());
    assert!(eventually(Duration::from_secs(3), || {
        ctx.processes().iter().all(|p| !is_vmm(*p))
    }));
}

#[test]
fn no_start_creates_disks_without_a_process() {
    let Some(ctx) = context() else { return };
    let vm = ctx.json(&[
        "vm",
        "create",
        "cold",
        "--no-start",
        "--json",
        "--work-size",
        "256M",
    ]);
    assert_eq!(vm["state"], "stopped");
    assert_eq!(vm["pid"], Value::Null);
    let dir = ctx.home.join("vms").join(vm["id"].as_str().unwrap());
    assert!(dir.join("work.ext4").exists());
    assert!(ctx.processes().iter().all(|p| !is_vmm(*p)));
    // A generated name when none is given.
    let generated = ctx.ok(&["vm", "create", "--no-start"]);
    let name = generated.trim();
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())
    );
    ctx.ok(&["vm", "delete", "cold", name]);
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");
}

#[test]
fn concurrent_creates_get_distinct_addresses() {
    let Some(ctx) = context() else { return };
    let creates: Vec<Args> = (0..8)
        .map(|i| {
            let name = format!("c{i}");
            Args::new(&[
                "vm",
                "create",
                &name,
                "--no-start",
                "--work-size",
                "64M",
                "--json",
            ])
        })
        .collect();
    ctx.all_ok(&creates);
    let vms = ctx.json(&["vm", "ls", "--json"]);
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 8);
    for field in ["name", "ip", "mac", "vsock_cid", "id"] {
        let distinct: HashSet<String> = vms.iter().map(|v| v[field].to_string()).collect();
        assert_eq!(distinct.len(), 8, "duplicate {field}");
    }
    // The first creates raced to make banger's SSH key: all VMs got the same one.
    let public = std::fs::read_to_string(ctx.home.join("ssh/id_ed25519.pub")).unwrap();
    for vm in vms {
        let work = ctx
            .home
            .join("vms")
            .join(vm["id"].as_str().unwrap())
            .join("work.ext4");
        let key = std::process::Command::new("debugfs")
            .args(["-R", "cat /.ssh/authorized_keys"])
            .arg(&work)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&key.stdout).trim(),
            public.trim(),
            "{}",
            vm["name"]
        );
    }
}

#[test]
fn bad_input_is_refused_before_any_side_effect() {
    let Some(ctx) = context() else { return };
    let dir = ctx.dir.path().to_str().unwrap().to_owned();
    let not_elf = ctx.dir.path().join("bzImage");
    std::fs::write(&not_elf, b"MZ not an elf").unwrap();
    let rootfs = ctx.dir.path().join("r.ext4");
    make_ext4(&rootfs, 16);
    let kernel = vmlinux().to_str().unwrap().to_owned();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["vm", "create", "Bad_Name"], 2, "Bad_Name"),
        (vec!["vm", "create", "--", "-lead"], 2, "-lead"),
        (vec!["vm", "create", "ok", "--vcpus", "0"], 2, "0"),
        (vec!["vm", "create", "ok", "--vcpus", "64"], 2, "64"),
        (vec!["vm", "create", "ok", "--memory", "64"], 2, "64"),
        (vec!["vm", "create", "ok", "--work-size", "8X"], 2, "8X"),
        (vec!["vm", "create", "ok", "--ttl", "5"], 2, "5"),
        (vec!["vm", "create", "ok", "--image", "nope"], 1, "nope"),
        (
            vec!["vm", "create", "ok", "--disk-size", "1M"],
            2,
            "disk-size",
        ),
        (vec!["vm", "stop", "ghost"], 1, "ghost"),
        (
            vec![
                "image",
                "import",
                "k",
                "--kernel",
                not_elf.to_str().unwrap(),
                "--rootfs",
                rootfs.to_str().unwrap(),
            ],
            2,
            "not an ELF",
        ),
        (
            vec![
                "image",
                "import",
                "k",
                "--kernel",
                &dir,
                "--rootfs",
                rootfs.to_str().unwrap(),
            ],
            2,
            "not a regular file",
        ),
        (
            vec![
                "image", "import", "k", "--kernel", &kernel, "--rootfs", &dir,
            ],
            2,
            "not a regular file",
        ),
        (
            vec![
                "image",
                "import",
                "k",
                "--kernel",
                &kernel,
                "--rootfs",
                not_elf.to_str().unwrap(),
            ],
            2,
            "not an ext",
        ),
        (
            vec![
                "image",
                "import",
                "k",
                "--kernel",
                &kernel,
                "--rootfs",
                "/dev/null",
            ],
            2,
            "not a regular file",
        ),
    ];
    for (args, code, mention) in cases {
        let stderr = ctx.fails(code, &args);
        assert!(stderr.contains(mention), "{args:?}: {stderr}");
    }
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");
    assert_eq!(ctx.ok(&["image", "ls", "-q"]), "base\n");
    let entries: Vec<_> = std::fs::read_dir(ctx.home.join("vms")).unwrap().collect();
    assert!(entries.is_empty(), "files left behind: {entries:?}");
    assert!(ctx.links("bg-").is_empty());
}

#[test]
fn create_waits_for_the_guest_and_says_where_to_look_on_timeout() {
    let Some(ctx) = context() else { return };
    // The guest never answers on this tier's hosts: the wait runs out.
    let started = std::time::Instant::now();
    let stderr = ctx.fails(1, &create_small("slow").with(&["--timeout", "2s"]));
    assert!(started.elapsed() >= Duration::from_secs(2), "did not wait");
    assert!(
        stderr.contains("did not become ready within 2s"),
        "{stderr}"
    );
    assert!(stderr.contains("banger vm logs slow"), "{stderr}");
    // The VM is left running for the user to inspect.
    assert_eq!(ctx.show("slow")["state"], "running");
    ctx.ok(&["vm", "rm", "--force", "slow"]);
}

#[test]
fn verbose_prints_each_stage_as_it_runs() {
    let Some(ctx) = banger_testkit::context::context_without_kvm() else {
        return;
    };
    let out = ctx.run(&create_small("loud").with(&["--no-start", "-v"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for stage in ["allocate", "disks"] {
        assert!(stderr.contains(&format!("banger: {stage} ...")), "{stderr}");
        assert!(
            stderr.contains(&format!("banger: {stage} done in ")),
            "{stderr}"
        );
    }
    let out = ctx.run(&create_small("quiet").with(&["--no-start"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("banger: "), "{stderr}");
}

/// `nft -j list table inet banger` in the context's namespace: the chain
/// and the expression of each rule tagged `banger:<id>`.
fn rules_of(ctx: &banger_testkit::TestContext, id: &str) -> Vec<(String, String)> {
    let listed = ctx.sh(&["nft", "-j", "list", "table", "inet", "banger"]);
    let listed: Value = serde_json::from_str(&listed).expect("nft -j output");
    listed["nftables"]
        .as_array()
        .expect("a list of objects")
        .iter()
        .filter_map(|object| object.get("rule"))
        // `banger:<home>:<id>`: the home that made them, then the VM.
        .filter(|rule| {
            rule["comment"]
                .as_str()
                .is_some_and(|c| c.starts_with("banger:") && c.ends_with(&format!(":{id}")))
        })
        .map(|rule| {
            (
                rule["chain"].as_str().expect("a chain name").to_owned(),
                rule["expr"].to_string(),
            )
        })
        .collect()
}

#[test]
fn published_ports_come_and_go_with_the_vm_and_a_taken_port_is_refused() {
    let Some(ctx) = context() else { return };
    let created = ctx.json(
        &create_small("web")
            .with(&["-p", "8080:80", "--publish", "0.0.0.0:5353:53/udp"])
            .with(&["--no-wait", "--json"]),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["published"],
        serde_json::json!([
            {"addr": "127.0.0.1", "host_port": 8080, "guest_port": 80, "proto": "tcp"},
            {"addr": "0.0.0.0", "host_port": 5353, "guest_port": 53, "proto": "udp"}
        ])
    );
    let chains = |rules: Vec<(String, String)>| {
        let mut chains: Vec<String> = rules.into_iter().map(|(chain, _)| chain).collect();
        chains.sort();
        chains
    };
    let rules = rules_of(&ctx, &id);
    assert_eq!(
        chains(rules.clone()),
        [
            "forward",
            "forward",
            "output",
            "output",
            "ports-forward",
            "ports-forward",
            "ports-postrouting",
            "ports-postrouting",
            "postrouting",
            "prerouting",
        ],
        "{rules:#?}"
    );
    assert_eq!(
        ctx.sh(&["sysctl", "-n", "net.ipv4.conf.banger0.route_localnet"])
            .trim(),
        "1"
    );
    assert_eq!(
        ctx.ok(&["vm", "port", "web"]),
        "127.0.0.1:8080->80/tcp\n0.0.0.0:5353->53/udp\n"
    );
    let table = ctx.ok(&["vm", "ls"]);
    assert!(
        table.contains("127.0.0.1:8080->80/tcp,0.0.0.0:5353->53/udp"),
        "{table}"
    );
    let shown = ctx.ok(&["vm", "show", "web"]);
    assert!(
        shown.contains("published     127.0.0.1:8080->80/tcp,0.0.0.0:5353->53/udp"),
        "{shown}"
    );

    // A host port another VM publishes, or something on the host holds, is
    // refused before anything is made.
    let err = ctx.fails(
        1,
        &create_small("clash").with(&["-p", "0.0.0.0:8080:81", "--no-wait"]),
    );
    assert!(
        err.contains("host port 0.0.0.0:8080/tcp is already published by VM web"),
        "{err}"
    );
    let held = ctx
        .netns
        .spawn(|| std::net::TcpListener::bind("127.0.0.1:9090").unwrap())
        .join()
        .unwrap();
    let err = ctx.fails(
        1,
        &create_small("held").with(&["-p", "9090:80", "--no-wait"]),
    );
    assert!(
        err.contains("host port 127.0.0.1:9090/tcp is already in use on this host"),
        "{err}"
    );
    drop(held);
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "web\n");
    assert_eq!(
        banger_testkit::context::entries(&ctx.home.join("vms")),
        std::slice::from_ref(&id)
    );
    // Malformed ports are usage errors.
    for spec in ["8080", "0:80", "70000:80", "8080:80/sctp", "::1:8080:80"] {
        ctx.fails(2, &create_small("bad").with(&["-p", spec]));
    }

    // Stopped, the VM has no rules but keeps its ports; started, it has them
    // again; deleted, nothing is left.
    ctx.ok(&["vm", "stop", "web", "--force"]);
    assert_eq!(rules_of(&ctx, &id), Vec::new());
    assert_eq!(ctx.show("web")["published"], created["published"]);
    ctx.ok(&["vm", "start", "web", "--no-wait"]);
    assert_eq!(chains(rules_of(&ctx, &id)).len(), 10);
    ctx.ok(&["vm", "delete", "web", "--force"]);
    ctx.assert_nothing_left("after delete");
}
