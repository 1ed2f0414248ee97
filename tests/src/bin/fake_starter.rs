//! A launcher for the end-to-end tests, trusted by the daemons they start
//! (`--trust.path` of this binary). Single-threaded, so `fork` is safe.
//!
//! ```text
//! fake_starter starter SOCKET CPU_SECONDS
//!     Apptainer's starter: fork the "container" (a child that spins until it
//!     has used CPU_SECONDS of CPU), THEN connect to SOCKET, send nothing,
//!     and keep the connection open until the child exits. Prints
//!     `child PID`, then `child_cpu SECONDS` (the child's own CPU time, from
//!     wait4's rusage).
//! fake_starter send SOCKET PAYLOAD [FLAGS]
//!     Connect, print `connected`, write PAYLOAD (and a newline unless
//!     --no-newline), then print the daemon's answer: `reply LINE`, or
//!     `closed` (EOF without a line), or `error MESSAGE` (after
//!     `write_error MESSAGE` when the daemon hung up first). Flags:
//!     --shutdown-write         half-close before reading the answer;
//!     --exit-without-reading   exit right after writing;
//!     --exit-after-us=N        exit N microseconds after writing;
//!     --after-stdin-line       connect only once a line arrives on stdin;
//!     --hold-until-stdin-eof   after writing, wait for stdin's EOF and exit
//!                              without reading (a hang-up mid-handshake).
//! fake_starter silent SOCKET [COUNT]
//!     Open COUNT connections (default 1), send nothing, print
//!     `connected COUNT`, then hold them until stdin reaches EOF.
//! fake_starter orphan SOCKET WAIT_SECONDS
//!     Connect, send nothing, print `connected`, wait WAIT_SECONDS (the
//!     daemon takes it for a silent launcher), fork a child that keeps the
//!     connection, and exit. The child reads until the daemon closes its
//!     end and prints `closed`, or `held` after 15 s.
//! fake_starter busy CPU_SECONDS
//!     (A job's command, e.g. under `monitor run`.) Print `ready PID`, spin
//!     until this process has used CPU_SECONDS of CPU, print `cpu SECONDS`.
//! fake_starter repeat SOCKET JOB_ID COUNT
//!     Register COUNT times in a row from this one process with the same
//!     job id (connect, hello, read the answer, close); print each answer,
//!     then `done`, and stay until stdin reaches EOF.
//! ```
use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::Shutdown,
    os::unix::net::UnixStream,
    process::ExitCode,
    time::Duration,
};

const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["starter", socket, cpu] => starter(socket, seconds(cpu)),
        ["send", socket, payload, flags @ ..] => send(socket, payload, flags),
        ["silent", socket] => silent(socket, 1),
        ["silent", socket, count] => silent(socket, count.parse().expect("COUNT")),
        ["orphan", socket, wait] => orphan(socket, seconds(wait)),
        ["busy", cpu] => busy(seconds(cpu)),
        ["repeat", socket, job_id, count] => repeat(socket, job_id, count.parse().expect("COUNT")),
        _ => {
            eprintln!("fake_starter: unknown arguments {args:?} (see the source for usage)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake_starter: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(text: &str) -> f64 {
    text.parse().expect("a number of seconds")
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// CPU time of this process so far (all its threads; it survives exec).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Pure user-space spinning until this process has used `target` seconds.
fn spin_until(target: f64) {
    let mut x: u64 = 1;
    while cpu_seconds() < target {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

fn starter(socket: &str, cpu: f64) -> io::Result<()> {
    // SAFETY: this program is single-threaded; the child only spins and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        spin_until(cpu);
        // SAFETY: leave without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    // The container runs already; only now does the starter connect.
    let stream = UnixStream::connect(socket)?;
    say(&format!("child {child}"));
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let waited = unsafe { libc::wait4(child, &mut status, 0, &mut usage) };
    if waited != child {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    say(&format!(
        "child_cpu {:.6}",
        tv(usage.ru_utime) + tv(usage.ru_stime)
    ));
    drop(stream);
    Ok(())
}

fn send(socket: &str, payload: &str, flags: &[&str]) -> io::Result<()> {
    const FLAGS: [&str; 5] = [
        "--no-newline",
        "--shutdown-write",
        "--exit-without-reading",
        "--after-stdin-line",
        "--hold-until-stdin-eof",
    ];
    let linger_us: Option<u64> = flags
        .iter()
        .find_map(|f| f.strip_prefix("--exit-after-us="))
        .map(|n| n.parse().expect("--exit-after-us=MICROSECONDS"));
    if let Some(flag) = flags
        .iter()
        .find(|f| !FLAGS.contains(f) && !f.starts_with("--exit-after-us="))
    {
        return Err(io::Error::other(format!("unknown flag {flag}")));
    }
    if flags.contains(&"--after-stdin-line") {
        let mut line = String::new();
        io::stdin().read_line(&mut line)?;
    }
    let mut stream = UnixStream::connect(socket)?;
    say("connected");
    let mut bytes = payload.as_bytes().to_vec();
    if !flags.contains(&"--no-newline") {
        bytes.push(b'\n');
    }
    if let Err(e) = stream.write_all(&bytes) {
        // The daemon may have answered and hung up before reading (a
        // refusal at accept): its answer is still waiting to be read.
        say(&format!("write_error {e}"));
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        say(&read_reply(&stream));
        return Ok(());
    }
    if flags.contains(&"--hold-until-stdin-eof") {
        let mut sink = Vec::new();
        io::stdin().read_to_end(&mut sink)?;
        return Ok(());
    }
    if let Some(us) = linger_us {
        std::thread::sleep(Duration::from_micros(us));
        return Ok(());
    }
    if flags.contains(&"--exit-without-reading") {
        return Ok(());
    }
    if flags.contains(&"--shutdown-write") {
        stream.shutdown(Shutdown::Write)?;
    }
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    say(&read_reply(&stream));
    Ok(())
}

/// `reply LINE`, `closed` or `error MESSAGE`.
fn read_reply(stream: &UnixStream) -> String {
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(0) => "closed".to_string(),
        Ok(_) => format!("reply {}", line.trim_end()),
        Err(e) => format!("error {e}"),
    }
}

fn silent(socket: &str, count: usize) -> io::Result<()> {
    let streams = (0..count)
        .map(|_| UnixStream::connect(socket))
        .collect::<io::Result<Vec<_>>>()?;
    say(&format!("connected {}", streams.len()));
    // Held until the test closes our stdin.
    let mut sink = Vec::new();
    io::stdin().read_to_end(&mut sink)?;
    drop(streams);
    Ok(())
}

fn orphan(socket: &str, wait: f64) -> io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    say("connected");
    std::thread::sleep(Duration::from_secs_f64(wait));
    // SAFETY: this program is single-threaded; the child only reads and exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
        let mut buffer = [0u8; 256];
        let line = loop {
            match stream.read(&mut buffer) {
                Ok(0) => break "closed",
                Ok(_) => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    break "held";
                }
                Err(_) => break "closed",
            }
        };
        say(line);
        // SAFETY: leave without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    Ok(())
}

fn busy(cpu: f64) -> io::Result<()> {
    say(&format!("ready {}", std::process::id()));
    spin_until(cpu);
    say(&format!("cpu {:.6}", cpu_seconds()));
    Ok(())
}

fn repeat(socket: &str, job_id: &str, count: usize) -> io::Result<()> {
    for _ in 0..count {
        let mut stream = UnixStream::connect(socket)?;
        // A refusal (over the cap) is answered before the hello is read and
        // the daemon hangs up: the write may fail, the answer is still there.
        let _ = stream.write_all(format!("{{\"job_id\":\"{job_id}\"}}\n").as_bytes());
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        say(&read_reply(&stream));
    }
    say("done");
    // Stay alive (and in the job) until the test closes our stdin.
    let mut sink = Vec::new();
    io::stdin().read_to_end(&mut sink)?;
    Ok(())
}
