//! Decoding cgroup events from the ring buffer.
use std::mem::size_of;

use monitor_common::{CgroupEvent, CgroupEventKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupChange {
    pub kind: CgroupEventKind,
    pub id: u64,
    pub level: u32,
    /// Path in the hierarchy, e.g. `/monitor.slice/job42`.
    pub path: String,
}

/// Decodes one ring buffer record; None for a record of the wrong size or kind.
pub fn decode(bytes: &[u8]) -> Option<CgroupChange> {
    if bytes.len() < size_of::<CgroupEvent>() {
        return None;
    }
    // SAFETY: length checked; CgroupEvent is plain integers and bytes.
    let event: CgroupEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = match event.kind {
        k if k == CgroupEventKind::Mkdir as u32 => CgroupEventKind::Mkdir,
        k if k == CgroupEventKind::Rmdir as u32 => CgroupEventKind::Rmdir,
        _ => return None,
    };
    let end = event.path.iter().position(|&b| b == 0).unwrap_or(event.path.len());
    Some(CgroupChange {
        kind,
        id: event.id,
        level: event.level,
        path: String::from_utf8_lossy(&event.path[..end]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use monitor_common::CGROUP_PATH_MAX;

    use super::*;

    fn encode(kind: u32, id: u64, path: &str) -> Vec<u8> {
        let mut event = CgroupEvent {
            kind,
            level: 2,
            id,
            path: [0; CGROUP_PATH_MAX],
        };
        event.path[..path.len()].copy_from_slice(path.as_bytes());
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((&event as *const CgroupEvent).cast::<u8>(), size_of::<CgroupEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_mkdir_and_rmdir() {
        let change = decode(&encode(1, 42, "/monitor.slice/job")).unwrap();
        assert_eq!(
            change,
            CgroupChange {
                kind: CgroupEventKind::Mkdir,
                id: 42,
                level: 2,
                path: "/monitor.slice/job".into()
            }
        );
        assert_eq!(decode(&encode(2, 7, "/x")).unwrap().kind, CgroupEventKind::Rmdir);
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert_eq!(decode(&[0u8; 8]), None);
        assert_eq!(decode(&encode(9, 1, "/x")), None);
    }

    #[test]
    fn a_path_filling_the_buffer_has_no_terminator() {
        let long = "/".repeat(CGROUP_PATH_MAX);
        assert_eq!(decode(&encode(1, 1, &long)).unwrap().path.len(), CGROUP_PATH_MAX);
    }
}
