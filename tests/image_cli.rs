//! `banger image build` through the CLI when it is interrupted: nothing is
//! registered, and `banger gc` removes the half-built files.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use banger_testkit::context::Sandbox;
use banger_testkit::{Need, eventually, require};

#[test]
fn an_interrupted_build_registers_nothing_and_gc_sweeps_it() {
    require!("image", Need::Root, Need::Program("debootstrap"));
    let sandbox = Sandbox::default();
    // Any static binary stands in for the agent here.
    let banger = |args: &[&str]| {
        let mut cmd = sandbox.cmd(args);
        cmd.env("BANGER_AGENT", "/bin/busybox");
        cmd
    };
    let mut build = banger(&["image", "build", "half"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once it is under way (its staging directory exists).
    let images = sandbox.home.join("images");
    let staging = || {
        std::fs::read_dir(&images)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-half-"))
            })
            .unwrap_or(false)
    };
    assert!(
        eventually(Duration::from_secs(60), staging),
        "the build never started"
    );
    std::thread::sleep(Duration::from_millis(500));
    build.kill().unwrap();
    build.wait().unwrap();

    let listed = banger(&["image", "ls", "-q"]).output().unwrap();
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "");
    let gc = banger(&["gc"]).output().unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(String::from_utf8_lossy(&gc.stdout).contains("image-staging"));
    assert!(!staging(), "gc left the staging directory");
}
