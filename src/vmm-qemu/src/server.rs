//! The VMM's life: serve the API socket, start the guest on request, and
//! end when the guest ends or a signal arrives.

use std::io::{self, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use crate::api::Api;
use crate::args::Args;
use crate::backend::Backend;
use crate::http::{self, Request, Response};
use crate::qemu::remove_socket;

/// How often the guest's liveness is checked between requests.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind the API socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot block termination signals: {0}")]
    Signals(io::Error),
    #[error("cannot check on the guest: {0}")]
    Wait(io::Error),
}

enum Event {
    Request(Request, Sender<Response>),
    Signal(libc::c_int),
}

/// Serves until the guest ends (exit code 0 when QEMU exited cleanly) or
/// SIGTERM/SIGINT (128 + signal). Everything the API does runs on this
/// thread, so what `backend` starts are children of a thread that lives as
/// long as the VMM (their parent-death signal follows the thread).
pub fn run(args: &Args, backend: &mut dyn Backend) -> Result<u8, ServerError> {
    let name = backend.name();
    let signals = block_termination_signals().map_err(ServerError::Signals)?;
    let listener = UnixListener::bind(&args.api_sock).map_err(|source| ServerError::Bind {
        path: args.api_sock.clone(),
        source,
    })?;
    crate::set_log_prefix(&args.id, name);
    crate::log(
        "INFO",
        &format!("serving {} for {}", args.api_sock.display(), args.id),
    );

    let (events, inbox) = mpsc::channel();
    let signal_events = events.clone();
    thread::spawn(move || wait_for_signal(signals, &signal_events));
    thread::spawn(move || accept(&listener, &events));

    let mut api = Api::new(args.id.clone(), args.api_sock.clone(), backend);
    let code = loop {
        match inbox.recv_timeout(POLL) {
            Ok(Event::Request(request, reply)) => {
                // The connection may be gone already; nothing to tell it then.
                let _ = reply.send(api.handle(&request));
            }
            Ok(Event::Signal(signal)) => {
                crate::log("INFO", &format!("signal {signal}, stopping the guest"));
                break 128 + u8::try_from(signal).unwrap_or(0);
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Only if both the accept and the signal threads are gone; keep watching the guest.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(POLL),
        }
        match api.guest_exit() {
            Ok(Some(status)) => {
                crate::log("INFO", &format!("the guest exited ({status})"));
                break if status.success() { 0 } else { 1 };
            }
            Ok(None) => {}
            Err(err) => {
                api.stop();
                remove_socket(&args.api_sock);
                return Err(ServerError::Wait(err));
            }
        }
    };
    api.stop();
    remove_socket(&args.api_sock);
    Ok(code)
}

/// The termination signals, blocked in this thread (and so in every thread
/// spawned after) so that one thread can wait for them.
fn block_termination_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset/sigaddset
    // before use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
            0 => Ok(set),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

fn wait_for_signal(set: libc::sigset_t, events: &Sender<Event>) {
    let mut signal = 0;
    // SAFETY: `set` is an initialised signal set and `signal` a valid out-pointer.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc == 0 {
        // The receiver lives until the VMM ends.
        let _ = events.send(Event::Signal(signal));
    } else {
        crate::log(
            "ERROR",
            &format!("sigwait failed: {}", io::Error::from_raw_os_error(rc)),
        );
    }
}

fn accept(listener: &UnixListener, events: &Sender<Event>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let events = events.clone();
                thread::spawn(move || {
                    if let Err(err) = serve(stream, &events) {
                        crate::log("WARN", &format!("API connection: {err}"));
                    }
                });
            }
            Err(err) => crate::log("WARN", &format!("accept on the API socket: {err}")),
        }
    }
}

/// Answers the requests of one connection, in order, until the client closes it.
fn serve(stream: UnixStream, events: &Sender<Event>) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let request = match http::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                return http::write_response(
                    &mut writer,
                    &Response::fault(format!("Invalid HTTP request: {err}")),
                );
            }
            Err(err) => return Err(err),
        };
        let close = request.close;
        let (reply, answer) = mpsc::channel();
        if events.send(Event::Request(request, reply)).is_err() {
            return Ok(());
        }
        let Ok(response) = answer.recv() else {
            return Ok(());
        };
        http::write_response(&mut writer, &response)?;
        if close {
            return Ok(());
        }
    }
}
