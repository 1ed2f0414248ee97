//! The launcher protocol: one optional JSON hello line from the peer, one
//! JSON reply line from the daemon.
//!
//! ```text
//! -> {"job_id":"42","name":"lammps","labels":{"partition":"gpu"},"user":"alice"}
//! <- {"ok":true,"job_id":"42","cgroup":"/monitor.slice/task-1234-0"}
//! <- {"ok":false,"error":"..."}
//! ```
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest hello line, newline included.
pub const MAX_HELLO: usize = 4096;
const MAX_LABELS: usize = 32;
const MAX_JOB_ID: usize = 128;

/// How long a hello's job name and labels may be, in bytes (UTF-8): each
/// is copied into every snapshot, `monitor_job_info` and the job's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloLimits {
    pub name: usize,
    /// A label's name (without the `label_` prefix it gets in /metrics).
    pub label_name: usize,
    pub label_value: usize,
}

impl HelloLimits {
    pub const DEFAULT_NAME: usize = 256;
    pub const DEFAULT_LABEL_NAME: usize = 64;
    pub const DEFAULT_LABEL_VALUE: usize = 256;
}

impl Default for HelloLimits {
    fn default() -> Self {
        Self {
            name: Self::DEFAULT_NAME,
            label_name: Self::DEFAULT_LABEL_NAME,
            label_value: Self::DEFAULT_LABEL_VALUE,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub job_id: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HelloError {
    #[error("malformed hello: {0}")]
    Malformed(String),
    #[error("job_id must be 1 to {MAX_JOB_ID} printable characters")]
    BadJobId,
    #[error("label {0:?}: names are [a-zA-Z_][a-zA-Z0-9_]*, not starting with __")]
    BadLabel(String),
    #[error("name is {len} bytes, more than {max} (--socket.max-name-bytes)")]
    NameTooLong { len: usize, max: usize },
    #[error("label name {name:?} is more than {max} bytes (--socket.max-label-name-bytes)")]
    LabelNameTooLong { name: String, max: usize },
    #[error(
        "label {name:?}: its value is {len} bytes, more than {max} (--socket.max-label-value-bytes)"
    )]
    LabelValueTooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("at most {MAX_LABELS} labels")]
    TooManyLabels,
    #[error("only a root launcher may set user")]
    UserNotAllowed,
}

impl Hello {
    /// Parses and checks one line (without its newline) within the default
    /// [`HelloLimits`].
    pub fn parse(line: &[u8], peer_is_root: bool) -> Result<Hello, HelloError> {
        Self::parse_within(line, peer_is_root, &HelloLimits::default())
    }

    /// Parses and checks one line (without its newline).
    pub fn parse_within(
        line: &[u8],
        peer_is_root: bool,
        limits: &HelloLimits,
    ) -> Result<Hello, HelloError> {
        let hello: Hello =
            serde_json::from_slice(line).map_err(|e| HelloError::Malformed(e.to_string()))?;
        if let Some(id) = &hello.job_id
            && (id.is_empty() || id.len() > MAX_JOB_ID || id.chars().any(char::is_control))
        {
            return Err(HelloError::BadJobId);
        }
        if hello.labels.len() > MAX_LABELS {
            return Err(HelloError::TooManyLabels);
        }
        if let Some(bad) = hello.labels.keys().find(|k| !valid_label_name(k)) {
            return Err(HelloError::BadLabel(bad.clone()));
        }
        hello.check_sizes(limits)?;
        if hello.user.is_some() && !peer_is_root {
            return Err(HelloError::UserNotAllowed);
        }
        Ok(hello)
    }
}

impl Hello {
    fn check_sizes(&self, limits: &HelloLimits) -> Result<(), HelloError> {
        if let Some(name) = &self.name
            && name.len() > limits.name
        {
            return Err(HelloError::NameTooLong {
                len: name.len(),
                max: limits.name,
            });
        }
        for (name, value) in &self.labels {
            if name.len() > limits.label_name {
                return Err(HelloError::LabelNameTooLong {
                    name: shortened(name),
                    max: limits.label_name,
                });
            }
            if value.len() > limits.label_value {
                return Err(HelloError::LabelValueTooLong {
                    name: name.clone(),
                    len: value.len(),
                    max: limits.label_value,
                });
            }
        }
        Ok(())
    }
}

/// The start of an oversize name, for an error that stays short.
fn shortened(name: &str) -> String {
    const SHOWN: usize = 32;
    match name.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &name[..end]),
        None => name.to_string(),
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(job_id: &str, cgroup: &str) -> Self {
        Reply {
            ok: true,
            job_id: Some(job_id.to_string()),
            cgroup: Some(cgroup.to_string()),
            error: None,
        }
    }

    pub fn error(message: impl ToString) -> Self {
        Reply {
            ok: false,
            job_id: None,
            cgroup: None,
            error: Some(message.to_string()),
        }
    }

    /// The reply as one line, newline included.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| r#"{"ok":false}"#.into());
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_hello() {
        let hello = Hello::parse(
            br#"{"job_id":"42","name":"lammps","labels":{"partition":"gpu"},"user":"alice"}"#,
            true,
        )
        .unwrap();
        assert_eq!(hello.job_id.as_deref(), Some("42"));
        assert_eq!(hello.labels["partition"], "gpu");
        assert_eq!(Hello::parse(b"{}", false).unwrap(), Hello::default());
    }

    #[test]
    fn refuses_garbage_and_bad_claims() {
        assert!(matches!(
            Hello::parse(b"not json", false),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            Hello::parse(br#"{"job_id":42}"#, false),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            Hello::parse(br#"{"jobid":"x"}"#, false),
            Err(HelloError::Malformed(_))
        ));
        assert_eq!(
            Hello::parse(br#"{"job_id":""}"#, false),
            Err(HelloError::BadJobId)
        );
        assert_eq!(
            Hello::parse(br#"{"job_id":"a\nb"}"#, false),
            Err(HelloError::BadJobId)
        );
        assert_eq!(
            Hello::parse(br#"{"user":"alice"}"#, false),
            Err(HelloError::UserNotAllowed)
        );
        assert_eq!(
            Hello::parse(br#"{"labels":{"a-b":"x"}}"#, false),
            Err(HelloError::BadLabel("a-b".into()))
        );
        assert_eq!(
            Hello::parse(br#"{"labels":{"__x":"x"}}"#, false),
            Err(HelloError::BadLabel("__x".into()))
        );
    }

    #[test]
    fn names_and_labels_are_bounded() {
        let limits = HelloLimits {
            name: 4,
            label_name: 3,
            label_value: 2,
        };
        let parse = |line: &str| Hello::parse_within(line.as_bytes(), false, &limits);
        assert!(parse(r#"{"name":"abcd","labels":{"abc":"xy"}}"#).is_ok());
        assert_eq!(
            parse(r#"{"name":"abcde"}"#),
            Err(HelloError::NameTooLong { len: 5, max: 4 })
        );
        assert_eq!(
            parse(r#"{"labels":{"abcd":"x"}}"#),
            Err(HelloError::LabelNameTooLong {
                name: "abcd".into(),
                max: 3
            })
        );
        assert_eq!(
            parse(r#"{"labels":{"a":"xyz"}}"#),
            Err(HelloError::LabelValueTooLong {
                name: "a".into(),
                len: 3,
                max: 2
            })
        );
        // Bytes, not characters: "é" is two.
        assert!(parse(r#"{"labels":{"a":"é"}}"#).is_ok());
        assert!(parse(r#"{"labels":{"a":"éa"}}"#).is_err());
        let long = "x".repeat(HelloLimits::DEFAULT_NAME + 1);
        assert!(matches!(
            Hello::parse(format!(r#"{{"name":"{long}"}}"#).as_bytes(), true),
            Err(HelloError::NameTooLong { .. })
        ));
    }

    #[test]
    fn replies_are_one_json_line() {
        assert_eq!(
            Reply::ok("42", "/m/t").line(),
            "{\"ok\":true,\"job_id\":\"42\",\"cgroup\":\"/m/t\"}\n"
        );
        assert_eq!(
            Reply::error("nope").line(),
            "{\"ok\":false,\"error\":\"nope\"}\n"
        );
    }
}
