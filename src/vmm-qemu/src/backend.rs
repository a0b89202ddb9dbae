//! What runs the guest once the API has its configuration: QEMU for
//! `banger-vmm-qemu`, something else for another program built on this
//! library. The API layer knows only these two traits.

use std::io;
use std::path::Path;
use std::process::ExitStatus;

use crate::config::{BootSource, MachineConfig, VmConfig};

/// What a start is given besides the configuration.
pub struct StartContext<'a> {
    /// The `--id` the VMM was started with.
    pub id: &'a str,
    /// The API socket; helper sockets are made beside it.
    pub api_sock: &'a Path,
    /// The log `PUT /logger` named, if any.
    pub log_path: Option<&'a Path>,
}

/// Starts guests.
pub trait Backend {
    /// The program's name, the prefix of its lines on stderr.
    fn name(&self) -> &'static str;
    /// Checks a machine configuration before it is accepted; the answer is
    /// the API's error message.
    fn check_machine(&self, _machine: &MachineConfig) -> Result<(), String> {
        Ok(())
    }
    /// Starts the configured guest.
    fn start(
        &mut self,
        config: &VmConfig,
        boot: &BootSource,
        start: &StartContext<'_>,
    ) -> Result<Box<dyn Guest>, String>;
}

/// A started guest.
pub trait Guest {
    /// Presses Ctrl-Alt-Del on the guest's keyboard.
    fn send_ctrl_alt_del(&mut self) -> io::Result<()>;
    /// The guest's exit status once it has ended (its VMM then exits too).
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    /// Ends the guest and removes what was made for it; idempotent.
    fn stop(&mut self);
}
