//! `--web.config.file`: TLS, client certificates, basic auth and response
//! headers on the web port, as a site sets them up (openssl, htpasswd)
//! and as clients meet them (curl, the real Prometheus); a bad file stops
//! the start naming its key; a changed file is reread, a broken one is not
//! taken; slow clients cannot hold the port.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use monitor_tests::{
    Daemon, cpu_shared,
    daemon::TELEMETRY_PATH,
    launcher::TempDir,
    process::run_ok,
    prometheus::{self, Prometheus},
    require_root_or_skip, skip_or_fail,
    tls::{Curl, Pki, bcrypt_hash},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-secret";

/// Root, and the tools a site uses to make certificates and hashes.
fn ready() -> bool {
    if !require_root_or_skip() {
        return false;
    }
    for (tool, package) in [
        ("openssl", "openssl"),
        ("htpasswd", "apache2-utils"),
        ("curl", "curl"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip_or_fail(&format!(
                "{tool} is not installed (cargo xtask test installs it: apt-get install {package})"
            ));
            return false;
        }
    }
    true
}

fn write_config(dir: &TempDir, yaml: &str) -> anyhow::Result<PathBuf> {
    let path = dir.0.join("web-config.yml");
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn tls_lines(pki: &Pki) -> String {
    format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    )
}

fn run_a_job(daemon: &Daemon, name: &str) -> anyhow::Result<()> {
    let job = daemon.create_job(name)?;
    run_ok(
        &mut job.command("/bin/true")?,
        "/bin/true",
        Duration::from_secs(30),
    )?;
    let (seen, metrics) = daemon.wait_for(10, |m| {
        m.find("monitor_job_execs_total", &[("jobid", name)])
            .is_ok_and(|execs| execs.is_some_and(|n| n >= 1.0))
    })?;
    assert!(
        seen,
        "{name}'s exec never showed over the secured port:\n{}",
        metrics.text
    );
    Ok(())
}

#[test]
fn tls_and_basic_auth_guard_the_metrics_and_the_api() -> anyhow::Result<()> {
    if !ready() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let pki = Pki::new("web-tls")?;
    let config = write_config(
        &pki.dir,
        &format!(
            "{}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  {USER}: '{}'\n",
            tls_lines(&pki),
            bcrypt_hash(USER, PASSWORD)?
        ),
    )?;
    let config = config.to_string_lossy();
    let client = Curl::tls(&pki.path("ca.pem")).user(USER, PASSWORD);
    let daemon = Daemon::start_secured(&["--web.config.file", &config], client.clone())?;
    run_a_job(&daemon, "tls-job")?;
    let address = daemon.address();

    let ok = client.get(address, TELEMETRY_PATH)?;
    assert_eq!((ok.exit, ok.status), (0, 200), "{ok:?}");
    assert!(
        ok.head
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{}",
        ok.head
    );
    let jobs = client.get_ok(address, "/api/v1/jobs")?;
    assert!(
        jobs.contains("\"tls-job\""),
        "the API over TLS lacks the job: {jobs}"
    );

    let tls_only = Curl::tls(&pki.path("ca.pem"));
    for (what, curl, path) in [
        ("no password", tls_only.clone(), TELEMETRY_PATH),
        (
            "a wrong password",
            tls_only.clone().user(USER, "guess"),
            TELEMETRY_PATH,
        ),
        (
            "an unknown user",
            tls_only.clone().user("root", PASSWORD),
            TELEMETRY_PATH,
        ),
        ("no password, the API", tls_only.clone(), "/api/v1/jobs"),
        (
            "no password, one job",
            tls_only.clone(),
            "/api/v1/jobs/tls-job",
        ),
    ] {
        let answer = curl.get(address, path)?;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{what}: no WWW-Authenticate: {}",
            answer.head
        );
        assert!(
            !answer.body.contains("tls-job"),
            "{what}: the job leaked: {}",
            answer.body
        );
    }
    // Plain HTTP to the TLS port, and TLS without trusting the CA, get nothing.
    assert!(monitor_tests::http::get(address, TELEMETRY_PATH).is_err());
    let answer = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-u",
            &format!("{USER}:{PASSWORD}"),
        ])
        .arg(format!("https://{address}{TELEMETRY_PATH}"))
        .output()?;
    assert!(
        !answer.status.success(),
        "curl trusted a certificate from an unknown CA"
    );
    Ok(())
}

#[test]
fn client_certificates_are_required_and_verified() -> anyhow::Result<()> {
    if !ready() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let pki = Pki::new("web-mtls")?;
    let config = write_config(
        &pki.dir,
        &format!(
            "{}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n  \
             client_allowed_sans: [prometheus.example]\n",
            tls_lines(&pki),
            pki.path("ca.pem").display()
        ),
    )?;
    let config = config.to_string_lossy();
    let ca = pki.path("ca.pem");
    let client = Curl::tls(&ca).client_cert(&pki.path("client.pem"), &pki.path("client.key"));
    let daemon = Daemon::start_secured(&["--web.config.file", &config], client.clone())?;
    run_a_job(&daemon, "mtls-job")?;
    let address = daemon.address();
    assert_eq!(client.get(address, TELEMETRY_PATH)?.status, 200);

    for (what, curl) in [
        ("no client certificate", Curl::tls(&ca)),
        (
            "a certificate no CA vouches for",
            Curl::tls(&ca).client_cert(&pki.path("rogue.pem"), &pki.path("rogue.key")),
        ),
        (
            "a CA-signed certificate outside client_allowed_sans",
            Curl::tls(&ca).client_cert(&pki.path("intruder.pem"), &pki.path("intruder.key")),
        ),
    ] {
        let answer = curl.get(address, TELEMETRY_PATH)?;
        assert!(
            answer.status != 200 && !answer.body.contains("mtls-job"),
            "{what} was served: {answer:?}"
        );
    }
    Ok(())
}

#[test]
fn a_bad_web_config_stops_the_start_naming_the_key() -> anyhow::Result<()> {
    if !ready() {
        return Ok(());
    }
    let pki = Pki::new("web-bad")?;
    let tls = tls_lines(&pki);
    let hash = bcrypt_hash(USER, PASSWORD)?;
    let cases = [
        (
            "tls_server_config:\n  cert_fil: a.pem\n".to_string(),
            "cert_fil",
        ),
        (format!("{tls}  min_version: TLS14\n"), "min_version"),
        (
            format!("{tls}  max_version: TLS11\n"),
            "tls_server_config.max_version",
        ),
        (
            format!("{tls}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
            "tls_server_config.cipher_suites",
        ),
        (
            format!("{tls}  client_ca_file: {}\n", pki.path("ca.pem").display()),
            "tls_server_config.client_auth_type",
        ),
        (
            format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
            "tls_server_config.client_ca_file",
        ),
        (
            format!(
                "tls_server_config:\n  cert_file: {0}\n  key_file: {0}\n",
                pki.path("server.pem").display()
            ),
            "tls_server_config.key_file",
        ),
        (
            format!(
                "tls_server_config:\n  cert_file: {}\n",
                pki.path("server.pem").display()
            ),
            "tls_server_config.key_file",
        ),
        (
            "basic_auth_users:\n  alice: plaintext\n".to_string(),
            "basic_auth_users.alice",
        ),
        (
            format!("basic_auth_users:\n  {USER}: '{hash}'\nbasic_auth_user: x\n"),
            "basic_auth_user",
        ),
        (
            "http_server_config:\n  headers:\n    Set-Cookie: a=b\n".to_string(),
            "http_server_config.headers.Set-Cookie",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n".to_string(),
            "http_server_config.headers.X-Frame-Options",
        ),
        ("tls_server_config: [\n".to_string(), "web-config.yml"),
    ];
    let binary = monitor_tests::daemon::binary()?;
    for (yaml, key) in cases {
        let config = write_config(&pki.dir, &yaml)?;
        let output = Command::new(&binary)
            .args([
                "daemon",
                "--web.listen-address",
                "127.0.0.1:1",
                "--bpf.pin-path=",
            ])
            .arg("--web.config.file")
            .arg(&config)
            .output()
            .context("starting the daemon")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "the daemon started with:\n{yaml}");
        assert!(
            stderr.contains("--web.config.file") && stderr.contains(key),
            "the error does not name {key} for:\n{yaml}\n{stderr}"
        );
        assert!(
            !stderr.contains("attached"),
            "programs were loaded before the check: {stderr}"
        );
    }
    let missing = Command::new(&binary)
        .args(["daemon", "--web.config.file", "/nonexistent/web.yml"])
        .output()?;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && stderr.contains("/nonexistent/web.yml"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn the_web_config_is_reread_when_it_changes_and_on_sighup() -> anyhow::Result<()> {
    if !ready() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let dir = TempDir::new("web-reload")?;
    let users = |password: &str| -> anyhow::Result<String> {
        Ok(format!(
            "basic_auth_users:\n  {USER}: '{}'\n",
            bcrypt_hash(USER, password)?
        ))
    };
    let config = write_config(&dir, &users("first")?)?;
    let daemon = Daemon::start_secured(
        &["--web.config.file", &config.to_string_lossy()],
        Curl::default().user(USER, "first"),
    )?;
    let address = daemon.address();
    let status = |password: &str| -> anyhow::Result<u16> {
        Ok(Curl::default()
            .user(USER, password)
            .get(address, TELEMETRY_PATH)?
            .status)
    };

    // Changed: taken at a new connection, within about a second.
    write_config(&dir, &users("second")?)?;
    assert!(
        eventually(|| status("second").is_ok_and(|s| s == 200)),
        "the new password never worked"
    );
    assert_eq!(status("first")?, 401, "the old password still works");

    // Broken: the last good one stays, and the log says why.
    write_config(&dir, "basic_auth_users:\n  prometheus: [\n")?;
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(status("second")?, 200, "a broken file was taken");
    assert!(
        eventually(|| daemon
            .stderr()
            .contains("the last good web configuration stays in force")),
        "the bad reread was not logged:\n{}",
        daemon.stderr()
    );

    // Changed behind the daemon's back (same size, inode and times): only
    // SIGHUP makes it reread.
    let rereads = || daemon.stderr().matches("reread; now").count();
    let seen = rereads();
    write_config(&dir, &users("second")?)?;
    // Connections until the daemon has looked (it looks at connections).
    assert!(eventually(
        || status("second").is_ok_and(|s| s == 200) && rereads() > seen
    ));
    let before = std::fs::metadata(&config)?;
    write_config(&dir, &users("third")?)?;
    std::fs::File::options()
        .write(true)
        .open(&config)?
        .set_times(
            std::fs::FileTimes::new()
                .set_accessed(before.accessed()?)
                .set_modified(before.modified()?),
        )?;
    assert_eq!(
        std::fs::metadata(&config)?.size(),
        before.size(),
        "bcrypt hashes have one length"
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(status("third")?, 401, "reread without a change or SIGHUP");
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGHUP)?;
    assert!(
        eventually(|| status("third").is_ok_and(|s| s == 200)),
        "SIGHUP did not reread"
    );
    Ok(())
}

/// `check` holds within 10 s (a reread is due within a second).
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn prometheus_scrapes_over_mutual_tls_with_basic_auth() -> anyhow::Result<()> {
    if !ready() {
        return Ok(());
    }
    let Some(binary) = prometheus::binary() else {
        skip_or_fail(
            "the prometheus server is not on PATH (cargo xtask test installs it: apt-get install prometheus)",
        );
        return Ok(());
    };
    let _machine = cpu_shared();
    let pki = Pki::new("web-prometheus")?;
    let config = write_config(
        &pki.dir,
        &format!(
            "{}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n\
             basic_auth_users:\n  {USER}: '{}'\n",
            tls_lines(&pki),
            pki.path("ca.pem").display(),
            bcrypt_hash(USER, PASSWORD)?
        ),
    )?;
    let client = Curl::tls(&pki.path("ca.pem"))
        .user(USER, PASSWORD)
        .client_cert(&pki.path("client.pem"), &pki.path("client.key"));
    let daemon = Daemon::start_secured(&["--web.config.file", &config.to_string_lossy()], client)?;
    run_a_job(&daemon, "scraped-over-tls")?;
    let scrape = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n\
         \x20   basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n",
        pki.path("ca.pem").display(),
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    );
    let prometheus = Prometheus::start_scraping(
        &binary,
        daemon.address(),
        TELEMETRY_PATH,
        Duration::from_secs(1),
        &scrape,
    )?;
    prometheus.wait_for_scrape(Duration::from_secs(60))?;
    let series = r#"monitor_job_execs_total{jobid="scraped-over-tls"}"#;
    assert!(
        eventually(|| prometheus
            .query(series)
            .is_ok_and(|result| !result.is_empty())),
        "Prometheus has no {series}; its log:\n{}",
        prometheus.log()
    );
    Ok(())
}

/// Half-sent requests on the web port: the daemon holds a bounded number
/// (its descriptors do not grow with the flood), closes them after the
/// header timeout, and keeps registering jobs meanwhile.
#[test]
fn slow_clients_cannot_hold_the_web_port() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start_with(&["--web.max-connections", "8"])?;
    let descriptors = || -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))?.count())
    };
    let before = descriptors()?;
    let mut flood = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(daemon.address())?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
        flood.push(stream);
    }
    thread::sleep(Duration::from_millis(500));
    let during = descriptors()?;
    assert!(
        during <= before + 8,
        "200 half-sent requests took {} descriptors (at most 8 allowed)",
        during - before.min(during)
    );
    // Launchers are still served.
    let output = Command::new(monitor_tests::daemon::binary()?)
        .args([
            "run",
            "--require",
            "--job-id",
            "during-flood",
            "--",
            "/bin/true",
        ])
        .env("MONITOR_SOCKET", daemon.socket())
        .output()?;
    assert!(
        output.status.success(),
        "a launcher failed during the flood: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every flooding connection is closed by the daemon: over its share at
    // once, the held ones at the header timeout (10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    for stream in &mut flood {
        stream.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))?;
        let mut buffer = [0u8; 512];
        let closed = loop {
            match stream.read(&mut buffer) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false;
                }
                Err(_) => break true,
            }
        };
        assert!(
            closed,
            "a half-sent request was held past {:?}",
            Duration::from_secs(30)
        );
    }
    drop(flood);
    daemon
        .metrics()
        .context("the web port did not serve after the flood")?;
    Ok(())
}
