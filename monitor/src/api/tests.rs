use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use axum::http::Uri;

use super::{
    paging::{cursor_text, next_page, parse_cursor, place},
    *,
};
use crate::{profile::JobState, snapshot::JobView, store::PageCursor};

fn job(jobid: &str, user: &str, end: Option<u64>) -> JobView {
    JobView {
        jobid: jobid.into(),
        user: user.into(),
        uid: 1000,
        name: String::new(),
        launcher: "monitor".into(),
        labels: BTreeMap::new(),
        cgroup: "/monitor.slice/task-1-1".into(),
        counters: Default::default(),
        files: Default::default(),
        tasks: 0,
        start: SystemTime::UNIX_EPOCH,
        end: end.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        series: Default::default(),
    }
}

#[test]
fn filters_by_user_state_and_time() {
    let running = job("1", "alice", None);
    let old = job("2", "bob", Some(100));
    let recent = job("3", "alice", Some(200));
    let by_user = JobFilter {
        user: Some("alice".into()),
        ..Default::default()
    };
    assert!(by_user.matches(&running) && !by_user.matches(&old) && by_user.matches(&recent));
    let finished = JobFilter {
        state: Some(JobState::Finished),
        ..Default::default()
    };
    assert!(!finished.matches(&running) && finished.matches(&old));
    let since = JobFilter {
        since: Some(150.0),
        ..Default::default()
    };
    assert!(since.matches(&running) && !since.matches(&old) && since.matches(&recent));
}

#[test]
fn merging_keeps_one_entry_per_run_running_first() {
    let running = job("1", "alice", None);
    let in_retention = job("2", "alice", Some(100));
    let stored_too = JobJson::from(&in_retention);
    let older = JobJson::from(&job("3", "bob", Some(50)));
    let all = Page {
        limit: 10,
        after: None,
    };
    let merged = merge(
        [&running, &in_retention].into_iter(),
        vec![stored_too, older],
        &all,
    );
    let ids: Vec<&str> = merged.jobs.iter().map(|j| j.jobid.as_str()).collect();
    assert_eq!(ids, vec!["1", "2", "3"]);
    assert!(merged.next.is_none(), "the page is not full");
    let none = Page {
        limit: 0,
        after: None,
    };
    let limited = merge(
        [&running].into_iter(),
        vec![JobJson::from(&job("3", "bob", Some(50)))],
        &none,
    );
    assert_eq!(limited.jobs.len(), 1, "the limit caps finished jobs only");
}

#[test]
fn serializes_state_and_times() {
    let json = serde_json::to_value(JobJson::from(&job("7", "alice", Some(42)))).unwrap();
    let back: JobJson = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(
        back,
        JobJson::from(&job("7", "alice", Some(42))),
        "a stored profile reads back"
    );
    assert_eq!(json["state"], "finished");
    assert_eq!(json["end_time"], 42.0);
    assert_eq!(json["network"]["rx_bytes"], 0);
}

#[test]
fn pages_of_snapshot_and_store_follow_each_other() {
    let running = job("r", "alice", None);
    let in_memory = job("m", "alice", Some(300));
    let stored: Vec<JobJson> = [100, 200, 300]
        .iter()
        .map(|&end| JobJson::from(&job(&format!("s{end}"), "bob", Some(end))))
        .collect();
    let first = merge(
        [&running, &in_memory].into_iter(),
        stored.clone(),
        &Page {
            limit: 2,
            after: None,
        },
    );
    let ids: Vec<&str> = first.jobs.iter().map(|j| j.jobid.as_str()).collect();
    // Same end time: "s300" before "m" (job id descending).
    assert_eq!(ids, ["r", "s300", "m"]);
    let next = first.next.expect("a full page has a next one");
    let text = cursor_text(&next);
    assert_eq!(parse_cursor(&text), Some(next.clone()));
    // The store's answer after the cursor: what it would send.
    let rest: Vec<JobJson> = stored
        .into_iter()
        .filter(|j| {
            let p = place(j);
            next.precedes(p.end_time, p.uid, &p.jobid, p.start_time)
        })
        .collect();
    let second = merge(
        [&running, &in_memory].into_iter(),
        rest,
        &Page {
            limit: 2,
            after: Some(next),
        },
    );
    let ids: Vec<&str> = second.jobs.iter().map(|j| j.jobid.as_str()).collect();
    assert_eq!(ids, ["s200", "s100"], "running jobs only on the first page");
}

#[test]
fn a_cursor_reads_back_exactly_and_nonsense_is_refused() {
    let cursor = PageCursor {
        end_time: 1_795_000_000.123_456_7,
        uid: 1000,
        jobid: "a:b/c".into(),
        start_time: 0.1,
    };
    assert_eq!(parse_cursor(&cursor_text(&cursor)), Some(cursor));
    assert_eq!(parse_cursor("1:2:3"), None);
    assert_eq!(parse_cursor("NaN:2:3:x"), None);
    assert_eq!(parse_cursor("1:-2:3:x"), None);
    let uri: Uri = "/api/v1/jobs?user=alice&before=1%3A2&limit=5"
        .parse()
        .unwrap();
    let next = PageCursor {
        end_time: 2.5,
        uid: 7,
        jobid: "j 1".into(),
        start_time: 1.0,
    };
    assert_eq!(
        next_page(&uri, &next),
        "/api/v1/jobs?user=alice&limit=5&before=2.5%3A7%3A1%3Aj%201"
    );
}
