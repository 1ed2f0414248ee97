//! A minimal blocking HTTP GET, enough to time scrapes of /metrics the way
//! a scraper sees them (connect, request, whole body).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, bail};

const TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `path` and returns the body of a 200 response.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .context("setting a read timeout")?;
    // HTTP/1.0: the server closes after the body and never sends it chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the response to GET {path} from {addr}"))?;
    body_of(&response).with_context(|| format!("GET http://{addr}{path}"))
}

fn body_of(response: &[u8]) -> anyhow::Result<String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of headers in the response")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("answered {status:?}");
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_of_a_good_response() {
        let body = body_of(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nabc").unwrap();
        assert_eq!(body, "abc");
    }

    #[test]
    fn errors_are_refused() {
        assert!(body_of(b"HTTP/1.0 404 Not Found\r\n\r\n").is_err());
        assert!(body_of(b"garbage").is_err());
    }
}
