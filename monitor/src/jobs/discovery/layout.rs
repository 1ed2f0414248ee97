//! One job layout: a spec (`[controller:]^regex`) parsed, checked, and its
//! literal start as the kernel compares it.
use monitor_common::DISCOVERY_PREFIX_MAX;
use regex::Regex;

use super::DiscoveryError;

/// One job layout.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The v1 controller whose hierarchy it is in; None: the v2 hierarchy.
    pub(super) controller: Option<String>,
    pub(super) pattern: Regex,
    /// Its literal start as the kernel compares it (at most
    /// [`DISCOVERY_PREFIX_MAX`] bytes): what the kernel gives slots under is
    /// what the daemon frees them under.
    pub(super) prefix: String,
}

pub(super) fn parse_layout(spec: &str) -> Result<Layout, DiscoveryError> {
    let (controller, source) = match spec.split_once(":^") {
        Some((controller, rest)) if !controller.contains(['/', '^']) && !controller.is_empty() => {
            (Some(controller.to_string()), format!("^{rest}"))
        }
        _ => (None, spec.to_string()),
    };
    if !source.starts_with('^') {
        return Err(DiscoveryError::NotAnchored(spec.to_string()));
    }
    let pattern = Regex::new(&source).map_err(|source| DiscoveryError::Regex {
        layout: spec.to_string(),
        source,
    })?;
    if !pattern
        .capture_names()
        .any(|name| name == Some("jobid") || name == Some("sluid"))
    {
        return Err(DiscoveryError::NoJobId(spec.to_string()));
    }
    let mut prefix = literal_prefix(pattern.as_str());
    while prefix.len() > DISCOVERY_PREFIX_MAX {
        prefix.pop();
    }
    Ok(Layout {
        controller,
        pattern,
        prefix,
    })
}

/// The literal text an anchored regex's matches all start with: its
/// characters up to the first one with a special meaning (`\.` is a dot).
pub(super) fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern
        .strip_prefix('^')
        .unwrap_or(pattern)
        .chars()
        .peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next) if next.is_ascii_punctuation() => {
                    out.push(next);
                    chars.next();
                }
                _ => break,
            },
            '.' | '[' | ']' | '(' | ')' | '{' | '}' | '*' | '+' | '?' | '|' | '^' | '$' => {
                // A quantifier applies to the character before it.
                if matches!(c, '*' | '?' | '{') {
                    out.pop();
                }
                break;
            }
            c => out.push(c),
        }
    }
    out
}
