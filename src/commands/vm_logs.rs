//! `banger vm logs`: the guest console (or the VMM's log), optionally followed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use anyhow::{Context, Result};

use super::Global;
use crate::cli::LogsArgs;
use crate::vm::{VmFiles, VmRead};

pub fn run(args: LogsArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let vm = ctx.store.vm(args.name.as_str())?;
    let files = VmFiles::of(&ctx.paths, &vm);
    let path = if args.vmm {
        files.vmm_log
    } else {
        files.console_log
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.follow => {
            eprintln!(
                "VM {} has no {} yet (it has not been started)",
                vm.name,
                if args.vmm { "VMM log" } else { "console log" }
            );
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !args.follow {
        return Ok(());
    }
    // Follow until the VM stops, like `tail -f` bounded by the VM's life.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n > 0 {
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            continue;
        }
        if VmRead::observe(&ctx, vm.clone()).observed.pid.is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < file.stream_position().unwrap_or(0) {
            file.seek(SeekFrom::Start(0))?;
        }
    }
}
