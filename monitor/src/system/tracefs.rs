//! tracefs: mounting it when missing and reading tracepoint format files.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

pub const TRACEFS_MOUNT: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error("could not mount tracefs at {TRACEFS_MOUNT}: {0} (is CONFIG_TRACING enabled?)")]
    Mount(#[source] nix::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {tracepoint} has no field {field:?} (kernel too old or too new?)")]
    MissingField { tracepoint: String, field: String },
    #[error("malformed line in the format of {tracepoint}: {line:?}")]
    Malformed { tracepoint: String, line: String },
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C declaration without the name, e.g. `pid_t`, `__data_loc char[]`.
    pub c_type: String,
    pub offset: usize,
    pub size: usize,
}

/// The fields of one tracepoint.
#[derive(Debug, Clone)]
pub struct Format {
    pub tracepoint: String,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Result<&Field, TracefsError> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| TracefsError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: name.to_string(),
            })
    }
}

/// Where tracefs is, mounting it at /sys/kernel/tracing when it is not.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for candidate in [TRACEFS_MOUNT, DEBUGFS_TRACING] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(PathBuf::from(candidate));
        }
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS_MOUNT,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(TracefsError::Mount)?;
    log::info!("mounted tracefs at {TRACEFS_MOUNT}");
    Ok(PathBuf::from(TRACEFS_MOUNT))
}

/// Reads and parses `events/<category>/<name>/format` under `tracefs`.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read { path, source })?;
    parse_format(&format!("{category}/{name}"), &text)
}

/// Parses a format file. Lines look like
/// `\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;`.
pub fn parse_format(tracepoint: &str, text: &str) -> Result<Format, TracefsError> {
    let malformed = |line: &str| TracefsError::Malformed {
        tracepoint: tracepoint.to_string(),
        line: line.to_string(),
    };
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut declaration = None;
        let mut offset = None;
        let mut size = None;
        for (i, part) in rest.split(';').map(str::trim).enumerate() {
            if i == 0 {
                declaration = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        let (Some(declaration), Some(offset), Some(size)) = (declaration, offset, size) else {
            return Err(malformed(line));
        };
        let (c_type, name) = split_declaration(declaration).ok_or_else(|| malformed(line))?;
        fields.push(Field {
            name,
            c_type,
            offset,
            size,
        });
    }
    Ok(Format {
        tracepoint: tracepoint.to_string(),
        fields,
    })
}

/// `char prev_comm[16]` -> (`char[16]`, `prev_comm`); `pid_t pid` -> (`pid_t`, `pid`).
fn split_declaration(declaration: &str) -> Option<(String, String)> {
    let (c_type, name) = declaration.trim().rsplit_once(' ')?;
    let (name, array) = match name.find('[') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    if name.is_empty() {
        return None;
    }
    Some((format!("{}{array}", c_type.trim()), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHED_SWITCH: &str = "name: sched_switch
ID: 316
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:__data_loc char[] path;\toffset:40;\tsize:4;\tsigned:0;

print fmt: \"prev_comm=%s prev_pid=%d\", REC->prev_comm, REC->prev_pid
";

    #[test]
    fn parses_fields_offsets_and_sizes() {
        let format = parse_format("sched/sched_switch", SCHED_SWITCH).unwrap();
        assert_eq!(format.fields.len(), 6);
        let prev_state = format.field("prev_state").unwrap();
        assert_eq!((prev_state.offset, prev_state.size), (32, 8));
        assert_eq!(prev_state.c_type, "long");
        let comm = format.field("prev_comm").unwrap();
        assert_eq!((comm.c_type.as_str(), comm.offset), ("char[16]", 8));
        let path = format.field("path").unwrap();
        assert_eq!(path.c_type, "__data_loc char[]");
        assert_eq!(format.field("common_type").unwrap().offset, 0);
    }

    #[test]
    fn missing_field_names_the_tracepoint() {
        let format = parse_format("sched/sched_switch", SCHED_SWITCH).unwrap();
        let err = format.field("next_pid").unwrap_err().to_string();
        assert!(
            err.contains("sched/sched_switch") && err.contains("next_pid"),
            "{err}"
        );
    }

    #[test]
    fn malformed_field_line_is_an_error() {
        let err = parse_format("x/y", "\tfield:int a;\toffset:zz;\tsize:4;\n").unwrap_err();
        assert!(matches!(err, TracefsError::Malformed { .. }));
    }
}
