//! `--cgroup.favordynmods`: the daemon sets the cgroup v2 hierarchy's
//! option `favordynmods` (so a registration's move never waits for an RCU
//! grace period under the kernel's cgroup mutex), keeping every option the
//! hierarchy had and the mount's own flags; `false` leaves the mount
//! alone. The options are the whole machine's, so the test puts them back
//! as it found them.
use monitor_tests::{
    cgroup_options::{FAVORDYNMODS, V2Options},
    cpu_shared,
    daemon::Daemon,
    require_root_or_skip, skip_or_fail,
};

#[test]
fn the_daemon_adds_favordynmods_and_keeps_the_hierarchys_other_options() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let found = V2Options::read()?.put_back_on_drop();
    // The flags a systemd host mounts cgroup v2 with, whatever this one has.
    let test = V2Options {
        mount_flags: "rw,nosuid,nodev,noexec,relatime".into(),
        ..found.clone()
    };
    // The kernel has the option since 6.0; an older one refuses it.
    if test
        .set_options(&[found.without(FAVORDYNMODS), vec![FAVORDYNMODS.into()]].concat())
        .is_err()
    {
        skip_or_fail("this kernel has no favordynmods cgroup v2 mount option (added in 6.0)");
        return Ok(());
    }
    // One more option than the machine has, if it has neither, so that
    // keeping the others is tested on every machine: each only changes
    // what pids.events and memory protection say, for this test.
    let mut others = found.without(FAVORDYNMODS);
    for extra in ["pids_localevents", "memory_recursiveprot"] {
        if others.iter().any(|o| o == extra) {
            break;
        }
        let more = [others.clone(), vec![extra.to_string()]].concat();
        if test.set_options(&more).is_ok() {
            others = more;
            break;
        }
    }
    test.set_options(&others)?;
    let before = V2Options::read()?;
    assert!(
        !before.has(FAVORDYNMODS),
        "{FAVORDYNMODS} could not be taken away for the test: {before:?}"
    );
    assert!(
        before.mount_flags.contains("nosuid,nodev,noexec"),
        "the test's mount flags did not take: {before:?}"
    );

    // Told to leave the mount alone, it does.
    let daemon = Daemon::start_with(&["--cgroup.favordynmods=false"])?;
    let left = V2Options::read()?;
    drop(daemon);
    assert_eq!(
        left, before,
        "--cgroup.favordynmods=false changed the mount"
    );

    // By default it adds the option, and keeps every other one and the
    // mount's flags.
    let daemon = Daemon::start()?;
    let with = V2Options::read()?;
    println!("before: {before:?}; with the daemon: {with:?}");
    assert!(
        with.has(FAVORDYNMODS),
        "the daemon did not remount with {FAVORDYNMODS}: {with:?}; stderr:\n{}",
        daemon.stderr()
    );
    assert_eq!(
        with.without(FAVORDYNMODS),
        before.options,
        "the daemon changed the other options"
    );
    assert_eq!(
        with.mount_flags, before.mount_flags,
        "the daemon changed the mount's own flags"
    );
    assert!(
        daemon.stderr().contains("set favordynmods"),
        "the change was not logged; stderr:\n{}",
        daemon.stderr()
    );

    // Set already: a restart changes nothing and says nothing of it.
    drop(daemon);
    let daemon = Daemon::start()?;
    assert_eq!(V2Options::read()?, with, "a second start changed the mount");
    assert!(
        !daemon.stderr().contains("set favordynmods"),
        "the option was set already, yet the daemon set it; stderr:\n{}",
        daemon.stderr()
    );
    Ok(())
}
