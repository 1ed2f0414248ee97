use std::{
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

use rusqlite::Connection;

use super::*;
use crate::store::{
    DB_FILE, Profile, ProfileQuery, StoreReader, test_dir::TestDir, tests::profile,
};

fn batch(jobids: &[&str], release: &[u64]) -> Batch {
    Batch {
        profiles: jobids
            .iter()
            .map(|jobid| profile(1000, jobid, "alice", 0.0, 100.0))
            .collect(),
        registry: Some(format!("{jobids:?}")),
        release: release.to_vec(),
    }
}

/// Polls `released` until it has returned `want` ids in all, or fails.
fn wait_released(handle: &StoreHandle, want: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < want {
        assert!(Instant::now() < deadline, "released only {got:?}");
        got.extend(handle.released());
        thread::sleep(Duration::from_millis(5));
    }
    got
}

/// A second connection holding the write lock, so the writer's commits
/// wait (up to the busy timeout) until it is dropped.
fn lock_writes(dir: &TestDir) -> Connection {
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[test]
fn release_ids_come_back_only_once_the_batch_is_committed() {
    let dir = TestDir::new("writer-release");
    let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
    let reader = StoreReader::open(dir.path()).unwrap();

    let lock = lock_writes(&dir);
    handle.send(batch(&["1", "2"], &[7, 8])).unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(handle.released().is_empty());
    assert_eq!(reader.count().unwrap(), 0);
    drop(lock);

    assert_eq!(wait_released(&handle, 2), [7, 8]);
    // Released means committed: visible to any connection.
    assert_eq!(reader.count().unwrap(), 2);
    assert_eq!(reader.registry().unwrap().as_deref(), Some(r#"["1", "2"]"#));
    let stats = handle.stats();
    assert_eq!(stats.profiles_written(), 2);
    assert_eq!(stats.commit_errors(), 0);
    assert_eq!(stats.profiles_pending(), 0);
    assert!(stats.last_commit_duration() > Duration::ZERO);
    assert!(handle.shutdown().unwrap().is_empty());
}

#[test]
fn batches_queued_during_a_commit_share_the_next_one() {
    let dir = TestDir::new("writer-coalesce");
    let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
    let lock = lock_writes(&dir);
    handle.send(batch(&["0"], &[0])).unwrap();
    thread::sleep(Duration::from_millis(100)); // the writer waits for the lock
    for i in 1..10u64 {
        handle.send(batch(&[&i.to_string()], &[i])).unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    drop(lock);

    let mut released = wait_released(&handle, 10);
    released.sort_unstable();
    assert_eq!(released, (0..10).collect::<Vec<_>>());
    let stats = handle.stats();
    assert!(stats.commits() <= 2, "{} commits", stats.commits());
    assert_eq!(stats.profiles_written(), 10);
    handle.shutdown().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.count().unwrap(), 10);
    // The registry of the last batch won.
    assert_eq!(store.registry().unwrap().as_deref(), Some(r#"["9"]"#));
}

#[test]
fn closing_writes_everything_queued() {
    let dir = TestDir::new("writer-flush");
    let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
    for i in 0..50u64 {
        handle.send(batch(&[&i.to_string()], &[i])).unwrap();
    }
    let mut released = handle.shutdown().unwrap();
    released.sort_unstable();
    assert_eq!(released, (0..50).collect::<Vec<_>>());
    assert_eq!(Store::open(dir.path()).unwrap().count().unwrap(), 50);

    // Dropping the handle waits too.
    let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
    handle.send(batch(&["50"], &[])).unwrap();
    drop(handle);
    assert_eq!(Store::open(dir.path()).unwrap().count().unwrap(), 51);
}

/// Makes every insert fail until the returned connection drops the trigger.
fn fail_inserts(dir: &TestDir) -> Connection {
    let side = Connection::open(dir.path().join(DB_FILE)).unwrap();
    side.execute_batch(
        "CREATE TRIGGER fail BEFORE INSERT ON profiles
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    side
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_failed_commit_keeps_its_profiles_retries_and_frees_the_slots_at_once() {
    let dir = TestDir::new("writer-retry");
    let store = Store::open(dir.path()).unwrap();
    let side = fail_inserts(&dir);
    let handle = spawn(store, WriterConfig::default()).unwrap();
    let stats = handle.stats();
    handle.send(batch(&["1"], &[1])).unwrap();
    wait_until("the commit did not fail", || stats.commit_errors() > 0);
    // The slots are not held while the store cannot write.
    assert_eq!(wait_released(&handle, 1), [1]);
    // Waits for the retry; its slots do not.
    handle.send(batch(&["2"], &[2])).unwrap();
    assert_eq!(wait_released(&handle, 1), [2]);
    wait_until("the second batch is not held", || {
        stats.profiles_pending() == 2
    });

    side.execute_batch("DROP TRIGGER fail").unwrap();
    wait_until("not written after the retry", || {
        stats.profiles_written() == 2
    });
    assert_eq!(stats.commits(), 1, "both batches in the retried commit");
    assert_eq!(stats.profiles_pending(), 0);
    assert_eq!(stats.dropped_unavailable(), 0);
    handle.shutdown().unwrap();
}

#[test]
fn while_commits_fail_at_most_max_pending_profiles_are_held_the_oldest_dropped() {
    let dir = TestDir::new("writer-bound");
    let store = Store::open(dir.path()).unwrap();
    let side = fail_inserts(&dir);
    let config = WriterConfig {
        max_pending: 3,
        ..WriterConfig::default()
    };
    let handle = spawn(store, config).unwrap();
    let stats = handle.stats();
    handle.send(batch(&["1", "2"], &[1])).unwrap();
    wait_until("the commit did not fail", || stats.commit_errors() > 0);
    for i in 3..=6u64 {
        handle.send(batch(&[&i.to_string()], &[i])).unwrap();
    }
    wait_until("not all dropped", || stats.dropped_unavailable() == 3);
    assert_eq!(stats.profiles_pending(), 3);

    side.execute_batch("DROP TRIGGER fail").unwrap();
    wait_until("not written again", || stats.profiles_written() == 3);
    handle.shutdown().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let kept: Vec<String> = store.profiles(&ProfileQuery::default()).unwrap();
    assert_eq!(kept.len(), 3);
    for (json, jobid) in kept.iter().zip(["6", "5", "4"]) {
        assert!(json.contains(&format!(r#""jobid":"{jobid}""#)), "{json}");
    }
    // The registry is never dropped: the latest one is stored.
    assert_eq!(store.registry().unwrap().as_deref(), Some(r#"["6"]"#));
}

#[test]
fn past_max_profiles_the_largest_users_oldest_go_first() {
    let dir = TestDir::new("writer-max");
    let handle = spawn(
        Store::open(dir.path()).unwrap(),
        WriterConfig {
            max_profiles: Some(20),
            ..WriterConfig::default()
        },
    )
    .unwrap();
    let stats = handle.stats();
    // Another user's five jobs, then one user's flood of 30.
    let others: Vec<Profile> = (0..5)
        .map(|i| profile(1001, &format!("b{i}"), "bob", 0.0, f64::from(i)))
        .collect();
    handle
        .send(Batch {
            profiles: others.clone(),
            ..Batch::default()
        })
        .unwrap();
    for i in 0..30 {
        let end = 100.0 + f64::from(i);
        handle
            .send(Batch {
                profiles: vec![profile(1000, &format!("a{i}"), "alice", 0.0, end)],
                ..Batch::default()
            })
            .unwrap();
    }
    handle.shutdown().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stored = store.count().unwrap();
    assert!(stored <= 20, "{stored} profiles kept");
    assert!(stats.pruned_max_profiles() >= 15);
    assert_eq!(stats.profiles_stored(), stored);
    let bob = ProfileQuery {
        uid: Some(1001),
        ..ProfileQuery::default()
    };
    assert_eq!(store.profiles(&bob).unwrap().len(), 5, "bob's jobs kept");
    let alice = store
        .profiles(&ProfileQuery {
            uid: Some(1000),
            ..ProfileQuery::default()
        })
        .unwrap();
    assert!(alice[0].contains(r#""jobid":"a29""#), "{alice:?}");
}

#[test]
fn closing_reports_profiles_it_could_not_write() {
    let dir = TestDir::new("writer-unflushed");
    let store = Store::open(dir.path()).unwrap();
    let side = Connection::open(dir.path().join(DB_FILE)).unwrap();
    side.execute_batch(
        "CREATE TRIGGER fail BEFORE INSERT ON profiles
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    let handle = spawn(store, WriterConfig::default()).unwrap();
    handle.send(batch(&["1", "2"], &[1])).unwrap();
    let error = handle.shutdown().unwrap_err();
    assert!(
        matches!(error, StoreError::Unflushed { profiles: 2, .. }),
        "{error}"
    );
    assert!(error.to_string().contains(DB_FILE), "{error}");
}

#[test]
fn an_invalid_batch_is_refused_at_send() {
    let dir = TestDir::new("writer-invalid");
    let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
    let mut bad = batch(&["1"], &[1]);
    bad.profiles[0].end_time = f64::INFINITY;
    assert!(matches!(
        handle.send(bad),
        Err(StoreError::InvalidProfile { .. })
    ));
    handle.send(batch(&["2"], &[2])).unwrap();
    assert_eq!(handle.shutdown().unwrap(), [2]);
}

#[test]
fn retention_prunes_old_profiles_at_start() {
    let dir = TestDir::new("writer-prune");
    let mut store = Store::open(dir.path()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let recent = profile(1000, "2", "alice", now - 100.0, now - 10.0);
    store
        .commit(&Batch {
            profiles: vec![
                profile(1000, "1", "alice", 0.0, now - 7200.0),
                recent.clone(),
            ],
            ..Batch::default()
        })
        .unwrap();
    let config = WriterConfig {
        retention: Some(Duration::from_secs(3600)),
        ..WriterConfig::default()
    };
    let handle = spawn(store, config).unwrap();
    let stats = handle.stats();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.pruned_retention() == 0 {
        assert!(Instant::now() < deadline, "nothing pruned");
        thread::sleep(Duration::from_millis(5));
    }
    handle.shutdown().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.profiles(&ProfileQuery::default()).unwrap(),
        [recent.json]
    );
    assert_eq!(stats.pruned_retention(), 1);
    assert_eq!(stats.profiles_stored(), 1);
}
