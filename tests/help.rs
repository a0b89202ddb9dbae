//! `--help` of every command and subcommand, found by walking clap's command
//! tree, as snapshots: any change to what a user reads there shows in review.

use std::process::Command;

use banger::cli::Cli;
use banger_testkit::snapshot::render;
use clap::CommandFactory;

/// The subcommand path of `cmd` and of every command below it.
fn command_paths(cmd: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
    out.push(path.to_vec());
    for sub in cmd.get_subcommands() {
        let mut below = path.to_vec();
        below.push(sub.get_name().to_owned());
        command_paths(sub, &below, out);
    }
}

#[test]
fn help_of_every_command() {
    let mut paths = Vec::new();
    command_paths(&Cli::command(), &[], &mut paths);
    assert!(paths.len() > 20, "the walk found only {paths:?}");
    for path in paths {
        let out = Command::new(env!("CARGO_BIN_EXE_banger"))
            .args(&path)
            .arg("--help")
            .output()
            .expect("run banger");
        let name = std::iter::once("banger")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("_");
        insta::assert_snapshot!(name, render(&out));
    }
}
