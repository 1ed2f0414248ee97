//! A minimal HTTP GET over a std TcpStream (no client crate needed).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, bail};

const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` and returns the body of a 200 answer. HTTP/1.0, so the
/// server closes the connection after one unchunked answer.
pub fn get(address: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .with_context(|| format!("connecting to {address}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .context("setting a read timeout")?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .context("setting a write timeout")?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")
        .with_context(|| format!("sending GET {path}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer to GET {path}"))?;
    let response = String::from_utf8(response).context("the answer is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers in the answer")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("GET http://{address}{path}: {status}\n{body}");
    }
    Ok(body.to_string())
}
