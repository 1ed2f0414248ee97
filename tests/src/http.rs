//! A minimal HTTP GET over a std TcpStream (no client crate needed), to
//! the daemon or any other loopback server (Prometheus).
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, bail};

const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` and returns the body of a 200 answer. HTTP/1.0, so the
/// server closes the connection after one unchunked answer.
pub fn get(address: SocketAddr, path: &str) -> anyhow::Result<String> {
    get_page(address, path).map(|(body, _)| body)
}

/// Like [`get`], with the target of the answer's `Link: <...>; rel="next"`
/// header, if any (the job API's next page).
pub fn get_page(address: SocketAddr, path: &str) -> anyhow::Result<(String, Option<String>)> {
    let mut stream = send_get(address, path)?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer to GET {path}"))?;
    let response = String::from_utf8(response).context("the answer is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers in the answer")?;
    let status = head.lines().next().unwrap_or_default();
    if !is_ok(status) {
        bail!("GET http://{address}{path}: {status}\n{body}");
    }
    Ok((body.to_string(), next_link(head)))
}

/// GETs `path`, checks that the answer is a 200 and reads its body to
/// the end without keeping it: the body's length in bytes. For load
/// (scrapes run back to back against the daemon): the client's own CPU
/// per answer is a read into one buffer, nothing copied or validated.
pub fn get_discarding(address: SocketAddr, path: &str) -> anyhow::Result<u64> {
    let mut stream = send_get(address, path)?;
    let mut buffer = vec![0u8; DISCARD_BUFFER];
    let mut head = Vec::new();
    let mut body: Option<u64> = None;
    loop {
        let read = stream
            .read(&mut buffer)
            .with_context(|| format!("reading the answer to GET {path}"))?;
        if read == 0 {
            break;
        }
        if let Some(body) = &mut body {
            *body += read as u64;
            continue;
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head_end(&head) {
            let status = String::from_utf8_lossy(&head[..end]);
            let status = status.lines().next().unwrap_or_default();
            if !is_ok(status) {
                bail!("GET http://{address}{path}: {status}");
            }
            body = Some((head.len() - end) as u64);
        }
    }
    let body = body.with_context(|| format!("no end of headers in the answer to GET {path}"))?;
    Ok(body)
}

/// A connection to `address` with `GET path` sent on it (HTTP/1.0: the
/// server closes it after one answer), reads and writes timed out.
fn send_get(address: SocketAddr, path: &str) -> anyhow::Result<TcpStream> {
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
    Ok(stream)
}

/// Whether an answer's status line says 200.
fn is_ok(status: &str) -> bool {
    status.split_whitespace().nth(1) == Some("200")
}

/// Reads per call in [`get_discarding`].
const DISCARD_BUFFER: usize = 256 * 1024;

/// Where the body starts in `head`, once its blank line has come.
fn head_end(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The `rel="next"` target of a Link header among `head`'s lines.
pub fn next_link(head: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("link") {
            return None;
        }
        let (target, params) = value.trim().strip_prefix('<')?.split_once('>')?;
        params.contains("rel=\"next\"").then(|| target.to_string())
    })
}

/// Percent-encodes `text` as one value of a URL query (`?query=...`):
/// everything but RFC 3986's unreserved characters, byte by byte.
pub fn encode_query_value(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
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

    /// A loopback server that answers one request with each of `answers`.
    fn serve(answers: &'static [&'static str]) -> SocketAddr {
        use std::{io::BufRead as _, net::TcpListener};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while request.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        address
    }

    #[test]
    fn bodies_of_good_answers_only() {
        let address = serve(&[
            "HTTP/1.0 200 OK\r\ncontent-length: 3\r\nLink: </next?page=2>; rel=\"next\"\r\n\r\nabc",
            "HTTP/1.0 404 Not Found\r\n\r\n",
            "garbage",
        ]);
        assert_eq!(
            get_page(address, "/metrics").unwrap(),
            ("abc".to_string(), Some("/next?page=2".to_string()))
        );
        assert!(get(address, "/nothing").is_err());
        assert!(get(address, "/metrics").is_err());
    }

    #[test]
    fn discarded_bodies_are_counted_and_bad_answers_refused() {
        let address = serve(&[
            "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nabcde",
            "HTTP/1.0 503 Service Unavailable\r\n\r\nbusy",
            "garbage",
        ]);
        assert_eq!(get_discarding(address, "/metrics").unwrap(), 5);
        assert!(get_discarding(address, "/metrics").is_err());
        assert!(get_discarding(address, "/metrics").is_err());
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode_query_value(r#"up{job="monitor"} == 1"#),
            "up%7Bjob%3D%22monitor%22%7D%20%3D%3D%201"
        );
        assert_eq!(encode_query_value("a-b.c_d~9/é"), "a-b.c_d~9%2F%C3%A9");
    }
}
