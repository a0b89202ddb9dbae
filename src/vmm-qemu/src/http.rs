//! The HTTP/1.1 subset Firecracker's API speaks: one request at a time, bodies sized by Content-Length.

use std::io::{self, BufRead, Write};

/// Firecracker refuses bodies larger than this.
const MAX_BODY: usize = 51_200;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The client asked to close the connection after the response.
    pub close: bool,
}

/// A response: 204 when `body` is `None`, otherwise JSON.
#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Option<String>,
}

impl Response {
    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    pub fn json(value: &serde_json::Value) -> Self {
        Self {
            status: 200,
            body: Some(value.to_string()),
        }
    }

    /// Firecracker's error shape: 400 with `{"fault_message": ...}`.
    pub fn fault(message: impl Into<String>) -> Self {
        let body = serde_json::json!({ "fault_message": message.into() });
        Self {
            status: 400,
            body: Some(body.to_string()),
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// Reads the next request; `None` when the client closed the connection between requests.
pub fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut length = 0;
    let mut close = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed inside the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid("malformed header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| invalid("malformed Content-Length"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if length > MAX_BODY {
        return Err(invalid("request body too large"));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        body,
        close,
    }))
}

/// Writes `response` in full.
pub fn write_response(writer: &mut impl Write, response: &Response) -> io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        204 => "No Content",
        _ => "Bad Request",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nServer: Firecracker API\r\n",
        response.status
    );
    match &response.body {
        Some(body) => {
            out.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        None => out.push_str("\r\n"),
    }
    writer.write_all(out.as_bytes())?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_back_to_back() -> io::Result<()> {
        let raw = b"PUT /vsock HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut reader = &raw[..];
        let first = read_request(&mut reader)?.ok_or_else(|| invalid("no first request"))?;
        assert_eq!(
            (
                first.method.as_str(),
                first.path.as_str(),
                &first.body[..],
                first.close
            ),
            ("PUT", "/vsock", &b"{}"[..], false)
        );
        let second = read_request(&mut reader)?.ok_or_else(|| invalid("no second request"))?;
        assert_eq!(
            (second.method.as_str(), second.path.as_str(), second.close),
            ("GET", "/", true)
        );
        assert!(read_request(&mut reader)?.is_none());
        Ok(())
    }

    #[test]
    fn rejects_a_truncated_request() {
        let mut reader = &b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}"[..];
        assert!(read_request(&mut reader).is_err());
    }

    #[test]
    fn writes_no_content_without_a_body() -> io::Result<()> {
        let mut out = Vec::new();
        write_response(&mut out, &Response::no_content())?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 204 No Content\r\nServer: Firecracker API\r\n\r\n"
        );
        Ok(())
    }
}
