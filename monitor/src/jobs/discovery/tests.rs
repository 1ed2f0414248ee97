use std::path::PathBuf;

use super::{layout::literal_prefix, *};

const CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
    cpuset\t6\t1\t1\ncpu\t3\t57\t1\ncpuacct\t3\t57\t1\nblkio\t9\t57\t1\n\
    memory\t4\t88\t1\ndevices\t10\t57\t1\nfreezer\t7\t1\t1\nnet_cls\t2\t1\t1\n";
const MOUNTINFO: &str = "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
    35 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer\n\
    36 25 0:32 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";

fn slurm() -> Discovery {
    Discovery::from_system(&[SLURM_V2.into(), SLURM_V1.into()], CGROUPS, MOUNTINFO).unwrap()
}

#[test]
fn slurm_v1_jobs_are_found_in_the_freezer_hierarchy() {
    let d = slurm();
    let v1 = d.v1().unwrap();
    assert_eq!((v1.hierarchy, v1.subsys), (7, 6));
    assert_eq!(v1.mount, PathBuf::from("/sys/fs/cgroup/freezer"));
    let job = |path: &str| d.job_of(path);
    assert_eq!(
        job("freezer:/slurm_vm/uid_1001/job_17"),
        Some(Found {
            jobid: "17".into(),
            jobid_from_tasks: false,
            uid: Some(1001)
        })
    );
    assert_eq!(job("freezer:/slurm/uid_0/job_3").unwrap().jobid, "3");
    assert_eq!(job("freezer:/slurm_vm/uid_1001/job_17/step_batch"), None);
    assert_eq!(job("freezer:/slurm_vm/uid_1001"), None);
    assert_eq!(
        job("/slurm_vm/uid_1001/job_17"),
        None,
        "a v1 layout is not a v2 path"
    );
    assert!(d.may_hold_jobs("freezer:/slurm_vm/uid_1001"));
    assert!(!d.may_hold_jobs("freezer:/docker/abc"));
}

#[test]
fn slurm_v2_jobs_and_multi_slurmd_scopes_are_found() {
    let d = slurm();
    assert_eq!(
        d.job_of("/system.slice/slurmstepd.scope/job_5")
            .unwrap()
            .jobid,
        "5"
    );
    assert_eq!(
        d.job_of("/system.slice/node7_slurmstepd.scope/job_6"),
        Some(Found {
            jobid: "6".into(),
            jobid_from_tasks: false,
            uid: None
        })
    );
    assert_eq!(
        d.job_of("/system.slice/slurmstepd.scope/job_5/step_0"),
        None
    );
    assert_eq!(d.job_of("/system.slice/slurmstepd.scope/system"), None);
    assert_eq!(
        d.job_of("/user.slice/x/system.slice/slurmstepd.scope/job_5"),
        None
    );
}

#[test]
fn a_sluid_layout_takes_the_job_id_from_its_tasks() {
    let layout = r"^/system\.slice/slurmstepd\.scope/job_(?P<sluid>s[0-9A-Z]+)$";
    let d = Discovery::from_system(&[layout.into()], CGROUPS, MOUNTINFO).unwrap();
    assert_eq!(
        d.job_of("/system.slice/slurmstepd.scope/job_s1Z3K"),
        Some(Found {
            jobid: "s1Z3K".into(),
            jobid_from_tasks: true,
            uid: None
        })
    );
}

#[test]
fn the_kernel_gets_each_layouts_literal_start() {
    let filter = slurm().kernel_filter();
    assert_eq!(
        (filter.v1_hierarchy, filter.v1_subsys, filter.count),
        (7, 6, 2)
    );
    let prefix = |i: usize| {
        let p = &filter.prefixes[i];
        (
            p.v1,
            String::from_utf8_lossy(&p.bytes[..p.len as usize]).into_owned(),
        )
    };
    assert_eq!(prefix(0), (0, "/system.slice/".to_string()));
    assert_eq!(prefix(1), (1, "/slurm".to_string()));
}

#[test]
fn a_long_literal_start_is_cut_where_the_kernel_cuts_it() {
    let long = "a".repeat(DISCOVERY_PREFIX_MAX + 10);
    let d = Discovery::from_system(
        &[format!("^/{long}/job_(?P<jobid>[0-9]+)$")],
        CGROUPS,
        MOUNTINFO,
    )
    .unwrap();
    let filter = d.kernel_filter();
    assert_eq!(filter.prefixes[0].len as usize, DISCOVERY_PREFIX_MAX);
    // Under the cut prefix but not the full one: given a slot by the
    // kernel, so freed by the daemon.
    assert!(d.may_hold_jobs(&format!("/{}b", &long[..DISCOVERY_PREFIX_MAX - 1])));
}

#[test]
fn literal_prefixes_stop_at_the_first_special_character() {
    assert_eq!(literal_prefix(r"^/a\.b/c(?:d)"), "/a.b/c");
    assert_eq!(literal_prefix(r"^/pbs\.slice/jobs?/"), "/pbs.slice/job");
    assert_eq!(literal_prefix(r"^/x[0-9]"), "/x");
    assert_eq!(literal_prefix(r"^(?P<jobid>\d+)"), "");
}

#[test]
fn walk_roots_are_the_prefixes_directories() {
    let roots = slurm().roots(Path::new("/sys/fs/cgroup/unified"));
    let dirs: Vec<_> = roots.iter().map(|r| r.dir.clone()).collect();
    assert_eq!(
        dirs,
        vec![
            PathBuf::from("/sys/fs/cgroup/unified/system.slice"),
            PathBuf::from("/sys/fs/cgroup/freezer/"),
        ]
    );
    assert_eq!(
        roots[1].table_path(Path::new("/sys/fs/cgroup/freezer/slurm_vm/uid_0/job_1")),
        Some("freezer:/slurm_vm/uid_0/job_1".to_string())
    );
    assert_eq!(
        roots[0].table_path(Path::new("/sys/fs/cgroup/unified/system.slice/x")),
        Some("/system.slice/x".to_string())
    );
}

#[test]
fn table_paths_of_v1_cgroups_resolve_in_their_hierarchy() {
    assert_eq!(
        split("freezer:/slurm/uid_0/job_1"),
        (Some("freezer"), "/slurm/uid_0/job_1")
    );
    assert_eq!(split("/system.slice/a:b"), (None, "/system.slice/a:b"));
    assert_eq!(v1_table_path("freezer", "/slurm"), "freezer:/slurm");
}

#[test]
fn bad_layouts_are_refused_with_the_reason() {
    let refuse = |spec: &str| Discovery::from_system(&[spec.into()], CGROUPS, MOUNTINFO);
    assert!(matches!(
        refuse("/job_(?P<jobid>1)"),
        Err(DiscoveryError::NotAnchored(_))
    ));
    assert!(matches!(
        refuse("^/job_(\\d+)"),
        Err(DiscoveryError::NoJobId(_))
    ));
    assert!(matches!(
        refuse("^/job_(?P<jobid>"),
        Err(DiscoveryError::Regex { .. })
    ));
    let two = Discovery::from_system(
        &[
            "freezer:^/a/(?P<jobid>1)".into(),
            "memory:^/b/(?P<jobid>1)".into(),
        ],
        CGROUPS,
        MOUNTINFO,
    );
    assert!(matches!(two, Err(DiscoveryError::TwoControllers(..))));
}

#[test]
fn a_v1_layout_on_a_host_without_that_hierarchy_is_dropped() {
    let d = Discovery::from_system(&[SLURM_V1.into()], CGROUPS, "").unwrap();
    assert!(d.is_off());
    assert_eq!(d.kernel_filter().v1_subsys, NO_V1);
}
