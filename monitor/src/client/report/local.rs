//! The job from the local daemon's job API (the API socket `monitor jobs`
//! reads), with this node's facts to fall back on where the job's cgroups
//! set no cpuset or memory limit.
use std::{fs, path::Path};

use thiserror::Error;

use super::figures::{Counts, CpusFrom, JobInput, MemoryFrom, Network, NodeInput, Switches};
use crate::{
    client::http::{self, HttpError, percent_encode},
    profile::JobJson,
    system::time::seconds,
};

#[derive(Debug, Error)]
pub enum LocalError {
    #[error(
        "asking the daemon's job API at {socket} (is `monitor daemon` running? set --socket.path \
         or MONITOR_SOCKET to its launcher socket)"
    )]
    Http {
        socket: String,
        #[source]
        source: HttpError,
    },
    #[error("the daemon answered {status}: {body}")]
    Status { status: String, body: String },
    #[error("the daemon's answer is not a job list")]
    Json(#[from] serde_json::Error),
}

/// The jobs with id `jobid` (one per user and run), or None when the
/// daemon knows none. Every page of them (the daemon answers a page at a
/// time, each naming the next).
pub fn jobs(api_socket: &Path, jobid: &str) -> Result<Option<Vec<JobJson>>, LocalError> {
    let mut jobs = Vec::new();
    let mut next = Some(format!("/api/v1/jobs/{}", percent_encode(jobid)));
    while let Some(path) = next {
        let response = http::unix_get(api_socket, &path).map_err(|source| LocalError::Http {
            socket: api_socket.display().to_string(),
            source,
        })?;
        match response.status {
            200 => jobs.extend(serde_json::from_str::<Vec<JobJson>>(&response.body)?),
            404 => return Ok(None),
            _ => {
                return Err(LocalError::Status {
                    status: response.status_line,
                    body: response.body,
                });
            }
        }
        next = response.next_page;
    }
    Ok(Some(jobs))
}

/// What this node has, for jobs given no cpuset or memory limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub hostname: String,
    /// Online CPUs.
    pub cpus: Option<u64>,
    /// MemTotal of /proc/meminfo.
    pub mem_total_bytes: Option<u64>,
}

impl NodeFacts {
    pub fn of_this_node() -> Self {
        // The kernel's name for the node (what hostname(1) prints).
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        // SAFETY: sysconf reads a system value; no memory is passed.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Self {
            hostname,
            cpus: u64::try_from(online).ok().filter(|&n| n > 0),
            mem_total_bytes: fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| mem_total(&text)),
        }
    }
}

/// `MemTotal:  16314104 kB` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib * 1024)
}

/// One job of the API as the report's input: a single node, this one.
pub fn input(job: &JobJson, node: &NodeFacts, source: &str) -> JobInput {
    let cpus = match (job.cpus_allocated, node.cpus) {
        (Some(n), _) => Some((n, CpusFrom::Cpuset)),
        (None, Some(n)) => Some((n, CpusFrom::Node)),
        (None, None) => None,
    };
    let memory = match (job.memory_limit_bytes, node.mem_total_bytes) {
        (Some(b), _) => Some((b, MemoryFrom::Limit)),
        (None, Some(b)) => Some((b, MemoryFrom::NodeMemTotal)),
        (None, None) => None,
    };
    let c = &job.counters;
    JobInput {
        jobid: job.jobid.clone(),
        user: job.user.clone(),
        name: job.name.clone(),
        source: source.to_string(),
        nodes: vec![NodeInput {
            node: node.hostname.clone(),
            start_time: job.start_time,
            end_time: job.end_time,
            cpus,
            memory,
            counts: Counts {
                cpu_seconds: seconds(c.cpu_ns),
                runqueue_wait_seconds: seconds(c.runqueue_wait_ns),
                context_switches: Switches {
                    voluntary: c.voluntary_switches,
                    involuntary: c.involuntary_switches,
                },
                processes_started: c.processes_started,
                threads_started: c.threads_started,
                execs: c.execs,
                processes_exited: c.process_exits,
                tasks: job.tasks,
                memory_rss_bytes: c.rss_bytes(),
                memory_rss_peak_bytes: c.rss_peak(),
                page_faults: c.page_faults,
                oom_kills: c.oom_kills,
                io_read_bytes: c.io_read_bytes,
                io_write_bytes: c.io_write_bytes,
                io_read_calls: c.io_read_calls,
                io_write_calls: c.io_write_calls,
                block_read_bytes: c.block_read_bytes,
                block_write_bytes: c.block_write_bytes,
                network: Network {
                    rx_bytes: c.net_rx_bytes,
                    tx_bytes: c.net_tx_bytes,
                    rx_packets: c.net_rx_packets,
                    tx_packets: c.net_tx_packets,
                },
            },
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let meminfo = "MemTotal:        8123456 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(8_123_456 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB"), None);
        assert_eq!(mem_total("MemTotal: lots"), None);
    }

    fn api_job(cpus: Option<u64>, limit: Option<u64>) -> JobJson {
        serde_json::from_value(serde_json::json!({
            "jobid": "42", "user": "alice", "uid": 1000, "name": "lammps",
            "launcher": "monitor", "labels": {}, "cgroup": "/monitor.slice/task-1-1",
            "state": "finished", "start_time": 100.0, "end_time": 160.0, "tasks": 0,
            "cpu_seconds": 30.5, "runqueue_wait_seconds": 0.5,
            "context_switches": {"voluntary": 3, "involuntary": 4},
            "processes_started": 1, "threads_started": 2, "execs": 1, "processes_exited": 1,
            "memory_rss_bytes": 0, "memory_rss_peak_bytes": 1048576, "page_faults": 9,
            "oom_kills": 0, "io_read_bytes": 10, "io_write_bytes": 20,
            "block_read_bytes": 0, "block_write_bytes": 4096,
            "network": {"rx_bytes": 1, "tx_bytes": 2, "rx_packets": 3, "tx_packets": 4},
            "cpus_allocated": cpus, "memory_limit_bytes": limit
        }))
        .unwrap()
    }

    #[test]
    fn the_allocation_comes_first_then_the_node() {
        let node = NodeFacts {
            hostname: "node01".into(),
            cpus: Some(64),
            mem_total_bytes: Some(256 << 30),
        };
        let given = input(&api_job(Some(4), Some(8 << 30)), &node, "test");
        let n = &given.nodes[0];
        assert_eq!(n.cpus, Some((4, CpusFrom::Cpuset)));
        assert_eq!(n.memory, Some((8 << 30, MemoryFrom::Limit)));
        assert_eq!((n.counts.cpu_seconds, n.end_time), (30.5, Some(160.0)));
        assert_eq!(n.counts.network.tx_packets, 4);
        let unlimited = input(&api_job(None, None), &node, "test");
        let n = &unlimited.nodes[0];
        assert_eq!(n.cpus, Some((64, CpusFrom::Node)));
        assert_eq!(n.memory, Some((256 << 30, MemoryFrom::NodeMemTotal)));
        assert_eq!(n.node, "node01");
    }
}
