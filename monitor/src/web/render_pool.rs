//! Where scrapes are rendered: two threads of their own at nice 10, not the
//! blocking pool. Encoding 10,000 finished jobs takes a core for a good
//! fraction of a second; at the default priority two scrapes on a two-core
//! node held both cores, and registrations (settled on the blocking pool)
//! waited behind them for hundreds of milliseconds. At nice 10 a scrape
//! yields to registrations and to the node's jobs, and at most two render
//! at once (the others wait their turn), which also bounds the memory the
//! scrapes' text takes.
use std::{
    sync::{Arc, Mutex, OnceLock, mpsc},
    thread,
};

use thiserror::Error;

/// Render threads: two scrapes at once, as Prometheus servers in HA pairs do.
const THREADS: usize = 2;
/// Scrapes waiting for a thread at most (the web port takes 64 connections).
const QUEUE: usize = 64;

type Work = Box<dyn FnOnce() + Send>;

#[derive(Debug, Error)]
pub enum RenderError {
    #[error("every render thread is busy and {QUEUE} scrapes wait")]
    Busy,
    #[error("the render thread failed")]
    Failed,
}

struct RenderPool {
    work: mpsc::SyncSender<Work>,
}

/// Runs `render` on a render thread and returns what it returned.
pub async fn render<T: Send + 'static>(
    render: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RenderError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let work: Work = Box::new(move || {
        // The scrape may have gone meanwhile: nothing to tell then.
        let _ = answer.send(render());
    });
    pool().work.try_send(work).map_err(|_| RenderError::Busy)?;
    answered.await.map_err(|_| RenderError::Failed)
}

fn pool() -> &'static RenderPool {
    static POOL: OnceLock<RenderPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (work, queue) = mpsc::sync_channel::<Work>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..THREADS {
            let queue = queue.clone();
            let spawned = thread::Builder::new()
                .name(format!("render-{i}"))
                .spawn(move || serve(&queue));
            if let Err(e) = spawned {
                log::error!("starting render thread {i}: {e}");
            }
        }
        RenderPool { work }
    })
}

fn serve(queue: &Mutex<mpsc::Receiver<Work>>) {
    crate::system::priority::lower_this_thread("a render thread");
    loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(work) = next else {
            return;
        };
        // A panic in one scrape's rendering drops its answer (a 500) and
        // leaves the thread serving the next.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    }
}
