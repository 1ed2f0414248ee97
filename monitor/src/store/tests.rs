use std::{
    fs::{self, Permissions},
    os::unix::fs::PermissionsExt as _,
    path::Path,
};

use rusqlite::Connection;
use test_dir::TestDir;

use super::*;

pub fn profile(uid: u32, jobid: &str, user: &str, start: f64, end: f64) -> Profile {
    Profile {
        jobid: jobid.to_string(),
        uid,
        user: user.to_string(),
        start_time: start,
        end_time: end,
        json: format!(r#"{{"jobid":"{jobid}","uid":{uid},"end":{end}}}"#),
    }
}

fn batch(profiles: Vec<Profile>) -> Batch {
    Batch {
        profiles,
        ..Batch::default()
    }
}

fn query() -> ProfileQuery {
    ProfileQuery::default()
}

#[test]
fn a_store_an_older_daemon_left_readable_is_made_private() {
    let dir = TestDir::new("private");
    fs::create_dir_all(dir.path()).unwrap();
    fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
    drop(Store::open(dir.path()).unwrap());
    fs::set_permissions(dir.path().join(DB_FILE), Permissions::from_mode(0o644)).unwrap();
    drop(Store::open(dir.path()).unwrap());
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&dir.path().join(DB_FILE)), 0o600);
}

#[test]
fn creates_the_directory_and_round_trips_profiles_and_registry() {
    let dir = TestDir::new("round-trip");
    let nested = dir.path().join("state/dir");
    let mut store = Store::open(&nested).unwrap();
    // Every user's jobs are in it: the daemon's alone.
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&nested), 0o700, "{:o}", mode(&nested));
    assert_eq!(mode(&nested.join(DB_FILE)), 0o600);
    assert_eq!(store.path(), nested.join(DB_FILE));
    assert_eq!(store.count().unwrap(), 0);
    assert_eq!(store.registry().unwrap(), None);

    let a = profile(1000, "1", "alice", 10.0, 20.0);
    let b = profile(1001, "2", "bob", 11.0, 30.0);
    let inserted = store
        .commit(&Batch {
            profiles: vec![a.clone(), b.clone()],
            registry: Some(r#"{"jobs":[]}"#.into()),
            release: vec![1, 2],
        })
        .unwrap();
    assert_eq!(inserted, 2);
    assert_eq!(store.count().unwrap(), 2);
    assert_eq!(
        store.profiles(&query()).unwrap(),
        [b.json.as_str(), a.json.as_str()]
    );
    assert_eq!(store.registry().unwrap().as_deref(), Some(r#"{"jobs":[]}"#));

    // None leaves the registry alone; Some replaces it.
    store.commit(&batch(vec![])).unwrap();
    assert_eq!(store.registry().unwrap().as_deref(), Some(r#"{"jobs":[]}"#));
    store
        .commit(&Batch {
            registry: Some(r#"{"jobs":[1]}"#.into()),
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(
        store.registry().unwrap().as_deref(),
        Some(r#"{"jobs":[1]}"#)
    );
}

#[test]
fn inserting_the_same_profile_again_is_a_no_op() {
    let dir = TestDir::new("duplicate");
    let mut store = Store::open(dir.path()).unwrap();
    let a = profile(1000, "1", "alice", 10.0, 20.0);
    assert_eq!(store.commit(&batch(vec![a.clone()])).unwrap(), 1);
    let mut again = a.clone();
    again.json = "{}".into();
    assert_eq!(store.commit(&batch(vec![a.clone(), again])).unwrap(), 0);
    assert_eq!(store.profiles(&query()).unwrap(), [a.json.as_str()]);
    // Same job id, another run (start time) or owner: distinct profiles.
    let rerun = profile(1000, "1", "alice", 15.0, 25.0);
    let other_owner = profile(1001, "1", "bob", 10.0, 20.0);
    assert_eq!(store.commit(&batch(vec![rerun, other_owner])).unwrap(), 2);
    assert_eq!(store.count().unwrap(), 3);
}

#[test]
fn queries_filter_and_list_most_recent_first() {
    let dir = TestDir::new("queries");
    let mut store = Store::open(dir.path()).unwrap();
    let profiles = [
        profile(1000, "1", "alice", 0.0, 100.0),
        profile(1001, "2", "bob", 0.0, 200.0),
        profile(1000, "3", "alice", 0.0, 300.0),
        profile(1000, "1", "alice", 350.0, 400.0), // job id 1 reused
        profile(1001, "5", "bob", 0.0, 500.0),
    ];
    // Inserted out of order: the order comes from end_time.
    store
        .commit(&batch(vec![
            profiles[2].clone(),
            profiles[0].clone(),
            profiles[4].clone(),
            profiles[1].clone(),
            profiles[3].clone(),
        ]))
        .unwrap();
    let json = |indexes: &[usize]| -> Vec<String> {
        indexes.iter().map(|&i| profiles[i].json.clone()).collect()
    };

    assert_eq!(store.profiles(&query()).unwrap(), json(&[4, 3, 2, 1, 0]));
    let by_user = ProfileQuery {
        user: Some("alice".into()),
        ..query()
    };
    assert_eq!(store.profiles(&by_user).unwrap(), json(&[3, 2, 0]));
    let by_uid = ProfileQuery {
        uid: Some(1001),
        ..query()
    };
    assert_eq!(store.profiles(&by_uid).unwrap(), json(&[4, 1]));
    let by_jobid = ProfileQuery {
        jobid: Some("1".into()),
        ..query()
    };
    assert_eq!(store.profiles(&by_jobid).unwrap(), json(&[3, 0]));
    let since = ProfileQuery {
        since: Some(300.0),
        ..query()
    };
    assert_eq!(store.profiles(&since).unwrap(), json(&[4, 3, 2]));
    let limit = ProfileQuery {
        limit: Some(2),
        ..query()
    };
    assert_eq!(store.profiles(&limit).unwrap(), json(&[4, 3]));
    let all = ProfileQuery {
        user: Some("alice".into()),
        jobid: Some("1".into()),
        since: Some(50.0),
        limit: Some(1),
        uid: None,
        after: None,
    };
    assert_eq!(store.profiles(&all).unwrap(), json(&[3]));
    let none = ProfileQuery {
        user: Some("carol".into()),
        ..query()
    };
    assert!(store.profiles(&none).unwrap().is_empty());
    let huge = ProfileQuery {
        limit: Some(usize::MAX),
        ..query()
    };
    assert_eq!(store.profiles(&huge).unwrap().len(), 5);
}

#[test]
fn reopening_keeps_everything() {
    let dir = TestDir::new("reopen");
    let a = profile(1000, "1", "alice", 10.0, 20.0);
    {
        let mut store = Store::open(dir.path()).unwrap();
        store
            .commit(&Batch {
                profiles: vec![a.clone()],
                registry: Some("[1]".into()),
                release: vec![],
            })
            .unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.profiles(&query()).unwrap(), [a.json.as_str()]);
    assert_eq!(store.registry().unwrap().as_deref(), Some("[1]"));
    // Still unique after the reopen.
    assert_eq!(store.commit(&batch(vec![a])).unwrap(), 0);
}

#[test]
fn prune_deletes_only_old_profiles() {
    let dir = TestDir::new("prune");
    let mut store = Store::open(dir.path()).unwrap();
    let new = profile(1000, "3", "alice", 0.0, 300.0);
    store
        .commit(&batch(vec![
            profile(1000, "1", "alice", 0.0, 100.0),
            profile(1000, "2", "alice", 0.0, 200.0),
            new.clone(),
        ]))
        .unwrap();
    assert_eq!(store.prune(50.0).unwrap(), 0);
    assert_eq!(store.prune(300.0).unwrap(), 2); // 300 itself is kept
    assert_eq!(store.profiles(&query()).unwrap(), [new.json.as_str()]);
}

#[test]
fn a_profile_with_a_nan_time_is_refused_and_nothing_of_its_batch_stored() {
    let dir = TestDir::new("nan");
    let mut store = Store::open(dir.path()).unwrap();
    let good = profile(1000, "1", "alice", 0.0, 100.0);
    let bad = profile(1000, "2", "alice", f64::NAN, 100.0);
    let error = store.commit(&batch(vec![good, bad])).unwrap_err();
    assert!(matches!(error, StoreError::InvalidProfile { ref jobid, .. } if jobid == "2"));
    assert_eq!(store.count().unwrap(), 0);
}

#[test]
fn a_reader_sees_commits_while_the_writer_is_open() {
    let dir = TestDir::new("reader");
    assert!(matches!(
        StoreReader::open(dir.path()),
        Err(StoreError::Sqlite { .. })
    ));
    let mut store = Store::open(dir.path()).unwrap();
    let reader = StoreReader::open(dir.path()).unwrap();
    assert_eq!(reader.count().unwrap(), 0);
    assert_eq!(reader.registry().unwrap(), None);
    let a = profile(1000, "1", "alice", 10.0, 20.0);
    store
        .commit(&Batch {
            profiles: vec![a.clone()],
            registry: Some("[]".into()),
            release: vec![],
        })
        .unwrap();
    assert_eq!(reader.count().unwrap(), 1);
    assert_eq!(reader.profiles(&query()).unwrap(), [a.json.as_str()]);
    assert_eq!(reader.registry().unwrap().as_deref(), Some("[]"));
    // Read-only means it.
    let writes = reader
        .conn()
        .execute("DELETE FROM profiles", [])
        .unwrap_err();
    assert!(writes.to_string().contains("readonly"), "{writes}");

    // Also once the writer has closed (and SQLite removed the -wal and
    // -shm files with it).
    drop(reader);
    drop(store);
    let reader = StoreReader::open(dir.path()).unwrap();
    assert_eq!(reader.count().unwrap(), 1);
}

#[test]
fn a_reader_refuses_a_database_the_daemon_has_not_set_up() {
    let dir = TestDir::new("reader-fresh");
    fs::create_dir_all(dir.path()).unwrap();
    drop(Connection::open(dir.path().join(DB_FILE)).unwrap());
    let Err(error) = StoreReader::open(dir.path()) else {
        panic!("opened an empty database");
    };
    assert!(
        matches!(error, StoreError::NotMigrated { found: 0, .. }),
        "{error}"
    );
}

#[test]
fn pages_follow_each_other_without_gaps_or_repeats() {
    let dir = TestDir::new("pages");
    let mut store = Store::open(dir.path()).unwrap();
    // Ties on the end time, broken by uid, job id and start time.
    let mut all = Vec::new();
    for uid in [1000, 1001] {
        for jobid in ["a", "b"] {
            for start in [1.0, 2.0] {
                let mut p = profile(uid, jobid, "u", start, 50.0);
                p.json = format!(r#"{{"jobid":"{jobid}","uid":{uid},"start":{start}}}"#);
                all.push(p);
            }
        }
    }
    all.push(profile(1000, "z", "u", 0.0, 60.0));
    store.commit(&batch(all.clone())).unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .profiles(&ProfileQuery {
                limit: Some(3),
                after: after.clone(),
                ..query()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        let last = all.iter().find(|p| p.json == *last).unwrap();
        after = Some(PageCursor {
            end_time: last.end_time,
            uid: last.uid,
            jobid: last.jobid.clone(),
            start_time: last.start_time,
        });
        seen.extend(page);
    }
    assert_eq!(seen.len(), all.len(), "{seen:?}");
    assert_eq!(seen[0], all[8].json, "the latest first");
    assert_eq!(seen[1], all[7].json, "then uid, job id, start descending");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len());
    let cursor = PageCursor {
        end_time: 50.0,
        uid: 1000,
        jobid: "b".into(),
        start_time: 1.0,
    };
    assert!(cursor.precedes(50.0, 1000, "a", 2.0));
    assert!(!cursor.precedes(50.0, 1001, "a", 1.0));
    assert!(!cursor.precedes(50.0, 1000, "b", 1.0), "not itself");
}

#[test]
fn trimming_takes_from_the_largest_down_to_a_common_level() {
    assert_eq!(
        trim_to_level(&[(1, 50), (2, 900), (3, 50)], 100),
        [(2, 100)]
    );
    let mut cuts = trim_to_level(&[(1, 500), (2, 480), (3, 20)], 100);
    cuts.sort();
    assert_eq!(cuts, [(1, 60), (2, 40)]);
    assert_eq!(trim_to_level(&[(1, 3)], 10), [(1, 3)]);
    assert!(trim_to_level(&[], 10).is_empty());
    assert!(trim_to_level(&[(1, 3)], 0).is_empty());
}

#[test]
fn pruning_the_largest_keeps_the_others() {
    let dir = TestDir::new("prune-largest");
    let mut store = Store::open(dir.path()).unwrap();
    let mut profiles = vec![profile(1001, "b", "bob", 0.0, 1.0)];
    profiles
        .extend((0..10).map(|i| profile(1000, &i.to_string(), "alice", 0.0, 10.0 + f64::from(i))));
    store.commit(&batch(profiles)).unwrap();
    assert_eq!(store.prune_largest(4).unwrap(), 4);
    assert_eq!(store.count().unwrap(), 7);
    let alice = ProfileQuery {
        uid: Some(1000),
        ..query()
    };
    let kept = store.profiles(&alice).unwrap();
    assert_eq!(kept.len(), 6);
    assert!(kept.last().unwrap().contains(r#""jobid":"4""#), "{kept:?}");
}
