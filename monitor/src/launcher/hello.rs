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
    #[error("at most {MAX_LABELS} labels")]
    TooManyLabels,
    #[error("only a root launcher may set user")]
    UserNotAllowed,
}

impl Hello {
    /// Parses and checks one line (without its newline).
    pub fn parse(line: &[u8], peer_is_root: bool) -> Result<Hello, HelloError> {
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
        if hello.user.is_some() && !peer_is_root {
            return Err(HelloError::UserNotAllowed);
        }
        Ok(hello)
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
