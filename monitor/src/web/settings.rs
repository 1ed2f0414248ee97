//! What `--web.config.file` says, in force: loaded at start (a bad file
//! stops the start), then reread when it or a file it names changes
//! (checked at new connections, at most once a second, as exporter-toolkit
//! rereads it per connection) or on SIGHUP. A bad reread keeps the last
//! good settings and says why, once per change.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::{HeaderName, HeaderValue};

use super::{
    basic_auth::BasicAuth,
    config::{ConfigError, WebConfigFile, response_headers},
    tls,
};

/// How often a new connection may look at the files' identities.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// One consistent set: a connection keeps the set it was accepted with.
pub struct WebSettings {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Arc<BasicAuth>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebSettings {
    /// No file: plain HTTP, no authentication.
    pub(super) fn open() -> Self {
        Self {
            tls: None,
            auth: Arc::new(BasicAuth::none()),
            headers: Vec::new(),
        }
    }

    fn load(path: &Path, file: &WebConfigFile) -> Result<Self, ConfigError> {
        if file.http_server_config.as_ref().and_then(|http| http.http2) == Some(true) {
            log::info!(
                "{}: http_server_config.http2: this daemon serves HTTP/1.1 only (Prometheus scrapes over it)",
                path.display()
            );
        }
        Ok(Self {
            tls: file
                .tls()
                .map(|tls| tls::server_config(path, tls))
                .transpose()?,
            auth: Arc::new(BasicAuth::new(path, file.basic_auth_users.as_ref())?),
            headers: response_headers(path, file)?,
        })
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        };
        let auth = if self.auth.is_on() {
            ", basic auth"
        } else {
            ", no authentication"
        };
        format!("{scheme}{auth}")
    }
}

/// Device, inode, size and modification time of each watched file (None
/// for one that cannot be read): any difference is a change.
type Stamp = Vec<Option<(u64, u64, u64, i64, i64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|file| {
            std::fs::metadata(file)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

pub struct WebConfigSource {
    path: Option<PathBuf>,
    state: Mutex<SourceState>,
}

struct SourceState {
    current: Arc<WebSettings>,
    /// The configuration file, then every file the last read of it named.
    watched: Vec<PathBuf>,
    /// What the watched files looked like at the last read, good or bad.
    seen: Stamp,
    checked: Instant,
}

impl WebConfigSource {
    /// Reads the file, if any: an error names the file and the key.
    pub fn open(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (current, watched) = match path {
            None => (WebSettings::open(), Vec::new()),
            Some(path) => {
                let file = WebConfigFile::read(path)?;
                let settings = WebSettings::load(path, &file)?;
                (settings, watched(path, Some(&file)))
            }
        };
        Ok(Self {
            path: path.map(Path::to_owned),
            state: Mutex::new(SourceState {
                current: Arc::new(current),
                seen: stamp(&watched),
                watched,
                checked: Instant::now(),
            }),
        })
    }

    /// The settings for a new connection, reread first when a file changed.
    pub fn current(&self) -> Arc<WebSettings> {
        // Nothing panics while holding the lock; if it did, the state is whole.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.path.is_some() && state.checked.elapsed() >= RECHECK_EVERY {
            state.checked = Instant::now();
            if stamp(&state.watched) != state.seen {
                self.reread(&mut state);
            }
        }
        state.current.clone()
    }

    /// SIGHUP: reread now, changed or not.
    pub fn reload(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.reread(&mut state);
    }

    fn reread(&self, state: &mut SourceState) {
        let Some(path) = &self.path else { return };
        let file = WebConfigFile::read(path);
        state.watched = watched(path, file.as_ref().ok());
        state.seen = stamp(&state.watched);
        match file.and_then(|file| WebSettings::load(path, &file)) {
            Ok(settings) => {
                log::info!("{}: reread; now {}", path.display(), settings.describe());
                state.current = Arc::new(settings);
            }
            Err(e) => log::error!("{e}; the last good web configuration stays in force"),
        }
    }
}

fn watched(path: &Path, file: Option<&WebConfigFile>) -> Vec<PathBuf> {
    let mut watched = vec![path.to_owned()];
    watched.extend(file.map(WebConfigFile::files).unwrap_or_default());
    watched
}
