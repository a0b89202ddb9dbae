//! `host::vsock`: the handshake reply and the agent's reply line, from a socket.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::thread;
use std::time::Duration;

use banger::agent_protocol::{PingReply, ok_line};
use banger::host::vsock::{self, VsockError};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::agent_reply::ping_reply;
use crate::{cases, inputs, replay};

/// Pings through a Unix socket whose other end sends `script` (the handshake
/// reply, then whatever the "guest" answers), closes its side and drains the
/// request until the client hangs up.
fn ping_through(script: &[u8]) -> Result<PingReply, VsockError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&uds).expect("bind");
    let script = script.to_vec();
    let guest = thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.write_all(&script);
        let _ = stream.shutdown(Shutdown::Write);
        let _ = io::copy(&mut stream, &mut io::sink());
    });
    let result = vsock::ping(&uds, Duration::from_secs(5));
    guest.join().expect("fake guest thread");
    result
}

#[test]
fn vsock_reply_corpus() {
    replay("vsock-reply", |bytes| ping_through(bytes).is_ok());
}

/// What the socket says to `CONNECT 52`.
fn handshake() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u32>().prop_map(|port| format!("OK {port}\n").into_bytes()),
        "[A-Z ]{0,12}\n?".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..80),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn vsock_replies_are_refused_or_parsed(
        handshake in handshake(),
        reply in ping_reply(),
        guest in prop_oneof![
            Just(None),
            inputs("vsock-reply").prop_map(Some),
        ],
    ) {
        let valid_line = ok_line(&reply).into_bytes();
        let mut script = handshake;
        let handshake_len = script.len();
        script.extend_from_slice(guest.as_deref().unwrap_or(&valid_line));
        let result = ping_through(&script);
        // The client reads the handshake up to its newline, at most 64 bytes.
        let read = script
            .iter()
            .take(64)
            .position(|b| *b == b'\n')
            .map_or(script.len().min(64), |at| at + 1);
        let first_line = &script[..read];
        if !first_line.starts_with(b"OK ") || !first_line.ends_with(b"\n") {
            prop_assert!(matches!(result, Err(VsockError::Refused { .. })), "{:?}", result);
        } else {
            prop_assert!(!matches!(result, Err(VsockError::Refused { .. })), "{:?}", result);
            if guest.is_none() && read == handshake_len {
                prop_assert_eq!(result.ok(), Some(reply));
            }
        }
    }
}
