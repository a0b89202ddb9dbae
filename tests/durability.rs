//! Durability through the real CLI: `kill -9` of banger in the middle of
//! creates and deletes, a lost or corrupt `handles.json`, a database held
//! past the busy timeout, and a full disk under BANGER_HOME. In each case the
//! user sees a clear error or a working state, and nothing is left half-made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::context::{bare_firecracker_context as context, entries};
use banger_testkit::procs::is_vmm;
use banger_testkit::rng::Rng;
use banger_testkit::{TestContext, create_small, eventually, pid_alive};
use serde_json::Value;

fn db(ctx: &TestContext) -> rusqlite::Connection {
    rusqlite::Connection::open(ctx.home.join("banger.db")).unwrap()
}

fn integrity(ctx: &TestContext) -> String {
    db(ctx)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn rows(ctx: &TestContext) -> i64 {
    db(ctx)
        .query_row("SELECT count(*) FROM vms", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn kill_9_during_creates_and_deletes_never_corrupts_the_database() {
    let Some(ctx) = context() else { return };
    ctx.import_image("base");
    let mut rng = Rng::default();
    let mut killed = 0;
    for round in 0..60 {
        let name = format!("k{}", rng.below(6));
        let args: Vec<String> = match rng.below(10) {
            0..=4 => ["vm", "create", &name, "--no-start", "--work-size", "64M"]
                .map(String::from)
                .to_vec(),
            // A few start too, so kills also land in the TAP, spawn and
            // configure stages.
            5 => ["vm", "create", &name, "--no-wait", "--work-size", "64M"]
                .map(String::from)
                .to_vec(),
            _ => ["vm", "rm", "--force", &name].map(String::from).to_vec(),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = ctx
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(50)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        // Every few rounds, the state must read back as a whole.
        if round % 8 == 7 {
            assert_eq!(integrity(&ctx), "ok", "after round {round}");
            ctx.ok(&["vm", "ls", "--json"]);
        }
    }
    eprintln!("killed {killed} of 60 commands");
    assert!(killed >= 15, "too few commands were interrupted ({killed})");

    assert_eq!(integrity(&ctx), "ok");
    let listed = ctx.json(&["vm", "ls", "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len() as i64, rows(&ctx));
    // Whatever the kills left, the user can delete it and gc sweeps the rest.
    for vm in listed {
        ctx.ok(&["vm", "rm", "--force", vm["name"].as_str().unwrap()]);
    }
    ctx.ok(&["gc"]);
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");
    assert_eq!(rows(&ctx), 0);
    assert_eq!(entries(&ctx.home.join("vms")), Vec::<String>::new());
    assert_eq!(entries(&ctx.run_dir.join("vms")), Vec::<String>::new());
    assert_eq!(ctx.links("bg-"), Vec::<String>::new());
    assert!(ctx.loops().is_empty());
    assert!(eventually(Duration::from_secs(5), || ctx
        .processes()
        .iter()
        .all(|p| !is_vmm(*p))));
    assert_eq!(integrity(&ctx), "ok");
}

/// A way to spoil `handles.json`, and its name.
type Damage = (&'static str, fn(&Path));

#[test]
fn lost_or_corrupt_handles_fall_back_to_the_process_scan() {
    let Some(ctx) = context() else { return };
    ctx.import_image("base");
    let created = ctx.json(&create_small("h1").with(&["--no-wait", "--json"]));
    let pid = created["pid"].as_i64().unwrap();
    let id = created["id"].as_str().unwrap();
    let handles = ctx.home.join("vms").join(id).join("handles.json");
    assert!(handles.exists());

    let damage: [Damage; 4] = [
        ("corrupt", |p| {
            std::fs::write(p, b"{\"pid\": 12, \"tap").unwrap()
        }),
        ("missing", |p| std::fs::remove_file(p).unwrap()),
        ("empty", |p| std::fs::write(p, b"").unwrap()),
        ("wrong pid", |p| {
            std::fs::write(p, format!("{{\"pid\": {}}}", std::process::id())).unwrap()
        }),
    ];
    for (what, damage) in damage {
        damage(&handles);
        let shown = ctx.show("h1");
        assert_eq!(shown["state"], "running", "{what} handles.json: {shown}");
        assert_eq!(shown["pid"], pid, "{what} handles.json");
        assert_eq!(shown["tap"], format!("bg-{id}"), "{what} handles.json");
        let listed = ctx.json(&["vm", "ls", "--json"]);
        assert_eq!(listed[0]["pid"], pid, "{what} handles.json");
        assert!(pid_alive(pid));
    }

    // Stop must still find the process and the TAP without the file.
    std::fs::write(&handles, b"not json").unwrap();
    ctx.ok(&["vm", "stop", "h1", "--force"]);
    assert!(eventually(Duration::from_secs(5), || !pid_alive(pid)));
    let stopped = ctx.show("h1");
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["pid"], Value::Null);
    assert_eq!(ctx.links("bg-"), Vec::<String>::new());
    assert!(!handles.exists(), "handles.json outlived the runtime");
    ctx.ok(&["vm", "rm", "h1"]);
}

#[test]
fn a_database_held_past_the_busy_timeout_fails_clearly_and_does_nothing() {
    let Some(mut ctx) = context() else { return };
    ctx.import_image("base");
    ctx.extra_env
        .push(("BANGER_BUSY_TIMEOUT".into(), "1s".into()));
    let holder = db(&ctx);
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    for args in [
        &["vm", "create", "locked", "--no-wait", "--work-size", "64M"][..],
        &["vm", "create", "locked", "--no-start"][..],
        &["image", "default", "base"][..],
    ] {
        let started = Instant::now();
        let stderr = ctx.fails(1, args);
        let took = started.elapsed();
        assert!(
            stderr.contains("banger.db") && stderr.contains("busy"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("try again"), "{args:?}: {stderr}");
        assert!(
            took < Duration::from_secs(8),
            "{args:?} waited {took:?} with a 1s busy timeout"
        );
    }
    // What only reads does not wait for the writer: a listing, and a gc
    // with nothing to remove.
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");
    ctx.ok(&["gc"]);
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");
    assert_eq!(rows(&ctx), 0);
    assert_eq!(entries(&ctx.home.join("vms")), Vec::<String>::new());
    assert_eq!(entries(&ctx.run_dir.join("vms")), Vec::<String>::new());
    assert_eq!(ctx.links("bg-"), Vec::<String>::new());
    assert!(ctx.processes().iter().all(|p| !is_vmm(*p)));

    // A bad override is refused by name; the default still works after.
    ctx.extra_env = vec![("BANGER_BUSY_TIMEOUT".into(), "soon".into())];
    let stderr = ctx.fails(1, &["vm", "ls"]);
    assert!(stderr.contains("BANGER_BUSY_TIMEOUT"), "{stderr}");
    ctx.extra_env.clear();
    ctx.ok(&["vm", "create", "free", "--no-start", "--work-size", "64M"]);
}

/// A tmpfs of `mib` MiB mounted at `at`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        Command::new("umount").arg("-l").arg(&self.0).status().ok();
    }
}

fn sha(path: &Path) -> Vec<u8> {
    Command::new("sha256sum").arg(path).output().unwrap().stdout
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_nothing_half_made() {
    let Some(ctx) = context() else { return };
    // Declared after ctx, so it is unmounted before ctx removes its dir.
    let _tmpfs = Tmpfs::mount(&ctx.home, 80);
    // A small ELF stands in for the kernel: these VMs' disks are the point.
    let rootfs = ctx.dir.path().join("rootfs.ext4");
    banger_testkit::make_ext4(&rootfs, 32);
    ctx.ok(&[
        "image",
        "import",
        "small",
        "--kernel",
        "/bin/true",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--default",
    ]);
    ctx.ok(&["vm", "create", "keep", "--no-start", "--work-size", "64M"]);
    let keep = ctx.show("keep");
    let keep_dir = ctx.home.join("vms").join(keep["id"].as_str().unwrap());
    let keep_work = sha(&keep_dir.join("work.ext4"));

    // A work disk whose filesystem metadata alone outgrows the free space
    // (sparse disks larger than the free space are fine: they are thin).
    let stderr = ctx.fails(
        1,
        &["vm", "create", "big", "--no-wait", "--work-size", "400G"],
    );
    assert!(
        stderr.contains("no space left on the filesystem holding")
            && stderr.contains("work.ext4")
            && stderr.contains("VM big"),
        "{stderr}"
    );
    // A disk with almost nothing left: even the default work disk cannot be made.
    let filler = ctx.home.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status()
        .unwrap();
    for args in [&["vm", "create", "big", "--no-wait"][..], &["vm", "ls"][..]] {
        let stderr = ctx.fails(1, args);
        assert!(
            stderr.starts_with("error: no space left on the filesystem holding"),
            "{args:?}: {stderr}"
        );
    }
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..1 {
        assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "keep\n");
        assert_eq!(rows(&ctx), 1);
        assert_eq!(
            entries(&ctx.home.join("vms")),
            vec![keep["id"].as_str().unwrap().to_owned()]
        );
        assert_eq!(ctx.links("bg-"), Vec::<String>::new());
        assert!(ctx.loops().is_empty());
        assert_eq!(integrity(&ctx), "ok");
    }
    // The existing VM is untouched and still usable.
    assert_eq!(sha(&keep_dir.join("work.ext4")), keep_work);
    assert_eq!(ctx.show("keep"), keep);
    // Nothing for gc but the failed creates' lock files in the run dir.
    let gc = ctx.ok(&["gc", "--dry-run"]);
    assert!(
        gc.lines().all(|l| l.starts_with("would remove lock-file")),
        "{gc}"
    );
    ctx.ok(&["vm", "rm", "keep"]);
    assert_eq!(entries(&ctx.home.join("vms")), Vec::<String>::new());
}

/// A crash after every stage of create, stop and delete, in turn: the
/// database stays whole, the listing works, and delete plus gc leave nothing.
#[cfg(feature = "fault-injection")]
#[test]
fn a_crash_after_any_stage_leaves_a_whole_database_and_a_clean_delete() {
    let Some(mut ctx) = context() else { return };
    ctx.import_image("base");
    let create = |name: &str| create_small(name).with(&["--no-wait"]).0;
    let stages = [
        ("allocate", false),
        ("disks", false),
        ("root disk", false),
        ("tap", false),
        ("spawn", false),
        ("configure", false),
        ("sidecar", false),
        ("stop:vmm", true),
        ("stop:teardown", true),
        ("delete:stop", true),
        ("delete:files", true),
    ];
    for (stage, after_create) in stages {
        let name = format!("f-{}", stage.replace([' ', ':'], "-"));
        let args: Vec<String> = if after_create {
            ctx.extra_env.clear();
            let create = create(&name);
            ctx.ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
            let verb = if stage.starts_with("stop") {
                "stop"
            } else {
                "rm"
            };
            ["vm", verb, "--force", &name].map(String::from).to_vec()
        } else {
            create(&name)
        };
        ctx.extra_env = vec![("BANGER_FAULT".into(), stage.into())];
        let out = ctx.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        ctx.extra_env.clear();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(6),
            "{stage}: not aborted: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(integrity(&ctx), "ok", "after a crash at {stage}");
        if ["root disk", "tap", "spawn", "configure", "sidecar"].contains(&stage) {
            let shown = ctx.json(&["vm", "show", &name, "--json"]);
            assert_eq!(shown["state"], "stopped", "{stage}: {shown}");
            assert!(
                shown["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("start was interrupted")),
                "{stage}: {shown}"
            );
        }
        let listed = ctx.json(&["vm", "ls", "--json"]);
        for vm in listed.as_array().unwrap() {
            assert_ne!(vm["state"], "running", "{stage}: {vm}");
            ctx.ok(&["vm", "rm", "--force", vm["name"].as_str().unwrap()]);
        }
        ctx.ok(&["gc"]);
        assert_eq!(rows(&ctx), 0, "{stage}");
        assert_eq!(
            entries(&ctx.home.join("vms")),
            Vec::<String>::new(),
            "{stage}"
        );
        assert_eq!(ctx.links("bg-"), Vec::<String>::new(), "{stage}");
        assert!(
            eventually(Duration::from_secs(5), || ctx
                .processes()
                .iter()
                .all(|p| !is_vmm(*p))),
            "{stage}: a VMM outlived its VM"
        );
    }
}
