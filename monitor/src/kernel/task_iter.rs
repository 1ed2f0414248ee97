//! Running the iterator programs: every sample, the daemon creates an
//! iterator from a program's link and reads it to the end, which runs the
//! program over every task of the node (`task_iter`) or over every task
//! the programs track (`tracked_task_iter`, a walk of the TASK_STATE map).
//! Either credits job tasks in the kernel and writes each live job task's
//! cgroup id. aya 0.14 turns a link into one iterator only and makes no
//! map iterator link; these are the bpf(2) commands to do both.
use std::{
    ffi::CString,
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
    time::{Duration, Instant},
};

use aya::programs::links::FdLink;
use thiserror::Error;

use crate::system::ids::IdMap;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_ITER_CREATE: libc::c_long = 33;
/// `enum bpf_attach_type`: an iterator link.
const BPF_TRACE_ITER: u32 = 28;

#[derive(Debug, Error)]
pub enum IterError {
    #[error("reading the task iterator link's id: {0}")]
    LinkInfo(#[source] aya::programs::links::LinkError),
    #[error("opening the task iterator link #{id}: {source}")]
    LinkFd {
        id: u32,
        #[source]
        source: io::Error,
    },
    #[error("linking the map iterator to its map (BPF_LINK_CREATE): {0}")]
    MapLink(#[source] io::Error),
    #[error("pinning the map iterator's link at {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating a task iterator (BPF_ITER_CREATE): {0}")]
    Create(#[source] io::Error),
    #[error("running the task iterator: {0}")]
    Read(#[source] io::Error),
}

/// Bytes read from an iterator at a time (a multiple of its 8-byte records).
const READ_BUFFER: usize = 64 * 1024;

/// An iterator link the daemon can run (its fd keeps the link alive).
pub struct TaskIterator {
    link: OwnedFd,
}

/// What one run of the iterator saw.
#[derive(Debug, Clone, Default)]
pub struct IterRun {
    pub duration: Duration,
    /// Live tasks per job cgroup id (the program writes the cgroup id of
    /// every live job task it visits).
    pub job_tasks: IdMap<u64, u64>,
}

impl TaskIterator {
    /// An fd of its own for `link` (which may be pinned, or kept by the loader).
    pub fn new(link: &FdLink) -> Result<Self, IterError> {
        let id = link.info().map_err(IterError::LinkInfo)?.id();
        #[repr(C)]
        struct GetFdById {
            id: u32,
            next_id: u32,
            open_flags: u32,
        }
        let attr = GetFdById {
            id,
            next_id: 0,
            open_flags: 0,
        };
        let fd =
            bpf(BPF_LINK_GET_FD_BY_ID, &attr).map_err(|source| IterError::LinkFd { id, source })?;
        Ok(Self { link: fd })
    }

    /// Links map-element iterator `program` to `map` (every element of
    /// the map is visited), and keeps the link.
    pub fn over_map(program: BorrowedFd<'_>, map: BorrowedFd<'_>) -> Result<Self, IterError> {
        /// `union bpf_iter_link_info`, its map member.
        #[repr(C)]
        struct MapLinkInfo {
            map_fd: u32,
        }
        /// `bpf_attr.link_create` for an iterator.
        #[repr(C)]
        struct LinkCreate {
            prog_fd: u32,
            target_fd: u32,
            attach_type: u32,
            flags: u32,
            iter_info: u64,
            iter_info_len: u32,
        }
        let info = MapLinkInfo {
            map_fd: map.as_raw_fd() as u32,
        };
        let attr = LinkCreate {
            prog_fd: program.as_raw_fd() as u32,
            target_fd: 0,
            attach_type: BPF_TRACE_ITER,
            flags: 0,
            iter_info: &info as *const MapLinkInfo as u64,
            iter_info_len: size_of::<MapLinkInfo>() as u32,
        };
        let link = bpf(BPF_LINK_CREATE, &attr).map_err(IterError::MapLink)?;
        Ok(Self { link })
    }

    /// Pins the link at `path`, so it outlives the daemon.
    pub fn pin(&self, path: &Path) -> Result<(), IterError> {
        #[repr(C)]
        struct ObjPin {
            pathname: u64,
            bpf_fd: u32,
            file_flags: u32,
        }
        let pin_error = |source| IterError::Pin {
            path: path.to_path_buf(),
            source,
        };
        let name = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| pin_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let attr = ObjPin {
            pathname: name.as_ptr() as u64,
            bpf_fd: self.link.as_raw_fd() as u32,
            file_flags: 0,
        };
        // SAFETY: as in [`bpf`]; the answer is 0, not an fd.
        let result = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_PIN,
                &attr as *const ObjPin,
                size_of::<ObjPin>() as libc::c_uint,
            )
        };
        if result < 0 {
            return Err(pin_error(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Runs the program over what it iterates (reads the iterator to its end).
    pub fn run(&self) -> Result<IterRun, IterError> {
        let started = Instant::now();
        #[repr(C)]
        struct IterCreate {
            link_fd: u32,
            flags: u32,
        }
        let attr = IterCreate {
            link_fd: self.link.as_raw_fd() as u32,
            flags: 0,
        };
        let fd = bpf(BPF_ITER_CREATE, &attr).map_err(IterError::Create)?;
        let mut file = File::from(fd);
        // Counted as it comes, a buffer at a time: 10,000 job tasks write
        // 80 KB, which a growing Vec would copy over and over.
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut kept = 0;
        let mut job_tasks: IdMap<u64, u64> = IdMap::default();
        loop {
            let read = match file.read(&mut buffer[kept..]) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(IterError::Read(e)),
            };
            let filled = kept + read;
            let whole = filled - filled % 8;
            for id in buffer[..whole].chunks_exact(8) {
                let id =
                    u64::from_ne_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
                *job_tasks.entry(id).or_default() += 1;
            }
            // A record cut by the read: its start moves to the front.
            buffer.copy_within(whole..filled, 0);
            kept = filled - whole;
        }
        Ok(IterRun {
            duration: started.elapsed(),
            job_tasks,
        })
    }
}

/// bpf(2) for a command whose answer is a new fd.
fn bpf<A>(command: libc::c_long, attr: &A) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is the command's #[repr(C)] attribute struct, and its
    // size is passed; the kernel zero-extends the rest of `union bpf_attr`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *const A,
            size_of::<A>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel handed to this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
