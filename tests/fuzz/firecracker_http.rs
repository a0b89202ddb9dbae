//! Firecracker API responses, as banger's HTTP client reads them.

use std::io::BufReader;

use banger::host::firecracker::http::{ReadError, Response, read_response};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::{cases, inputs, replay};

fn http(bytes: &[u8]) -> Result<Response, ReadError> {
    read_response(&mut &bytes[..])
}

/// Outcomes compared across buffer sizes; I/O errors cannot happen in memory.
fn outcome(result: Result<Response, ReadError>) -> Result<(u16, Vec<u8>), String> {
    match result {
        Ok(response) => Ok((response.status, response.body)),
        Err(ReadError::Malformed(reason)) => Err(reason),
        Err(ReadError::Io(e)) => Err(format!("I/O error from memory: {e}")),
    }
}

#[test]
fn firecracker_http_corpus() {
    replay("firecracker-http", |bytes| http(bytes).is_ok());
}

/// How a generated response frames its body.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    Chunked(Vec<Index>),
    Close,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Length),
        vec(any::<Index>(), 0..6).prop_map(Framing::Chunked),
        Just(Framing::Close),
    ]
}

fn encode_response(
    interim: usize,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    framing: &Framing,
) -> Vec<u8> {
    let mut raw = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(interim);
    raw.extend_from_slice(format!("HTTP/1.1 {status} \r\n").as_bytes());
    for (name, value) in headers {
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match framing {
        Framing::Length => {
            raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            raw.extend_from_slice(body);
        }
        Framing::Chunked(cuts) => {
            raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            let mut start = 0;
            for end in cuts {
                if end > start {
                    raw.extend_from_slice(format!("{:x}\r\n", end - start).as_bytes());
                    raw.extend_from_slice(&body[start..end]);
                    raw.extend_from_slice(b"\r\n");
                    start = end;
                }
            }
            raw.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::Close => {
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(body);
        }
    }
    raw
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn firecracker_responses_read_the_same_in_any_buffer(
        bytes in inputs("firecracker-http"),
        capacity in 1..16usize,
    ) {
        let whole = outcome(http(&bytes));
        let pieces = outcome(read_response(&mut BufReader::with_capacity(capacity, &bytes[..])));
        prop_assert_eq!(&whole, &pieces);
        if let Ok((status, _)) = whole {
            prop_assert!((200..1000).contains(&status), "status {}", status);
        }
    }

    #[test]
    fn firecracker_responses_round_trip(
        interim in 0..3usize,
        status in 200..600u16,
        headers in vec(("[A-Za-z][A-Za-z-]{0,15}", "[ -~]{0,40}"), 0..5),
        body in vec(any::<u8>(), 0..300),
        framing in framing(),
    ) {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(name, _)| {
                !["content-length", "transfer-encoding"].contains(&name.to_ascii_lowercase().as_str())
            })
            .collect();
        let raw = encode_response(interim, status, &headers, &body, &framing);
        let expected = if status == 204 || status == 304 { Vec::new() } else { body };
        prop_assert_eq!(outcome(http(&raw)), Ok((status, expected)));
    }
}
