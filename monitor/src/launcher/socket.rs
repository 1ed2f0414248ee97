//! Binding the launcher socket: parent directory made, a stale socket
//! replaced (never a live one), connectable by every user.
use std::{
    fs, io,
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("the socket's directory: {0}")]
    Dir(#[from] crate::system::secure_dir::SecureDirError),
    #[error("{0} is in use by a running daemon (another `monitor daemon`?)")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("binding {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds `path` for the async runtime. Must be called inside it.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    // Traversable by every user (they connect), changed by root alone.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::system::secure_dir::ensure(parent, 0o755)?;
    }
    remove_stale(path)?;
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    // Every user may connect: each connection is judged on its own identity.
    fs::set_permissions(path, fs::Permissions::from_mode(0o666)).map_err(|source| {
        SocketError::Bind {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

fn remove_stale(path: &Path) -> Result<(), SocketError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(metadata) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(SocketError::InUse(path.to_path_buf()));
    }
    log::info!("replacing stale socket {}", path.display());
    fs::remove_file(path).map_err(|source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    })
}
