//! SIGINT, SIGTERM and SIGHUP turned into a flag, for flows that must clean
//! up before they end (`vm run --rm`, `doctor --boot`): once [`catch`] is
//! called, such a signal no longer kills banger; waits end early and report
//! it ([`caught`]), and the command deletes what it made.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The last signal caught, 0 for none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    CAUGHT.store(signal, Ordering::SeqCst);
}

/// From now on, SIGINT, SIGTERM and SIGHUP are recorded instead of ending
/// the process.
pub fn catch() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }.ok();
    }
}

/// The signal caught since [`catch`], if any.
pub fn caught() -> Option<Signal> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The exit code of a process ended by `signal` (128 + its number).
pub fn exit_code(signal: Signal) -> i32 {
    128 + signal as i32
}
