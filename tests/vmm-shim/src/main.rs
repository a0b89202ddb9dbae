//! vmm-shim: a test-only stand-in for Firecracker that serves its API subset and boots the guest under QEMU
//! (or, with `VMM_SHIM_FAULT`, fails on purpose).

mod api;
mod args;
mod config;
mod fault;
mod http;
mod qmp;
mod server;
mod vm;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args::Command::Run(args)) => args,
        Ok(args::Command::Version) => {
            println!("Firecracker v{}", api::FIRECRACKER_VERSION);
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("vmm-shim: {err}");
            return ExitCode::from(2);
        }
    };
    match server::run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("vmm-shim: {err}");
            ExitCode::FAILURE
        }
    }
}
