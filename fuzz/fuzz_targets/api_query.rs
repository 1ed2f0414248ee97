//! The job API's query string (`GET /api/v1/jobs?...`): parsed by the
//! handler's own extractor, its page checked (size, `before=` cursor) with
//! the default page sizes, then run as the store query it becomes, for
//! every user and for one uid (`--api.private`), against a small store.
#![no_main]
use std::{path::PathBuf, sync::OnceLock};

use axum::{extract::Query, http::Uri};
use libfuzzer_sys::fuzz_target;
use monitor::{
    api::{JobFilter, PageQuery, PageSizes},
    profile::parse_stored,
    store::{Profile, Store, StoreReader},
};

/// This process's scratch store directory, removed at exit.
fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("monitor-fuzz-api-{}", std::process::id()))
}

extern "C" fn remove_scratch_dir() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

unsafe extern "C" {
    #[link_name = "atexit"]
    fn libc_atexit(f: extern "C" fn()) -> i32;
}

/// Three stored profiles, as the store writer keeps them, read through the
/// API's own read-only connection.
fn store() -> &'static StoreReader {
    static STORE: OnceLock<StoreReader> = OnceLock::new();
    STORE.get_or_init(|| {
        // SAFETY: registers a plain function; atexit has no other precondition.
        unsafe { libc_atexit(remove_scratch_dir) };
        let mut store = Store::open(&scratch_dir()).expect("opening a scratch store");
        let profile = |uid: u32, jobid: &str, user: &str, end: f64| Profile {
            jobid: jobid.into(),
            uid,
            user: user.into(),
            start_time: end - 10.0,
            end_time: end,
            json: format!(
                r#"{{"jobid":"{jobid}","user":"{user}","uid":{uid},"name":"","launcher":"monitor","labels":{{}},"cgroup":"/monitor.slice/task-1-1","state":"finished","start_time":{start},"end_time":{end},"tasks":0,"cpu_seconds":1.5,"runqueue_wait_seconds":0.0,"context_switches":{{"voluntary":1,"involuntary":2}},"processes_started":1,"threads_started":0,"execs":1,"processes_exited":1,"memory_rss_bytes":0,"memory_rss_peak_bytes":4096,"page_faults":3,"oom_kills":0,"io_read_bytes":0,"io_write_bytes":0,"block_read_bytes":0,"block_write_bytes":0,"network":{{"rx_bytes":0,"tx_bytes":0,"rx_packets":0,"tx_packets":0}}}}"#,
                start = end - 10.0
            ),
        };
        let profiles = [
            profile(1000, "1", "alice", 100.0),
            profile(1001, "2", "bob", 200.0),
            profile(1000, "3", "alice", 300.0),
        ];
        store
            .commit_profiles(&profiles, None)
            .expect("storing the fixture");
        StoreReader::open(&scratch_dir()).expect("opening the scratch store to read")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut uri = b"/api/v1/jobs?".to_vec();
    uri.extend_from_slice(data);
    let Ok(uri) = Uri::try_from(uri) else {
        return;
    };
    let Ok(Query(filter)) = Query::<JobFilter>::try_from_uri(&uri) else {
        return;
    };
    // --api.page-size and --api.max-page-size by default.
    let pages = PageSizes::new(500, 1000).expect("the default page sizes");
    let asked = PageQuery {
        limit: filter.limit,
        before: filter.before.clone(),
    };
    let Ok(page) = pages.page(&asked) else {
        return;
    };
    for only in [None, Some(1000)] {
        // Whatever is given a page must be a query the store answers (else a 500).
        let texts = store()
            .profiles(&filter.profile_query(&page, only))
            .expect("a checked filter makes a valid store query");
        assert!(texts.len() <= filter.limit.unwrap_or(500));
        assert_eq!(parse_stored(&texts).len(), texts.len());
    }
});
