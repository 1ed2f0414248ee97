//! Decoding cgroup events from the ring buffer.
use std::mem::size_of;

use monitor_common::{CGROUP_EVENT_HEADER, CgroupEvent, CgroupEventKind, NO_SLOT};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupChange {
    pub kind: CgroupEventKind,
    pub id: u64,
    pub level: u32,
    /// Mkdir: the counter slot the kernel gave it; None when it had none.
    pub slot: Option<u32>,
    /// Path in the hierarchy, e.g. `/monitor.slice/job42`.
    pub path: String,
}

/// Decodes one ring buffer record; None for a record too short or of an
/// unknown kind. A record ends after its path (see [`CgroupEvent`]); the
/// path ends at its NUL or at the record's end.
pub fn decode(bytes: &[u8]) -> Option<CgroupChange> {
    if bytes.len() < CGROUP_EVENT_HEADER {
        return None;
    }
    let mut whole = [0u8; size_of::<CgroupEvent>()];
    let taken = bytes.len().min(whole.len());
    whole[..taken].copy_from_slice(&bytes[..taken]);
    // SAFETY: a CgroupEvent's size; it is plain integers and bytes.
    let event: CgroupEvent = unsafe { std::ptr::read_unaligned(whole.as_ptr().cast()) };
    let kind = match event.kind {
        k if k == CgroupEventKind::Mkdir as u32 => CgroupEventKind::Mkdir,
        k if k == CgroupEventKind::Rmdir as u32 => CgroupEventKind::Rmdir,
        _ => return None,
    };
    let end = event
        .path
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(event.path.len());
    Some(CgroupChange {
        kind,
        id: event.id,
        level: event.level,
        slot: (event.slot != NO_SLOT).then_some(event.slot),
        path: String::from_utf8_lossy(&event.path[..end]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use monitor_common::CGROUP_PATH_MAX;

    use super::*;

    fn encode(kind: u32, id: u64, path: &str) -> Vec<u8> {
        encode_with_slot(kind, id, 5, path)
    }

    fn encode_with_slot(kind: u32, id: u64, slot: u32, path: &str) -> Vec<u8> {
        let mut event = CgroupEvent {
            kind,
            level: 2,
            id,
            slot,
            _pad: 0,
            path: [0; CGROUP_PATH_MAX],
        };
        event.path[..path.len()].copy_from_slice(path.as_bytes());
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe {
            std::slice::from_raw_parts(
                (&event as *const CgroupEvent).cast::<u8>(),
                size_of::<CgroupEvent>(),
            )
        }
        .to_vec()
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
                slot: Some(5),
                path: "/monitor.slice/job".into()
            }
        );
        assert_eq!(
            decode(&encode(2, 7, "/x")).unwrap().kind,
            CgroupEventKind::Rmdir
        );
    }

    #[test]
    fn no_slot_decodes_as_none() {
        assert_eq!(
            decode(&encode_with_slot(1, 42, NO_SLOT, "/m/j"))
                .unwrap()
                .slot,
            None
        );
        assert_eq!(
            decode(&encode_with_slot(1, 42, 0, "/m/j")).unwrap().slot,
            Some(0)
        );
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert_eq!(decode(&[0u8; 8]), None);
        assert_eq!(decode(&encode(9, 1, "/x")), None);
    }

    #[test]
    fn a_record_cut_after_its_path_decodes_whole() {
        let path = "/monitor.slice/task-7";
        let full = encode(1, 42, path);
        // As the programs send it: up to and with the path's NUL.
        let sent = &full[..CGROUP_EVENT_HEADER + path.len() + 1];
        assert_eq!(decode(sent), decode(&full));
        // Without the NUL, the path ends with the record.
        let unterminated = &full[..CGROUP_EVENT_HEADER + path.len()];
        assert_eq!(decode(unterminated).unwrap().path, path);
        // The header alone: an empty path.
        assert_eq!(decode(&full[..CGROUP_EVENT_HEADER]).unwrap().path, "");
    }

    #[test]
    fn a_path_filling_the_buffer_has_no_terminator() {
        let long = "/".repeat(CGROUP_PATH_MAX);
        assert_eq!(
            decode(&encode(1, 1, &long)).unwrap().path.len(),
            CGROUP_PATH_MAX
        );
    }
}
