//! The `banger` binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

use banger::cli::{BenchCommand, Cli, Command, ImageCommand, PoolCommand, VmCommand};
use banger::commands::{self, Global, UsageError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // A closed stdout (`banger vm ls | head -1`): what was asked was
        // done; end quietly, as a pipeline expects.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs the command; the `i32` is the exit code (the remote one for `vm run`/`vm ssh`).
fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let done = |r: anyhow::Result<()>| r.map(|()| 0);
    let global = &Global {
        verbose: cli.verbose,
    };
    match cli.command {
        Command::Vm(cmd) => match cmd {
            VmCommand::Create(args) => done(commands::vm_create::run(args, global)),
            VmCommand::Run(args) => commands::vm_run::run(args, global),
            VmCommand::Start(args) => done(commands::vm_start::run(args, global)),
            VmCommand::Stop(args) => done(commands::vm_stop::run(args, global)),
            VmCommand::Restart(args) => done(commands::vm_start::restart(args, global)),
            VmCommand::Delete(args) => done(commands::vm_delete::run(args, global)),
            VmCommand::List(args) => done(commands::vm_list::run(args, global)),
            VmCommand::Show(args) => done(commands::vm_show::run(args, global)),
            VmCommand::Ssh(args) => commands::vm_ssh::run(args, global),
            VmCommand::Logs(args) => done(commands::vm_logs::run(args, global)),
            VmCommand::Cp(args) => done(commands::vm_cp::run(args, global)),
            VmCommand::SshConfig(args) => done(commands::vm_ssh_config::run(args, global)),
            VmCommand::Port(args) => done(commands::vm_port::run(args, global)),
        },
        Command::Image(cmd) => match cmd {
            ImageCommand::Build(args) => done(commands::image_build::run(args, global)),
            ImageCommand::Import(args) => done(commands::image_import::run(args, global)),
            ImageCommand::Commit(args) => done(commands::image_commit::run(args, global)),
            ImageCommand::List(args) => done(commands::image_list::list(args, global)),
            ImageCommand::Show(args) => done(commands::image_list::show(args, global)),
            ImageCommand::Delete(args) => done(commands::image_delete::run(args, global)),
            ImageCommand::Default(args) => done(commands::image_list::set_default(args, global)),
        },
        Command::Pool(cmd) => match cmd {
            PoolCommand::Set(args) => done(commands::pool::set(args, global)),
            PoolCommand::List(args) => done(commands::pool::list(args, global)),
            PoolCommand::Delete(args) => done(commands::pool::remove(args, global)),
            PoolCommand::Fill => done(commands::pool::fill(global)),
        },
        Command::Doctor(args) => commands::doctor::run(args, global),
        Command::Gc(args) => done(commands::gc::run(args, global)),
        Command::Completions(args) => done(commands::completions::run(args)),
        Command::Man => done(commands::completions::man()),
        Command::Bench(BenchCommand::Create(args)) => done(commands::bench::create(args, global)),
        Command::Sidecar => done(commands::sidecar::run(global)),
        Command::Complete { kind } => done(commands::completions::names(&kind)),
    }
}
