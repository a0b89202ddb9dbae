//! What banger trusts from outside itself, through the real CLI on the fake
//! VMM (no KVM needed): a process is a VM's VMM by what the kernel says, not
//! by its command line; every spelling of the state directories is the same
//! state; gc keeps its hands off VMs being created and waits out a grace
//! period for orphans; and files are private whatever the umask.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banger_testkit::context::faulty_vmm_context;
use banger_testkit::{Args, TestContext, create_small, eventually};

fn context() -> Option<TestContext> {
    faulty_vmm_context("no-guest")
}

/// A running VM (no wait for a guest); returns its id.
fn running(ctx: &TestContext, name: &str) -> String {
    let vm = ctx.json(&create_small(name).with(&["--no-wait", "--json"]));
    assert_eq!(ctx.show(name)["state"], "running", "{vm:#}");
    vm["id"].as_str().unwrap().to_owned()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// A stranger's process whose command line names `sock` as its API socket,
/// run as root like banger. Killed on drop.
struct Impostor(Child);

impl Impostor {
    fn spawn(sock: &Path, id: &str) -> Self {
        let child = Command::new("sh")
            .args(["-c", "while :; do sleep 1; done", "--api-sock"])
            .arg(sock)
            .args(["--id", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_process_naming_the_api_socket_is_neither_killed_nor_taken_for_the_vmm() {
    let Some(ctx) = context() else { return };
    let id = running(&ctx, "real");
    let sock = ctx.api_sock(&id);
    let impostor = Impostor::spawn(&sock, &id);
    let orphan = Impostor::spawn(&ctx.run_dir.join("vms/0123456789/api.sock"), "0123456789");

    ctx.ok(["gc"]);
    assert!(
        alive(impostor.pid()),
        "gc killed a stranger naming a VM's socket"
    );
    assert!(
        alive(orphan.pid()),
        "gc killed a stranger naming a deleted VM's socket"
    );
    assert_eq!(ctx.show("real")["state"], "running");

    let real: Vec<i32> = ctx
        .vmms_of(&id)
        .into_iter()
        .filter(|pid| u32::try_from(*pid).unwrap() != impostor.pid())
        .collect();
    assert_eq!(real.len(), 1, "{real:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(real[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || !alive(
        u32::try_from(real[0]).unwrap()
    )));

    let vm = ctx.show("real");
    assert_eq!(
        vm["state"], "stopped",
        "the stranger was taken for the VMM: {vm:#}"
    );
    assert_eq!(vm["pid"], serde_json::Value::Null, "{vm:#}");
    ctx.ok(["gc"]);
    assert!(
        alive(impostor.pid()),
        "gc killed the stranger after the VMM died"
    );
    assert!(alive(orphan.pid()));
    ctx.ok(["vm", "delete", "real"]);
    assert!(alive(impostor.pid()), "vm delete killed the stranger");
    ctx.assert_nothing_left("after delete");
}

/// `banger ARGS` with the state reached through other spellings.
fn through(ctx: &TestContext, home: &Path, run_dir: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = ctx.cmd(args);
    cmd.env("BANGER_HOME", home)
        .env("BANGER_RUN_DIR", run_dir)
        .current_dir(cwd);
    cmd
}

#[test]
fn a_symlinked_or_relative_spelling_of_the_state_sees_a_running_vm() {
    let Some(ctx) = context() else { return };
    let id = running(&ctx, "one");
    let links = ctx.dir.path().join("links");
    std::fs::create_dir(&links).unwrap();
    std::os::unix::fs::symlink(&ctx.home, links.join("home")).unwrap();
    std::os::unix::fs::symlink(&ctx.run_dir, links.join("run")).unwrap();
    let spellings = [
        (
            links.join("home"),
            links.join("run"),
            ctx.dir.path().to_owned(),
        ),
        ("home".into(), "run".into(), ctx.dir.path().to_owned()),
        ("../home".into(), "./../links/run/".into(), links.clone()),
    ];
    for (home, run_dir, cwd) in &spellings {
        let what = format!(
            "{} {} from {}",
            home.display(),
            run_dir.display(),
            cwd.display()
        );
        let out = through(&ctx, home, run_dir, cwd, &["vm", "ls", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(vms[0]["state"], "running", "{what}: {vms:#}");
        let out = through(&ctx, home, run_dir, cwd, &["vm", "start", "one"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(ctx.vmms_of(&id).len(), 1, "{what}: a second VMM: {stderr}");
        assert_eq!(
            ctx.links("bg-"),
            vec![format!("bg-{id}")],
            "{what}: the TAP was torn down"
        );
    }
    assert_eq!(ctx.show("one")["state"], "running");
    ctx.ok(["vm", "delete", "one"]);
    ctx.assert_nothing_left("after delete");
}

#[test]
fn gc_during_creates_breaks_none_of_them() {
    let Some(ctx) = context() else { return };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let creates: Vec<Args> = (0..8)
        .map(|i| create_small(&format!("c{i}")).with(&["--no-wait"]))
        .collect();
    std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || runs < 3 {
                let out = ctx.run(["gc"]);
                assert!(
                    out.status.success(),
                    "gc: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                runs += 1;
            }
        });
        ctx.all_ok(&creates);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        gc.join().unwrap();
    });
    ctx.ok(["gc"]);
    let vms = ctx.json(["vm", "ls", "--json"]);
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 8, "{vms:#?}");
    for vm in vms {
        let id = vm["id"].as_str().unwrap();
        assert_eq!(vm["state"], "running", "{vm:#}");
        let lock = ctx.run_dir.join("locks").join(format!("vm-{id}.lock"));
        assert!(lock.exists(), "gc removed {}", lock.display());
        assert!(ctx.api_sock(id).exists(), "gc removed the sockets of {id}");
        assert!(ctx.home.join("vms").join(id).exists());
        assert_eq!(ctx.vmms_of(id).len(), 1, "{id}");
    }
    let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let mut delete = vec!["vm", "delete"];
    delete.extend(names.iter().map(String::as_str));
    ctx.ok(delete);
    ctx.assert_nothing_left("after delete");
}

#[test]
fn an_orphan_vm_directory_is_reported_then_removed_after_the_grace() {
    let Some(ctx) = context() else { return };
    ctx.ok(["vm", "create", "kept", "--no-start", "--work-size", "64M"]);
    let orphan = ctx.home.join("vms/0123456789");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("work.ext4"), b"left over").unwrap();

    let dry = ctx.ok(["gc", "--dry-run"]);
    assert!(
        dry.contains(&format!(
            "kept vm-files {} (no such VM; removed once 10m old)",
            orphan.display()
        )),
        "{dry}"
    );
    let out = ctx.ok(["gc"]);
    assert!(out.contains("kept vm-files"), "{out}");
    assert!(
        orphan.join("work.ext4").exists(),
        "removed within the grace"
    );

    let status = Command::new("touch")
        .args(["-d", "-11 minutes"])
        .arg(&orphan)
        .status()
        .unwrap();
    assert!(status.success());
    let dry = ctx.ok(["gc", "--dry-run"]);
    assert!(
        dry.contains(&format!(
            "would remove vm-files {} (no such VM, for over 10m)",
            orphan.display()
        )),
        "{dry}"
    );
    assert!(orphan.exists(), "--dry-run removed it");
    let json = ctx.json(["gc", "--dry-run", "--json"]);
    assert_eq!(json[0]["kind"], "vm-files", "{json:#}");
    assert!(json[0].get("kept").is_none(), "{json:#}");
    let out = ctx.ok(["gc"]);
    assert!(out.contains("removed vm-files"), "{out}");
    assert!(!orphan.exists());
    assert!(ctx.show("kept")["id"].is_string(), "a real VM is untouched");
    let kept = ctx.show("kept");
    assert!(
        ctx.home
            .join("vms")
            .join(kept["id"].as_str().unwrap())
            .exists()
    );
}

/// Permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `root`.
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn state_made_under_umask_000_is_private() {
    let Some(ctx) = context() else { return };
    let create = |name: &str| {
        let mut cmd = ctx.cmd(create_small(name).with(&["--no-wait"]).0);
        // SAFETY: umask(2) is async-signal-safe and touches no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::umask(0);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    create("open");
    let id = ctx.show("open")["id"].as_str().unwrap().to_owned();
    let vm_run = ctx.run_dir.join("vms").join(&id);
    let vm_dir = ctx.home.join("vms").join(&id);
    for root in [&vm_dir, &vm_run, &ctx.run_dir.join("locks")] {
        for path in walk(root) {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                continue;
            }
            let bits = mode(&path);
            assert_eq!(bits & 0o077, 0, "{} is {bits:o}", path.display());
        }
        assert_eq!(mode(root), 0o700, "{}", root.display());
    }
    for sock in ["api.sock", "vsock.sock"] {
        let path = vm_run.join(sock);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    for file in ["console.log", "handles.json"] {
        let path = ctx.home.join("vms").join(&id).join(file);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    ctx.ok(["vm", "delete", "open"]);
}

#[test]
fn looking_at_state_changes_no_directory_modes() {
    let Some(ctx) = context() else { return };
    running(&ctx, "look");
    let dirs = [
        ctx.home.clone(),
        ctx.home.join("vms"),
        ctx.run_dir.clone(),
        ctx.run_dir.join("locks"),
    ];
    for dir in &dirs {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    }
    let before: Vec<(u32, i64)> = dirs
        .iter()
        .map(|d| {
            let m = std::fs::metadata(d).unwrap();
            (m.mode(), m.ctime())
        })
        .collect();
    ctx.ok(["vm", "ls"]);
    ctx.ok(["vm", "show", "look"]);
    ctx.run(["doctor"]);
    for (dir, (mode_before, _)) in dirs.iter().zip(&before) {
        let now = std::fs::metadata(dir).unwrap().mode();
        assert_eq!(now, *mode_before, "{} changed mode", dir.display());
    }
    ctx.ok(["vm", "delete", "look"]);
}

/// A reader that goes away after the first line (`| head -1`) ends every
/// listing quietly, with hundreds of VMs' worth of output.
#[test]
fn a_closed_pipe_ends_long_listings_quietly() {
    let Some(ctx) = context() else { return };
    // Room for 400 VMs whose rows banger accepts.
    ctx.set_config("tap_pool_size = 0\nsubnet = \"172.30.0.0/22\"\n");
    ctx.ok(["vm", "create", "seed", "--no-start", "--work-size", "64M"]);
    let db = rusqlite::Connection::open(ctx.home.join("banger.db")).unwrap();
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('vms')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for i in 0..400u32 {
        let values: Vec<String> = columns
            .iter()
            .map(|c| match c.as_str() {
                "id" => format!("'{:010x}'", 0x100000 + i),
                "name" => format!("'many-{i}'"),
                "ip" => format!("'172.30.{}.{}'", 1 + i / 200, 2 + i % 200),
                "mac" => format!("'06:00:ac:1e:{:02x}:{:02x}'", 1 + i / 200, 2 + i % 200),
                "vsock_cid" => format!("{}", 1000 + i),
                other => other.to_owned(),
            })
            .collect();
        db.execute(
            &format!(
                "INSERT INTO vms ({}) SELECT {} FROM vms WHERE name = 'seed'",
                columns.join(", "),
                values.join(", ")
            ),
            [],
        )
        .unwrap();
    }
    drop(db);
    assert!(ctx.ok(["vm", "ls"]).lines().count() > 400);
    for args in [
        &["vm", "ls"][..],
        &["vm", "ls", "--json"],
        &["gc", "--dry-run"],
        &["gc", "--dry-run", "--json"],
    ] {
        let mut child = ctx
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        use std::io::Read as _;
        let mut stdout = child.stdout.take().unwrap();
        let _ = stdout.read(&mut first);
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 141)) || out.status.code().is_none(),
            "{args:?}: {} {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

/// `banger ARGS` under `timeout`, so a hang fails the test instead of
/// holding it: returns the output once the command ends.
fn bounded(mut cmd: Command) -> std::process::Output {
    let started = std::time::Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    out
}

#[test]
fn a_fifo_in_place_of_a_state_file_fails_fast_and_names_it() {
    let Some(ctx) = context() else { return };
    let id = ctx.json(&create_small("f").with(&["--no-start", "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fifo = |path: &Path| {
        let _ = std::fs::remove_file(path);
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    };

    let config = ctx.dir.path().join("fifo.toml");
    fifo(&config);
    let mut cmd = Command::new("timeout");
    cmd.arg("20")
        .arg(banger_testkit::banger_bin())
        .args(["vm", "ls"]);
    cmd.env("BANGER_HOME", &ctx.home)
        .env("BANGER_RUN_DIR", &ctx.run_dir)
        .env("BANGER_CONFIG", &config);
    let out = bounded(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");

    let lock = ctx.run_dir.join("locks").join(format!("vm-{id}.lock"));
    fifo(&lock);
    let mut cmd = ctx.cmd(["vm", "delete", "f"]);
    cmd.env("BANGER_BUSY_TIMEOUT", "2s");
    let out = bounded(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&lock.display().to_string()), "{stderr}");
    std::fs::remove_file(&lock).unwrap();
    ctx.ok(["vm", "delete", "f"]);
}
