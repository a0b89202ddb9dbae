//! A VMM's API as a client sees it: one HTTP/1.1 request over the Unix socket,
//! read up to the end of its `Content-Length` body (neither Firecracker nor
//! the shim need close the connection for it).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `method path` with a JSON `body` on its own connection; returns
/// (status, body).
pub fn request(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("connect to the API socket {}: {e}", sock.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("an API response");
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = content_length(head);
            if body.len() >= length || n == 0 {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .unwrap_or_else(|| panic!("no status line in {text:?}"));
                return (status, body[..length.min(body.len())].to_owned());
            }
        }
        assert!(n > 0, "the API closed the connection early: {text:?}");
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The `fault_message` of an error body.
pub fn fault(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    value["fault_message"]
        .as_str()
        .unwrap_or_else(|| panic!("no fault_message in {body}"))
        .to_owned()
}

/// The instance state a VMM reports (`GET /`): `Running` once configured
/// and started, `Not started` before.
pub fn instance_state(sock: &Path) -> String {
    let (status, body) = request(sock, "GET", "/", "");
    assert_eq!(status, 200, "GET /: {body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("instance info JSON");
    info["state"].as_str().unwrap_or_default().to_owned()
}
