//! `banger-vmm-qemu`: the QEMU-backed VMM banger runs where Firecracker
//! cannot (see the library's documentation). Takes Firecracker's flags
//! (`--api-sock`, `--id`; the others are accepted and ignored).

use std::process::ExitCode;

use banger_vmm_qemu::{FIRECRACKER_API_VERSION, args, qemu, server};

const NAME: &str = "banger-vmm-qemu";

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args::Command::Run(args)) => args,
        Ok(args::Command::Version) => {
            println!(
                "{NAME} {} (Firecracker API v{FIRECRACKER_API_VERSION})",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("{NAME}: {err}");
            return ExitCode::from(2);
        }
    };
    match server::run(&args, &mut qemu::Qemu::new(NAME)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{NAME}: {err}");
            ExitCode::FAILURE
        }
    }
}
