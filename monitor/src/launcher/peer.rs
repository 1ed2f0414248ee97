//! Who is on the other end of a launcher connection, from the kernel only.
//!
//! SO_PEERPIDFD pins the process that connected. Its pid (from the pidfd's
//! fdinfo) opens `/proc/PID`; as long as the pidfd says the process is
//! alive, that pid cannot have been reused, so the `/proc` directory (and
//! the executable read through it) is the peer's.
use std::{
    ffi::OsString,
    fs, io,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStringExt,
    },
    path::PathBuf,
};

use nix::{
    errno::Errno,
    fcntl::{AtFlags, OFlag, openat, readlinkat},
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        socket::{getsockopt, sockopt},
        stat::{Mode, fstatat},
    },
};
use thiserror::Error;

pub use super::trust::FileIdentity;

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("the peer exited before it could be identified")]
    Gone,
    #[error("reading the peer's credentials: {0}")]
    Credentials(#[source] Errno),
    #[error("reading /proc of pid {pid}: {source}")]
    Proc {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// What `/proc/PID/exe` says (symlinks resolved by the kernel at exec),
    /// as seen in the peer's own mount namespace: for logs and names only.
    pub exe: PathBuf,
    /// The device and inode of the file the peer runs: what trust is
    /// decided on (a path can be made to name another file in a private
    /// mount namespace; the file cannot be made another file).
    pub exe_file: Option<FileIdentity>,
    proc_dir: OwnedFd,
    pidfd: OwnedFd,
}

impl Peer {
    pub fn identify(socket: BorrowedFd<'_>) -> Result<Peer, PeerError> {
        let credentials =
            getsockopt(&socket, sockopt::PeerCredentials).map_err(PeerError::Credentials)?;
        let pidfd = match getsockopt(&socket, sockopt::PeerPidfd) {
            Ok(pidfd) => pidfd,
            // Kernels before 6.5 have no such option: open one now (the
            // peer could have exited and its pid been reused in between;
            // nothing better exists there).
            Err(Errno::ENOPROTOOPT) => pidfd_open(credentials.pid())?,
            // 6.5 and later answer EINVAL when the peer is reaped already:
            // its pid may be another process's by now, never to be opened.
            Err(Errno::EINVAL | Errno::ESRCH) => return Err(PeerError::Gone),
            Err(e) => return Err(PeerError::Credentials(e)),
        };
        let pid = pid_of(&pidfd)?;
        let proc_dir = match openat(
            nix::fcntl::AT_FDCWD,
            format!("/proc/{pid}").as_str(),
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ESRCH) => return Err(PeerError::Gone),
            Err(e) => {
                return Err(PeerError::Proc {
                    pid,
                    source: e.into(),
                });
            }
        };
        let peer = Peer {
            pid,
            uid: credentials.uid(),
            gid: credentials.gid(),
            exe: PathBuf::new(),
            exe_file: None,
            proc_dir,
            pidfd,
        };
        if !peer.alive() {
            return Err(PeerError::Gone);
        }
        let exe = peer.read_link("exe")?;
        // stat follows the magic link to the very file the exec opened.
        let exe_file = match fstatat(&peer.proc_dir, "exe", AtFlags::empty()) {
            Ok(stat) => Some(FileIdentity::of(&stat)),
            // The link goes with the peer's memory, early in its exit and
            // before its pidfd says so: gone, not untrusted.
            Err(Errno::ENOENT | Errno::ESRCH) => return Err(PeerError::Gone),
            Err(_) => None,
        };
        if !peer.alive() {
            return Err(PeerError::Gone);
        }
        Ok(Peer {
            exe,
            exe_file,
            ..peer
        })
    }

    /// Resolves when the peer exits (its pidfd turns readable); never, if
    /// the pidfd cannot be watched. Only the pidfd is kept meanwhile.
    pub async fn exit(self) {
        let Peer { pidfd, .. } = self;
        // SAFETY: an OwnedFd stays open, and is the same descriptor, for as
        // long as the AsyncFd that owns it.
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        match watched {
            Ok(watched) => {
                let _ = watched.readable().await;
            }
            Err(e) => {
                log::debug!("cannot watch a launcher's pidfd: {e}");
                std::future::pending::<()>().await;
            }
        }
    }

    /// The pidfd pinning the peer.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Is the peer still running (the pidfd is readable once it exits)?
    pub fn alive(&self) -> bool {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// The peer's cgroup v2 path (the `0::` line of /proc/PID/cgroup).
    pub fn cgroup(&self) -> Result<String, PeerError> {
        let text = self.read("cgroup")?;
        text.lines()
            .find_map(|line| line.strip_prefix("0::"))
            .map(str::to_string)
            .ok_or_else(|| PeerError::Proc {
                pid: self.pid,
                source: io::Error::other("no cgroup v2 line in /proc/PID/cgroup"),
            })
    }

    /// The path of its cgroup in the v1 hierarchy of `controller`, if that
    /// is mounted (a `N:controller[,...]:/path` line of /proc/PID/cgroup).
    pub fn v1_cgroup(&self, controller: &str) -> Result<Option<String>, PeerError> {
        let text = self.read("cgroup")?;
        Ok(text.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        }))
    }

    /// The basename of the executable, for job names and the launcher label.
    pub fn exe_name(&self) -> String {
        self.exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into())
    }

    fn read(&self, name: &str) -> Result<String, PeerError> {
        let fd = openat(
            &self.proc_dir,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.proc_error(e))?;
        let text = io::read_to_string(fs::File::from(fd)).map_err(|source| {
            match source.raw_os_error() {
                // The process exited between open and read.
                Some(libc::ESRCH) => PeerError::Gone,
                _ => PeerError::Proc {
                    pid: self.pid,
                    source,
                },
            }
        })?;
        // Read through the pinned directory: still ours if the peer lives.
        if self.alive() {
            Ok(text)
        } else {
            Err(PeerError::Gone)
        }
    }

    fn read_link(&self, name: &str) -> Result<PathBuf, PeerError> {
        let target: OsString = readlinkat(&self.proc_dir, name).map_err(|e| self.proc_error(e))?;
        Ok(PathBuf::from(OsString::from_vec(target.into_vec())))
    }

    fn proc_error(&self, e: Errno) -> PeerError {
        match e {
            Errno::ENOENT | Errno::ESRCH => PeerError::Gone,
            e => PeerError::Proc {
                pid: self.pid,
                source: e.into(),
            },
        }
    }
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, PeerError> {
    super::pidfd::open(pid).map_err(|e| match e {
        Errno::ESRCH => PeerError::Gone,
        e => PeerError::Credentials(e),
    })
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (`Pid: -1` once it exited).
fn pid_of(pidfd: &OwnedFd) -> Result<i32, PeerError> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let text = fs::read_to_string(&path).map_err(|source| PeerError::Proc { pid: 0, source })?;
    let pid = text
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(-1);
    if pid > 0 {
        Ok(pid)
    } else {
        Err(PeerError::Gone)
    }
}
