//! Workloads for the memory, IO and network tests: each does one thing the
//! daemon should see, and prints the kernel's own account of it, read from
//! inside the process right before it matters, as `WORD key=value ...`
//! lines for the test to compare with /metrics.
//!
//! ```text
//! workload memory MIB HOLD_MS
//!     Print `ready ...`, wait for a line on stdin; map MIB MiB of anonymous
//!     memory, touch every page (4 KiB pages: no huge pages), print
//!     `touched ...`, hold them HOLD_MS ms, munmap them (so they really go
//!     back to the kernel), print `freed ...`; then stay until stdin's EOF.
//!     Every line carries rss= and hwm= (VmRSS and VmHWM in bytes, from
//!     /proc/self/status) and faults= (minor + major faults so far, from
//!     getrusage).
//! workload steps
//!     Memory steps, one command per stdin line, each answered with one
//!     line carrying rss=, hwm= and faults= as above; EOF ends it:
//!       map MIB    mmap MIB MiB, untouched: `mapped id=N addr=A len=L ...`
//!       touch N    touch every page of mapping N: `touched ...`
//!       free N     munmap mapping N: `freed ...`
//!       state      `state ...`
//! workload io DIR MIB [all]
//!     Write MIB MiB to a new file in DIR in 1 MiB write(2) calls, fsync it,
//!     read it back in 1 MiB read(2) calls, remove it, then print
//!     `io rchar=.. wchar=.. syscr=.. syscw=.. read_bytes=.. write_bytes=..
//!     cancelled_write_bytes=..` from /proc/self/io (its last read) and exit. With `all`, the 1 MiB
//!     calls take turns among every call of the families: write, writev,
//!     pwrite64, pwritev, pwritev2, then read, readv, pread64, preadv,
//!     preadv2; then the file is read once more with O_DIRECT (the block
//!     layer sees it, in this process's context), and MIB/4 MiB of it go to
//!     other files by sendfile and by copy_file_range.
//! workload net BYTES
//!     Send BYTES over a loopback TCP connection to itself (a receiving
//!     thread in this process) in 64 KiB writes; print `net sent=N
//!     received=M tcp_bytes_sent=.. tcp_bytes_retrans=.. tcp_segs_out=..
//!     tcp_segs_in=..` (TCP_INFO of both sockets, summed, taken once the
//!     receiver saw the end) and exit.
//! workload launch PROCS MIB PROGRAM [ARGS...]
//!     A launcher with a big address space: touch MIB MiB, fork; the child
//!     joins the cgroup whose cgroup.procs is PROCS, touches one fresh page
//!     (as any child that runs code between fork and exec may) and execs
//!     PROGRAM with ARGS (stdin and stdout inherited). The launcher waits
//!     and exits with the child's status.
//! workload spin CPU_MS
//!     Spin in user space (a clock_gettime now and then) until this process
//!     has used CPU_MS ms of CPU, then print its figures (below) and exit.
//! workload switches VOLUNTARY INVOLUNTARY
//!     sched_yield(2) until the kernel counted INVOLUNTARY involuntary
//!     switches of this process (give it a yielding contender on its CPU:
//!     alone, a yield switches to nothing), then 1 µs sleeps until it
//!     counted VOLUNTARY voluntary ones; print its figures and exit.
//! workload yield
//!     sched_yield(2) forever: a contender for `switches`.
//! workload small-io DIR MIB CHUNK
//!     Write MIB MiB to a new file in DIR in CHUNK-byte write(2) calls, read
//!     it back in CHUNK-byte read(2) calls, remove it; print its figures
//!     and exit.
//! workload faults MIB ROUNDS
//!     ROUNDS times: map MIB MiB, touch every 4 KiB page, unmap it; print
//!     its figures and exit.
//! workload spin-threads N
//!     N threads spinning in user space forever (the main thread waits).
//! workload sleep-threads N
//!     N threads asleep forever; prints `ready` once all N run.
//!
//! The figures, this process's own as the kernel counts them, read as its
//! last act before exiting: `figures cpu_ns=.. run_delay_ns=.. pcount=..`
//! (/proc/self/schedstat) `nvcsw=.. nivcsw=..` (/proc/self/status
//! voluntary_ctxt_switches, nonvoluntary_ctxt_switches) `minflt=.. majflt=..`
//! (/proc/self/stat fields 10 and 12) `rchar=.. wchar=.. syscr=.. syscw=..
//! read_bytes=.. write_bytes=..` (/proc/self/io, read last: it counts the
//! reads of the others, not its own). The figures are of the main thread
//! (status, schedstat) or the process (stat, io): the modes that print them
//! are single-threaded, so both are the process's.
//! workload oom
//!     Map and touch 1 MiB after another until the OOM killer ends this
//!     process; after 2 GiB without being killed, print `survived MIB` and
//!     exit 3.
//! ```
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead as _, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::ExitCode,
    thread,
    time::Duration,
};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["memory", mib, hold_ms] => memory(number(mib), number(hold_ms)),
        ["steps"] => steps(),
        ["io", dir, mib] => file_io(Path::new(dir), number(mib), false),
        ["io", dir, mib, "all"] => file_io(Path::new(dir), number(mib), true),
        ["net", bytes] => network(number(bytes)),
        ["oom"] => oom(),
        ["spin", cpu_ms] => spin(number(cpu_ms)),
        ["switches", voluntary, involuntary] => switches(number(voluntary), number(involuntary)),
        ["yield"] => yield_forever(),
        ["small-io", dir, mib, chunk] => small_io(Path::new(dir), number(mib), number(chunk)),
        ["faults", mib, rounds] => faults(number(mib), number(rounds)),
        ["spin-threads", threads] => spin_threads(number(threads)),
        ["sleep-threads", threads] => sleep_threads(number(threads)),
        ["launch", procs, mib, program, rest @ ..] => launch(procs, number(mib), program, rest),
        _ => {
            eprintln!("workload: unknown arguments {args:?} (see the source for usage)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("workload: {e}");
            ExitCode::FAILURE
        }
    }
}

fn number(text: &str) -> usize {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Anonymous memory that goes back to the kernel (munmap) when dropped.
struct Mapping {
    address: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping, owned by the result.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Small pages, so faults are one per 4 KiB whatever the THP mode.
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(address, len, libc::MADV_NOHUGEPAGE) };
        Ok(Self { address, len })
    }

    /// Writes one byte in every page, so every page is resident.
    fn touch(&self) {
        let base = self.address.cast::<u8>();
        for offset in (0..self.len).step_by(PAGE) {
            // SAFETY: inside the mapping; volatile so the write stays.
            unsafe { base.add(offset).write_volatile(1) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.address, self.len) };
    }
}

/// `rss=.. hwm=.. faults=..` now.
fn memory_state() -> io::Result<String> {
    let status = fs::read_to_string("/proc/self/status")?;
    let kib = |key: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {key} in /proc/self/status")))
    };
    let (rss, hwm) = (kib("VmRSS:")?, kib("VmHWM:")?);
    // SAFETY: getrusage fills the zeroed struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let faults = usage.ru_minflt + usage.ru_majflt;
    Ok(format!(
        "rss={} hwm={} faults={faults}",
        rss * 1024,
        hwm * 1024
    ))
}

fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn wait_for_line() -> io::Result<()> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

fn memory(mib: usize, hold_ms: usize) -> io::Result<ExitCode> {
    say(&format!("ready {}", memory_state()?))?;
    wait_for_line()?;
    let mapping = Mapping::new(mib * MIB)?;
    mapping.touch();
    say(&format!("touched {}", memory_state()?))?;
    thread::sleep(Duration::from_millis(hold_ms as u64));
    drop(mapping);
    say(&format!("freed {}", memory_state()?))?;
    // Alive (with its memory freed) until the test has looked.
    io::stdin().lock().read_to_end(&mut Vec::new())?;
    Ok(ExitCode::SUCCESS)
}

fn steps() -> io::Result<ExitCode> {
    let mut mappings: Vec<Option<Mapping>> = Vec::new();
    for line in io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let mapping = |id: &str, mappings: &mut Vec<Option<Mapping>>| -> io::Result<usize> {
            let id: usize = id
                .parse()
                .map_err(|_| io::Error::other(format!("bad mapping id {id:?}")))?;
            match mappings.get(id) {
                Some(Some(_)) => Ok(id),
                _ => Err(io::Error::other(format!("no mapping {id}"))),
            }
        };
        match words.as_slice() {
            ["map", mib] => {
                let mapping = Mapping::new(number(mib) * MIB)?;
                let (address, len) = (mapping.address as usize, mapping.len);
                mappings.push(Some(mapping));
                say(&format!(
                    "mapped id={} addr={address} len={len} {}",
                    mappings.len() - 1,
                    memory_state()?
                ))?;
            }
            ["touch", id] => {
                let id = mapping(id, &mut mappings)?;
                if let Some(Some(m)) = mappings.get(id) {
                    m.touch();
                }
                say(&format!("touched {}", memory_state()?))?;
            }
            ["free", id] => {
                let id = mapping(id, &mut mappings)?;
                mappings[id] = None;
                say(&format!("freed {}", memory_state()?))?;
            }
            ["state"] => say(&format!("state {}", memory_state()?))?,
            _ => return Err(io::Error::other(format!("unknown step {line:?}"))),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Memory aligned for O_DIRECT.
struct Aligned(Mapping);

impl Aligned {
    fn new(len: usize) -> io::Result<Self> {
        Mapping::new(len).map(Self)
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the whole mapping, readable and writable, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.0.address.cast(), self.0.len) }
    }
}

/// The return of a raw read/write-family call, as io::Result.
fn check(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Writes `chunk` at `offset` with the `turn`-th call of the write family.
fn write_turn(fd: i32, chunk: &[u8], offset: usize, turn: usize) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: chunk.as_ptr().cast_mut().cast(),
        iov_len: chunk.len(),
    };
    let at = offset as libc::off_t;
    // SAFETY: valid buffers and fd; the kernel only reads `chunk`.
    let ret = unsafe {
        match turn % 5 {
            0 => libc::write(fd, chunk.as_ptr().cast(), chunk.len()),
            1 => libc::writev(fd, &iov, 1),
            2 => libc::pwrite64(fd, chunk.as_ptr().cast(), chunk.len(), at),
            3 => libc::pwritev64(fd, &iov, 1, at),
            _ => libc::pwritev2(fd, &iov, 1, at, 0),
        }
    };
    check(ret)
}

/// Reads into `buffer` from `offset` with the `turn`-th call of the read family.
fn read_turn(fd: i32, buffer: &mut [u8], offset: usize, turn: usize) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let at = offset as libc::off_t;
    // SAFETY: valid buffers and fd; the kernel writes at most `buffer.len()`.
    let ret = unsafe {
        match turn % 5 {
            0 => libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()),
            1 => libc::readv(fd, &iov, 1),
            2 => libc::pread64(fd, buffer.as_mut_ptr().cast(), buffer.len(), at),
            3 => libc::preadv64(fd, &iov, 1, at),
            _ => libc::preadv2(fd, &iov, 1, at, 0),
        }
    };
    check(ret)
}

fn file_io(dir: &Path, mib: usize, all: bool) -> io::Result<ExitCode> {
    use std::os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _};
    let path = dir.join(format!("workload-io-{}", std::process::id()));
    let size = mib * MIB;
    let result = (|| -> io::Result<()> {
        let turns = if all { 5 } else { 1 };
        let chunk = vec![0x5au8; MIB];
        {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let mut offset = 0;
            while offset < size {
                // The plain and vectored calls write at the file position,
                // the positioned ones at `offset`: the same place, as each
                // call writes all of its chunk and the position follows.
                let n = write_turn(file.as_raw_fd(), &chunk, offset, offset / MIB % turns)?;
                if n == 0 {
                    return Err(io::Error::other("a write wrote nothing"));
                }
                if offset / MIB % turns >= 2 {
                    // Positioned calls leave the position alone: move it.
                    // SAFETY: lseek on our fd.
                    unsafe {
                        libc::lseek(
                            file.as_raw_fd(),
                            (offset + n) as libc::off_t,
                            libc::SEEK_SET,
                        )
                    };
                }
                offset += n;
            }
            file.sync_all()?;
        }
        let file = File::open(&path)?;
        let mut buffer = vec![0u8; MIB];
        let mut offset = 0;
        loop {
            let turn = offset / MIB % turns;
            let n = read_turn(file.as_raw_fd(), &mut buffer, offset, turn)?;
            if n == 0 {
                break;
            }
            if turn >= 2 {
                // SAFETY: lseek on our fd.
                unsafe {
                    libc::lseek(
                        file.as_raw_fd(),
                        (offset + n) as libc::off_t,
                        libc::SEEK_SET,
                    )
                };
            }
            offset += n;
        }
        if offset != size {
            return Err(io::Error::other(format!(
                "read back {offset} bytes of {size}"
            )));
        }
        if all {
            // Past the page cache: block reads submitted by this process.
            let direct = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)?;
            let mut aligned = Aligned::new(MIB)?;
            let mut total = 0;
            loop {
                match (&direct).read(aligned.bytes())? {
                    0 => break,
                    n => total += n,
                }
            }
            if total != size {
                return Err(io::Error::other(format!(
                    "read {total} bytes with O_DIRECT of {size}"
                )));
            }
            let copied = size / 4;
            for how in ["sendfile", "copy_file_range"] {
                let target_path = path.with_extension(how);
                let target = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target_path)?;
                let mut done = 0;
                let mut in_offset: libc::off64_t = 0;
                while done < copied {
                    // SAFETY: valid fds and offset pointers.
                    let ret = unsafe {
                        if how == "sendfile" {
                            libc::sendfile64(
                                target.as_raw_fd(),
                                file.as_raw_fd(),
                                &mut in_offset,
                                copied - done,
                            )
                        } else {
                            libc::copy_file_range(
                                file.as_raw_fd(),
                                &mut in_offset,
                                target.as_raw_fd(),
                                std::ptr::null_mut(),
                                copied - done,
                                0,
                            )
                        }
                    };
                    match check(ret)? {
                        0 => return Err(io::Error::other(format!("{how} copied nothing"))),
                        n => done += n,
                    }
                }
                fs::remove_file(&target_path)?;
            }
        }
        Ok(())
    })();
    let removed = fs::remove_file(&path);
    result?;
    removed?;
    // One read(2) of the whole file: its own bytes are not in what it shows.
    let text = fs::read_to_string("/proc/self/io")?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .unwrap_or("?")
            .to_string()
    };
    say(&format!(
        "io rchar={} wchar={} syscr={} syscw={} read_bytes={} write_bytes={} cancelled_write_bytes={}",
        field("rchar"),
        field("wchar"),
        field("syscr"),
        field("syscw"),
        field("read_bytes"),
        field("write_bytes"),
        field("cancelled_write_bytes"),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The kernel's own counts of one TCP socket (TCP_INFO): (bytes sent,
/// retransmitted included; bytes retransmitted; segments out; segments in).
fn tcp_counts(stream: &TcpStream) -> io::Result<[u64; 4]> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a zeroed tcp_info is valid; the kernel fills at most `len`.
    let info = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        if libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        info
    };
    Ok([
        info.tcpi_bytes_sent,
        info.tcpi_bytes_retrans,
        u64::from(info.tcpi_segs_out),
        u64::from(info.tcpi_segs_in),
    ])
}

fn network(bytes: usize) -> io::Result<ExitCode> {
    const WRITE: usize = 64 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let receiver = thread::spawn(move || -> io::Result<(usize, [u64; 4])> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; WRITE];
        let mut received = 0;
        loop {
            match stream.read(&mut buffer)? {
                0 => return Ok((received, tcp_counts(&stream)?)),
                n => received += n,
            }
        }
    });
    let mut stream = TcpStream::connect(address)?;
    let chunk = vec![0xa5u8; WRITE];
    let mut sent = 0;
    while sent < bytes {
        let n = WRITE.min(bytes - sent);
        stream.write_all(&chunk[..n])?;
        sent += n;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let (received, receiver_counts) = receiver
        .join()
        .map_err(|_| io::Error::other("the receiving thread panicked"))??;
    let sender_counts = tcp_counts(&stream)?;
    drop(stream);
    // Both sockets together (each sends data or acknowledgements).
    let total = |i: usize| sender_counts[i] + receiver_counts[i];
    say(&format!(
        "net sent={sent} received={received} tcp_bytes_sent={} tcp_bytes_retrans={} tcp_segs_out={} tcp_segs_in={}",
        total(0),
        total(1),
        total(2),
        total(3)
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn oom() -> io::Result<ExitCode> {
    const GIVE_UP_MIB: usize = 2 * 1024;
    let mut kept = Vec::new();
    for _ in 0..GIVE_UP_MIB {
        let mapping = Mapping::new(MIB)?;
        mapping.touch();
        kept.push(mapping);
    }
    say(&format!("survived {GIVE_UP_MIB}"))?;
    Ok(ExitCode::from(3))
}

fn launch(procs: &str, mib: usize, program: &str, args: &[&str]) -> io::Result<ExitCode> {
    use std::ffi::CString;
    let to_c = |s: &str| CString::new(s).map_err(|_| io::Error::other("NUL in an argument"));
    let procs = to_c(procs)?;
    let program_c = to_c(program)?;
    let argv_c: Vec<CString> = std::iter::once(program)
        .chain(args.iter().copied())
        .map(to_c)
        .collect::<io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let big = Mapping::new(mib * MIB)?;
    big.touch();
    let fresh = Mapping::new(PAGE)?;
    // SAFETY: this process is single-threaded; the child only makes raw
    // syscalls and writes to its own copy of `fresh` before exec.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: the child's raw syscalls on its own memory (see above).
        0 => unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(126);
            }
            libc::close(fd);
            fresh.touch();
            libc::execv(program_c.as_ptr(), argv.as_ptr());
            libc::_exit(127)
        },
        pid => {
            let mut status = 0;
            // SAFETY: our own child.
            if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
                return Err(io::Error::last_os_error());
            }
            drop(big);
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128
            };
            Ok(ExitCode::from(code as u8))
        }
    }
}

/// This process's own figures as the kernel counts them (see the top of
/// the file): `figures key=value ...`.
fn own_figures() -> io::Result<String> {
    let bad = |what: &str, text: &str| io::Error::other(format!("cannot parse {what}: {text:?}"));
    let schedstat = fs::read_to_string("/proc/self/schedstat")?;
    let sched: Vec<&str> = schedstat.split_whitespace().collect();
    if sched.len() < 3 {
        return Err(bad("/proc/self/schedstat", &schedstat));
    }
    let status = fs::read_to_string("/proc/self/status")?;
    let status_field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| bad(key, &status))
    };
    let (nvcsw, nivcsw) = (
        status_field("voluntary_ctxt_switches")?,
        status_field("nonvoluntary_ctxt_switches")?,
    );
    let stat = fs::read_to_string("/proc/self/stat")?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so
    // count from the last `)`; field 3 (state) is the first after it.
    let after_comm: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let stat_field = |field: usize| {
        after_comm
            .get(field - 3)
            .copied()
            .ok_or_else(|| bad("/proc/self/stat", &stat))
    };
    let (minflt, majflt) = (stat_field(10)?, stat_field(12)?);
    // Last: what it shows includes the reads above, not itself.
    let io_text = fs::read_to_string("/proc/self/io")?;
    let io_field = |key: &str| {
        io_text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .ok_or_else(|| bad(key, &io_text))
    };
    Ok(format!(
        "figures cpu_ns={} run_delay_ns={} pcount={} nvcsw={nvcsw} nivcsw={nivcsw} \
         minflt={minflt} majflt={majflt} rchar={} wchar={} syscr={} syscw={} read_bytes={} \
         write_bytes={}",
        sched[0],
        sched[1],
        sched[2],
        io_field("rchar")?,
        io_field("wchar")?,
        io_field("syscr")?,
        io_field("syscw")?,
        io_field("read_bytes")?,
        io_field("write_bytes")?,
    ))
}

/// Prints the figures as this process's last act.
fn print_figures() -> io::Result<ExitCode> {
    let line = own_figures()?;
    say(&line)?;
    Ok(ExitCode::SUCCESS)
}

/// CPU time of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: clock_gettime fills the zeroed timespec.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// About a millisecond of pure user-space work.
fn burn() {
    let mut x = 0u64;
    for i in 0..(1u64 << 18) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    std::hint::black_box(x);
}

fn spin(cpu_ms: usize) -> io::Result<ExitCode> {
    let target = Duration::from_millis(cpu_ms as u64);
    while process_cpu() < target {
        burn();
    }
    print_figures()
}

/// (voluntary, involuntary) switches of this process so far.
fn switch_counts() -> (u64, u64) {
    // SAFETY: getrusage fills the zeroed struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    (usage.ru_nvcsw as u64, usage.ru_nivcsw as u64)
}

fn switches(voluntary: usize, involuntary: usize) -> io::Result<ExitCode> {
    const GIVE_UP: Duration = Duration::from_secs(120);
    let started = std::time::Instant::now();
    // A yield with another runnable task on this CPU switches to it: the
    // kernel counts an involuntary switch (the task stayed runnable).
    while switch_counts().1 < involuntary as u64 {
        // SAFETY: no arguments, no memory.
        unsafe { libc::sched_yield() };
        if started.elapsed() > GIVE_UP {
            return Err(io::Error::other(format!(
                "only {} involuntary switches after {GIVE_UP:?} of yielding: no contender on this CPU?",
                switch_counts().1
            )));
        }
    }
    // Each sleep blocks: a voluntary switch.
    let nap = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000,
    };
    while switch_counts().0 < voluntary as u64 {
        // SAFETY: a valid timespec; no remainder wanted.
        unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
    }
    print_figures()
}

fn yield_forever() -> io::Result<ExitCode> {
    loop {
        // SAFETY: no arguments, no memory.
        unsafe { libc::sched_yield() };
    }
}

fn small_io(dir: &Path, mib: usize, chunk: usize) -> io::Result<ExitCode> {
    let path = dir.join(format!("workload-small-io-{}", std::process::id()));
    let size = mib * MIB;
    let result = (|| -> io::Result<()> {
        let data = vec![0x3cu8; chunk];
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut written = 0;
        while written < size {
            // One write(2) each (File is unbuffered).
            let n = file.write(&data[..chunk.min(size - written)])?;
            if n == 0 {
                return Err(io::Error::other("a write wrote nothing"));
            }
            written += n;
        }
        drop(file);
        let mut file = File::open(&path)?;
        let mut buffer = vec![0u8; chunk];
        let mut read = 0;
        loop {
            match file.read(&mut buffer)? {
                0 => break,
                n => read += n,
            }
        }
        if read != size {
            return Err(io::Error::other(format!(
                "read back {read} bytes of {size}"
            )));
        }
        Ok(())
    })();
    let removed = fs::remove_file(&path);
    result?;
    removed?;
    print_figures()
}

fn faults(mib: usize, rounds: usize) -> io::Result<ExitCode> {
    for _ in 0..rounds {
        let mapping = Mapping::new(mib * MIB)?;
        mapping.touch();
    }
    print_figures()
}

fn sleep_threads(threads: usize) -> io::Result<ExitCode> {
    let sleepers: Vec<_> = (0..threads).map(|_| thread::spawn(thread::park)).collect();
    println!("ready");
    io::stdout().flush()?;
    for sleeper in sleepers {
        let _ = sleeper.join();
    }
    Ok(ExitCode::SUCCESS)
}

fn spin_threads(threads: usize) -> io::Result<ExitCode> {
    let spinners: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(|| {
                loop {
                    burn();
                }
            })
        })
        .collect();
    for spinner in spinners {
        let _ = spinner.join();
    }
    Ok(ExitCode::SUCCESS)
}
