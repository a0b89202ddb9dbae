//! The HTTP/1.1 wire format Firecracker's API speaks: writing a request with a
//! `Content-Length` body and reading a response (status line, headers, then a
//! `Content-Length`, chunked or read-to-close body).

use std::io::{self, BufRead, Read, Write};

/// The longest status, header or chunk-size line accepted.
const MAX_LINE: u64 = 8 * 1024;
/// The most headers one response may carry.
const MAX_HEADERS: usize = 100;
/// The largest body accepted; Firecracker's replies are a few hundred bytes.
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// A response: its status code and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// Writes one request; `body` is sent as JSON with its `Content-Length`.
pub(super) fn write_request(
    out: &mut impl Write,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<()> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body.unwrap_or_default());
    out.write_all(&message)?;
    out.flush()
}

/// Reads one response, skipping any interim `1xx` responses.
pub fn read_response(input: &mut impl BufRead) -> Result<Response, ReadError> {
    loop {
        let status = read_status_line(input)?;
        let headers = read_headers(input)?;
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if header(&headers, "transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
        {
            read_chunked(input)?
        } else if let Some(length) = header(&headers, "content-length") {
            let length: u64 = length
                .parse()
                .map_err(|_| ReadError::Malformed(format!("bad Content-Length {length:?}")))?;
            read_exactly(input, length)?
        } else {
            read_to_close(input)?
        };
        return Ok(Response { status, body });
    }
}

fn read_line(input: &mut impl BufRead, what: &str) -> Result<String, ReadError> {
    let mut line = Vec::new();
    input.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.is_empty() {
            ReadError::Malformed(format!("connection closed before the {what}"))
        } else {
            ReadError::Malformed(format!("unterminated or over-long {what}"))
        });
    }
    let line = String::from_utf8(line)
        .map_err(|_| ReadError::Malformed(format!("{what} is not UTF-8")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `HTTP/1.1 204 ` (Firecracker leaves the reason phrase empty) → 204.
fn read_status_line(input: &mut impl BufRead) -> Result<u16, ReadError> {
    let line = read_line(input, "status line")?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    // Three digits, 100-999: `u16::from_str` alone would take `+20` or `099`.
    let three_digits =
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) && !code.starts_with('0');
    if !version.starts_with("HTTP/1.") || !three_digits {
        return Err(ReadError::Malformed(format!("bad status line {line:?}")));
    }
    code.parse()
        .map_err(|_| ReadError::Malformed(format!("bad status line {line:?}")))
}

/// Header names lower-cased, values trimmed.
fn read_headers(input: &mut impl BufRead) -> Result<Vec<(String, String)>, ReadError> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(input, "header")?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(ReadError::Malformed(format!(
                "more than {MAX_HEADERS} headers"
            )));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ReadError::Malformed(format!("bad header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn read_exactly(input: &mut impl BufRead, length: u64) -> Result<Vec<u8>, ReadError> {
    if length > MAX_BODY {
        return Err(ReadError::Malformed(format!(
            "body of {length} bytes is larger than {MAX_BODY}"
        )));
    }
    let mut body = Vec::new();
    input.by_ref().take(length).read_to_end(&mut body)?;
    if u64::try_from(body.len()).unwrap_or(u64::MAX) != length {
        return Err(ReadError::Malformed(format!(
            "connection closed after {} of {length} body bytes",
            body.len()
        )));
    }
    Ok(body)
}

fn read_chunked(input: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(input, "chunk size")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| ReadError::Malformed(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            read_headers(input)?;
            return Ok(body);
        }
        let so_far = u64::try_from(body.len()).unwrap_or(u64::MAX);
        if so_far.saturating_add(size) > MAX_BODY {
            return Err(ReadError::Malformed(format!(
                "body larger than {MAX_BODY} bytes"
            )));
        }
        body.extend(read_exactly(input, size)?);
        if !read_line(input, "chunk end")?.is_empty() {
            return Err(ReadError::Malformed(
                "chunk longer than its size".to_owned(),
            ));
        }
    }
}

fn read_to_close(input: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    input.by_ref().take(MAX_BODY + 1).read_to_end(&mut body)?;
    if u64::try_from(body.len()).unwrap_or(u64::MAX) > MAX_BODY {
        return Err(ReadError::Malformed(format!(
            "body larger than {MAX_BODY} bytes"
        )));
    }
    Ok(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Response, ReadError> {
        read_response(&mut raw.as_bytes())
    }

    fn malformed(raw: &str) -> String {
        match parse(raw) {
            Err(ReadError::Malformed(reason)) => reason,
            other => panic!("expected a malformed response, got {other:?}"),
        }
    }

    #[test]
    fn request_carries_method_path_and_sized_body() {
        let mut out = Vec::new();
        write_request(&mut out, "PUT", "/actions", Some(b"{\"a\":1}")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("PUT /actions HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 7\r\n"), "{text}");
        assert!(
            text.contains("\r\nContent-Type: application/json\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"), "{text}");
    }

    #[test]
    fn request_without_body_has_no_length() {
        let mut out = Vec::new();
        write_request(&mut out, "GET", "/", None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET / HTTP/1.1\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn no_content_with_empty_reason_phrase() {
        let response =
            parse("HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n")
                .unwrap();
        assert_eq!(
            response,
            Response {
                status: 204,
                body: Vec::new()
            }
        );
    }

    #[test]
    fn content_length_body_stops_at_its_length() {
        let body = "{\"fault_message\":\"bad\"}";
        let raw = format!(
            "HTTP/1.1 400 \r\ncontent-length: {}\r\n\r\n{body}HTTP/1.1 204 \r\n\r\n",
            body.len()
        );
        let response = parse(&raw).unwrap();
        assert_eq!(response.status, 400);
        assert_eq!(response.body, body.as_bytes());
    }

    #[test]
    fn chunked_body_is_reassembled() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                   4\r\n{\"st\r\n7;ext=1\r\nate\":1}\r\n0\r\nTrailer: x\r\n\r\n";
        let response = parse(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{\"state\":1}");
    }

    #[test]
    fn body_without_framing_reads_to_close() {
        let response = parse("HTTP/1.0 500 Oops\r\n\r\nboom").unwrap();
        assert_eq!(response.status, 500);
        assert_eq!(response.body, b"boom");
    }

    #[test]
    fn interim_continue_is_skipped() {
        let response = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 \r\n\r\n").unwrap();
        assert_eq!(response.status, 204);
    }

    #[test]
    fn broken_responses_are_malformed() {
        assert!(malformed("").contains("closed before the status line"));
        assert!(malformed("SSH-2.0-OpenSSH\r\n\r\n").contains("bad status line"));
        assert!(malformed("HTTP/1.1 2000 \r\n\r\n").contains("bad status line"));
        assert!(malformed("HTTP/1.1 +20 \r\n\r\n").contains("bad status line"));
        assert!(malformed("HTTP/1.1 099 \r\n\r\n").contains("bad status line"));
        assert!(malformed("HTTP/1.1 200 \r\nno colon\r\n\r\n").contains("bad header"));
        assert!(malformed("HTTP/1.1 200 \r\nContent-Length: x\r\n\r\n").contains("Content-Length"));
        assert!(malformed("HTTP/1.1 200 \r\nContent-Length: 10\r\n\r\nabc").contains("3 of 10"));
        assert!(
            malformed("HTTP/1.1 200 \r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .contains("chunk size")
        );
        assert!(
            malformed("HTTP/1.1 200 \r\nContent-Length: 99999999999\r\n\r\n").contains("larger")
        );
        let long = format!("HTTP/1.1 200 {}\r\n\r\n", "x".repeat(10_000));
        assert!(malformed(&long).contains("over-long"));
    }
}
