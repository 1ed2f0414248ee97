//! The clients' HTTP: one HTTP/1.0 request per connection, so the server
//! answers unchunked and closes, and the answer is read to its end. Enough
//! for the daemon's API socket and for Prometheus' query API; no client
//! crate, no async runtime in a command that asks one question.
use std::{
    fmt::Write as _,
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use thiserror::Error;

/// How long a connection may take to answer (Prometheus over a week of a
/// large job's series may take a few seconds).
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("connecting")]
    Connect(#[source] io::Error),
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("sending the request")]
    Send(#[source] io::Error),
    #[error("reading the answer")]
    Read(#[source] io::Error),
    #[error("the answer has no end of headers")]
    NoHeaders,
    #[error("the answer's status line {0:?} has no status code")]
    BadStatus(String),
    #[error("the answer is not UTF-8")]
    NotUtf8,
}

/// A server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The first line, e.g. `HTTP/1.0 404 Not Found`.
    pub status_line: String,
    /// The `Link` header's `rel="next"` target, if any: where the rest of a
    /// paged answer is.
    pub next_page: Option<String>,
    pub body: String,
}

/// GET `path` over the Unix socket `socket`.
pub fn unix_get(socket: &Path, path: &str) -> Result<Response, HttpError> {
    let stream = UnixStream::connect(socket).map_err(HttpError::Connect)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(HttpError::Connect)?;
    exchange(
        stream,
        format!("GET {path} HTTP/1.0\r\nHost: monitor\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` (head and body) to `authority` (`host:port`) over TCP.
pub fn tcp_exchange(authority: &str, request: &[u8]) -> Result<Response, HttpError> {
    let addresses: Vec<_> = authority
        .to_socket_addrs()
        .map_err(HttpError::Connect)?
        .collect();
    let mut last = HttpError::NoAddress(authority.to_string());
    for address in addresses {
        match TcpStream::connect_timeout(&address, TIMEOUT) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
                    .map_err(HttpError::Connect)?;
                return exchange(stream, request);
            }
            Err(e) => last = HttpError::Connect(e),
        }
    }
    Err(last)
}

/// Writes `request`, reads the whole answer and splits it.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Result<Response, HttpError> {
    stream.write_all(request).map_err(HttpError::Send)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(HttpError::Read)?;
    parse(&response)
}

fn parse(response: &[u8]) -> Result<Response, HttpError> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::NoHeaders)?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status_line = head.lines().next().unwrap_or_default().to_string();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| HttpError::BadStatus(status_line.clone()))?;
    let next_page = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("link")
            .then(|| next_link(value))?
    });
    let body = String::from_utf8(response[split + 4..].to_vec()).map_err(|_| HttpError::NotUtf8)?;
    Ok(Response {
        status,
        status_line,
        next_page,
        body,
    })
}

/// The target of the `rel="next"` link in a Link header's value.
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""))
            .then(|| target.to_string())
    })
}

/// Percent-encodes `text` for a URL's path segment or query value (and a
/// form body): everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_an_answer() {
        let response =
            parse(b"HTTP/1.0 404 Not Found\r\ncontent-type: application/json\r\n\r\n{\"error\":1}")
                .unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(response.status_line, "HTTP/1.0 404 Not Found");
        assert_eq!(response.body, "{\"error\":1}");
        assert_eq!(response.next_page, None);
        let paged =
            parse(b"HTTP/1.0 200 OK\r\nlink: </api/v1/jobs?before=1%3A2>; rel=\"next\"\r\n\r\n[]")
                .unwrap();
        assert_eq!(
            paged.next_page.as_deref(),
            Some("/api/v1/jobs?before=1%3A2")
        );
        assert!(matches!(
            parse(b"HTTP/1.0 200 OK\r\n"),
            Err(HttpError::NoHeaders)
        ));
        assert!(matches!(
            parse(b"garbage\r\n\r\n"),
            Err(HttpError::BadStatus(_))
        ));
    }

    #[test]
    fn encodes_values() {
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(
            percent_encode(r#"up{job="monitor"}"#),
            "up%7Bjob%3D%22monitor%22%7D"
        );
    }
}
