//! The host side of scripts/test-in-guest.sh: `in-guest TEST_BINARY... [--
//! TEST ARGS]` boots the in-guest tier's Debian guest once, runs each test
//! binary in it as root with the arguments, streams their output, prints the
//! counts of the dm, resolved and other tests, and exits with their status.
//! When this host cannot run the tier it says why (a `require!` skip) and
//! exits 0. Built as an example so that the kit finds banger's binaries
//! beside it, as it does beside a test binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use banger_testkit::{Need, in_guest, require};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let split = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let binaries: Vec<PathBuf> = argv[..split].iter().map(PathBuf::from).collect();
    let args = argv.get(split + 1..).unwrap_or_default().to_vec();
    if binaries.is_empty() {
        eprintln!("usage: in-guest TEST_BINARY... [-- TEST ARGS]");
        return ExitCode::from(2);
    }
    let agent = banger_testkit::agent().unwrap_or_default();
    let kernel = banger_testkit::vmlinux();
    let can_run = std::thread::Builder::new()
        .name("tier".to_owned())
        .spawn(move || {
            require(
                "in-guest",
                &[
                    Need::Root,
                    Need::Program("qemu-system-x86_64"),
                    Need::Program("debootstrap"),
                    Need::Env("BANGER_AGENT"),
                    Need::File(&agent),
                    Need::File(&kernel),
                ],
            )
            .is_none()
        })
        .expect("spawn")
        .join()
        .expect("check what the tier needs");
    if !can_run {
        return ExitCode::SUCCESS;
    }

    let started = Instant::now();
    let image = in_guest::host_image(&banger_testkit::agent().unwrap_or_default());
    let (status, tally) = in_guest::run(&image, &files(&binaries), &args);
    let summary = tally.summary(started.elapsed());
    println!("\n{summary}");
    if let Some(path) = std::env::var_os("BANGER_IN_GUEST_SUMMARY") {
        std::fs::write(&path, format!("{summary}\n")).expect("write the tier's summary");
    }
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

/// Where each file goes on the tier's drive: the test binaries and banger's
/// binaries in the layout of the host's target dir, the kernel fixture in
/// `test-deps/`.
fn files(binaries: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let name = |p: &Path| {
        p.file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned()
    };
    let profile = binaries[0]
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps");
    let mut files: Vec<(String, PathBuf)> = binaries
        .iter()
        .map(|b| (format!("target/debug/deps/{}", name(b)), b.clone()))
        .collect();
    for bin in ["banger", "vmm-fake"] {
        files.push((format!("target/debug/{bin}"), profile.join(bin)));
    }
    files.push(("test-deps/vmlinux".to_owned(), banger_testkit::vmlinux()));
    files
}
