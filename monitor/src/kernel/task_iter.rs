//! Running the task iterator program: every sample, the daemon creates an
//! iterator from the program's link and reads it to the end, which runs
//! the program over every task of the node (it credits job tasks in the
//! kernel and writes each live job task's cgroup id). aya 0.14 turns a link into one iterator
//! only; these are the two bpf(2) commands to do it again and again.
use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use aya::programs::links::FdLink;
use thiserror::Error;

const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_ITER_CREATE: libc::c_long = 33;

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
    #[error("creating a task iterator (BPF_ITER_CREATE): {0}")]
    Create(#[source] io::Error),
    #[error("running the task iterator: {0}")]
    Read(#[source] io::Error),
}

/// A task iterator link the daemon can run.
pub struct TaskIterator {
    link: OwnedFd,
}

/// What one run of the iterator saw.
#[derive(Debug, Clone, Default)]
pub struct IterRun {
    pub duration: Duration,
    /// Live tasks per job cgroup id (the program writes the cgroup id of
    /// every live job task it visits).
    pub job_tasks: HashMap<u64, u64>,
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

    /// Runs the program over every task (reads the iterator to its end).
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
        let mut output = Vec::new();
        loop {
            match file.read_to_end(&mut output) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(IterError::Read(e)),
            }
        }
        let mut job_tasks: HashMap<u64, u64> = HashMap::new();
        for id in output.chunks_exact(8) {
            let id = u64::from_ne_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
            *job_tasks.entry(id).or_default() += 1;
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
