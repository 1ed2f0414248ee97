//! Prometheus' query API over plain HTTP: an instant query and its
//! vector's samples, or why there are none.
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

use crate::client::http::{self, HttpError, percent_encode};

#[derive(Debug, Error)]
pub enum PromError {
    #[error("--prometheus {url:?}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("asking Prometheus at {url}")]
    Http {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error("Prometheus at {url} answered {status} to {query}: {body}")]
    Status {
        url: String,
        status: String,
        query: String,
        body: String,
    },
    #[error("Prometheus at {url} failed {query}: {error}")]
    Query {
        url: String,
        query: String,
        error: String,
    },
    #[error("Prometheus at {url} answered {query} with what its query API never gives: {why}")]
    Answer {
        url: String,
        query: String,
        why: String,
    },
}

/// A Prometheus server's query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    /// `host:port`, to connect to and for the Host header.
    authority: String,
    /// A path prefix (`--web.route-prefix`, or a proxy's), without a trailing `/`.
    prefix: String,
    /// `Basic ...`, from the URL's `user:password@`.
    authorization: Option<String>,
    /// The URL without its password, for messages.
    pub url: String,
}

impl Prometheus {
    /// `http://[USER:PASSWORD@]HOST[:PORT][/PREFIX]` (the scheme may be left out).
    pub fn new(url: &str) -> Result<Self, PromError> {
        let bad = |why| PromError::BadUrl {
            url: url.to_string(),
            why,
        };
        let rest = match url.split_once("://") {
            None => url,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "https is not supported: give Prometheus' plain http:// address (on the \
                     cluster network, or through a local proxy)",
                ));
            }
            Some(_) => return Err(bad("expected an http:// address")),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path.trim_end_matches('/')),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if host.is_empty() || host.starts_with(':') {
            return Err(bad("no host"));
        }
        let has_port = match host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host.contains(':'),
        };
        let authority = if has_port {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let authorization = userinfo.map(|userinfo| {
            let credentials = percent_decode(userinfo);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        });
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        Ok(Self {
            url: format!("http://{authority}{prefix}"),
            authority,
            prefix,
            authorization,
        })
    }

    /// An instant query at Unix time `time`: the samples of its vector.
    pub fn query(&self, promql: &str, time: f64) -> Result<Vec<Sample>, PromError> {
        let body = format!("query={}&time={time:.3}", percent_encode(promql));
        let mut request = format!(
            "POST {}/api/v1/query HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            self.prefix,
            self.authority,
            body.len()
        );
        if let Some(authorization) = &self.authorization {
            request.push_str(&format!("Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let response =
            http::tcp_exchange(&self.authority, request.as_bytes()).map_err(|source| {
                PromError::Http {
                    url: self.url.clone(),
                    source,
                }
            })?;
        // Prometheus answers a bad query with 400 or 422 and its error in the JSON.
        match (response.status, parse_answer(&response.body)) {
            (200, Ok(samples)) => Ok(samples),
            (_, Err(Failure::Query(error))) => Err(PromError::Query {
                url: self.url.clone(),
                query: promql.to_string(),
                error,
            }),
            (200, Err(Failure::Answer(why))) => Err(PromError::Answer {
                url: self.url.clone(),
                query: promql.to_string(),
                why,
            }),
            _ => Err(PromError::Status {
                url: self.url.clone(),
                status: response.status_line,
                query: promql.to_string(),
                body: response.body,
            }),
        }
    }
}

/// `%XX` escapes of a URL's user information, decoded.
pub(super) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// One sample of an instant vector: its labels and `[time, "value"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sample {
    pub metric: BTreeMap<String, String>,
    pub value: (f64, String),
}

impl Sample {
    /// The value, when it is a finite number.
    pub(super) fn number(&self) -> Option<f64> {
        self.value.1.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    pub(super) fn label(&self, name: &str) -> &str {
        self.metric.get(name).map_or("", String::as_str)
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, PartialEq)]
enum Failure {
    /// Prometheus said the query failed.
    Query(String),
    /// Not an answer of the query API.
    Answer(String),
}

fn parse_answer(body: &str) -> Result<Vec<Sample>, Failure> {
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| Failure::Answer(format!("{e}: {body}")))?;
    if answer.status != "success" {
        return Err(Failure::Query(
            answer
                .error
                .unwrap_or_else(|| format!("status {}", answer.status)),
        ));
    }
    let data = answer
        .data
        .ok_or_else(|| Failure::Answer("no data".to_string()))?;
    if data.result_type != "vector" {
        return Err(Failure::Answer(format!(
            "a {} instead of a vector",
            data.result_type
        )));
    }
    serde_json::from_value(data.result).map_err(|e| Failure::Answer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses() {
        let plain = Prometheus::new("http://prom:9090").unwrap();
        assert_eq!(
            (plain.authority.as_str(), plain.prefix.as_str()),
            ("prom:9090", "")
        );
        assert_eq!(plain.authorization, None);
        let full = Prometheus::new("HTTP://alice:p%40ss@[::1]:9090/prometheus/").unwrap();
        assert_eq!(full.authority, "[::1]:9090");
        assert_eq!(full.prefix, "/prometheus");
        assert_eq!(full.url, "http://[::1]:9090/prometheus");
        // base64("alice:p@ss")
        assert_eq!(
            full.authorization.as_deref(),
            Some("Basic YWxpY2U6cEBzcw==")
        );
        assert_eq!(Prometheus::new("prom").unwrap().authority, "prom:80");
        for bad in ["https://prom:9090", "ftp://prom", "http://", "http://:9090"] {
            assert!(Prometheus::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_answers_and_failures() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"n1:9959","user":"alice"},"value":[1700000000.5,"12.25"]},
            {"metric":{"instance":"n2:9959","user":"alice"},"value":[1700000000.5,"NaN"]}]}}"#;
        let samples = parse_answer(body).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].number(), Some(12.25));
        assert_eq!(samples[0].label("instance"), "n1:9959");
        assert_eq!(samples[1].number(), None);
        assert_eq!(
            parse_answer(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
            Err(Failure::Query("parse error".into()))
        );
        assert!(matches!(parse_answer("<html>"), Err(Failure::Answer(_))));
        assert!(matches!(
            parse_answer(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#),
            Err(Failure::Answer(_))
        ));
    }
}
