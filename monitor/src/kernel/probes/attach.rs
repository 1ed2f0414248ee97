//! Attaching the loaded programs to their hooks (and pinning each link
//! when pinning): the cgroup events first, then the rest.
use std::{fs::File, os::fd::AsFd, path::Path};

use aya::{
    maps::Map,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, Iter,
        RawTracePoint, TracePoint, links::FdLink,
    },
};

use super::{
    BTF_TRACEPOINTS, CGROUP_SKBS, CGROUP_SOCKS, ProbeError, Probes, RAW_TRACEPOINTS, TASK_ITER,
    TRACEPOINTS, TRACKED_TASK_ITER,
};
use crate::kernel::task_iter::TaskIterator;

impl Probes {
    /// Attaches the cgroup event programs only: call [`Self::attach_rest`]
    /// after the initial walk of the monitored root.
    pub fn attach_cgroup_events(&mut self) -> Result<(), ProbeError> {
        for (program, category, name) in &TRACEPOINTS[..2] {
            self.attach_tracepoints(program, category, &[name])?;
        }
        Ok(())
    }

    /// Attaches the task, memory and network programs, and the task
    /// iterator. `cgroup_v2_root` is the mount point of the v2 hierarchy.
    pub fn attach_rest(&mut self, cgroup_v2_root: &Path) -> Result<(), ProbeError> {
        for (program, category, name) in &TRACEPOINTS[2..] {
            self.attach_tracepoints(program, category, &[name])?;
        }
        let root = File::open(cgroup_v2_root).map_err(|source| ProbeError::CgroupRoot {
            path: cgroup_v2_root.to_path_buf(),
            source,
        })?;
        for (program, attach_type) in CGROUP_SKBS {
            self.attach_cgroup_skb(program, attach_type, &root)?;
        }
        for program in CGROUP_SOCKS {
            self.attach_cgroup_sock(program, &root)?;
        }
        for name in RAW_TRACEPOINTS {
            self.attach_raw_tracepoint(name)?;
        }
        for name in BTF_TRACEPOINTS {
            self.attach_btf_tracepoint(name)?;
        }
        self.attach_task_iter()?;
        self.attach_tracked_task_iter()
    }

    /// One program on several tracepoints of a category.
    fn attach_tracepoints(
        &mut self,
        program: &'static str,
        category: &str,
        names: &[&str],
    ) -> Result<(), ProbeError> {
        let (tracepoint, pinning) = self.program::<TracePoint>(program)?;
        for name in names {
            let id = tracepoint
                .attach(category, name)
                .map_err(|source| ProbeError::Program {
                    name: program,
                    source,
                })?;
            if pinning.staging.is_some() {
                let link = tracepoint
                    .take_link(id)
                    .map_err(|source| ProbeError::Program {
                        name: program,
                        source,
                    })?;
                pinning.pin_taken(program, link)?;
            }
        }
        log::debug!(
            "attached {program} to {} {category} tracepoints",
            names.len()
        );
        Ok(())
    }

    fn attach_cgroup_skb(
        &mut self,
        name: &'static str,
        attach_type: CgroupSkbAttachType,
        root: &File,
    ) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<CgroupSkb>(name)?;
        // A BPF link in single mode: the mode this kernel accepts for the
        // root (see TOOLCHAIN notes).
        let id = program
            .attach(root, attach_type, CgroupAttachMode::Single)
            .map_err(|source| ProbeError::Program { name, source })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_taken(name, link)?;
        }
        log::debug!("attached {name} to the cgroup v2 root");
        Ok(())
    }

    fn attach_cgroup_sock(&mut self, name: &'static str, root: &File) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<CgroupSock>(name)?;
        let id = program
            .attach(root, CgroupAttachMode::Single)
            .map_err(|source| ProbeError::Program { name, source })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_taken(name, link)?;
        }
        log::debug!("attached {name} to the cgroup v2 root");
        Ok(())
    }

    fn attach_raw_tracepoint(&mut self, name: &'static str) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<RawTracePoint>(name)?;
        let id = program
            .attach(name)
            .map_err(|source| ProbeError::RawTracepoint {
                program: name,
                tracepoint: name,
                source,
            })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_link(name, FdLink::from(link))?;
        }
        log::debug!("attached {name} to raw tracepoint {name}");
        Ok(())
    }

    fn attach_btf_tracepoint(&mut self, name: &'static str) -> Result<(), ProbeError> {
        let (program, pinning) = self.program::<BtfTracePoint>(name)?;
        let id = program
            .attach()
            .map_err(|source| ProbeError::Program { name, source })?;
        if pinning.staging.is_some() {
            let link = program
                .take_link(id)
                .map_err(|source| ProbeError::Program { name, source })?;
            pinning.pin_link(name, FdLink::from(link))?;
        }
        log::debug!("attached {name} to BTF tracepoint {name}");
        Ok(())
    }

    fn attach_task_iter(&mut self) -> Result<(), ProbeError> {
        let (iter, _) = self.program::<Iter>(TASK_ITER)?;
        let id = iter.attach().map_err(|source| ProbeError::Program {
            name: TASK_ITER,
            source,
        })?;
        let link = iter.take_link(id).map_err(|source| ProbeError::Program {
            name: TASK_ITER,
            source,
        })?;
        let link = FdLink::try_from(link).map_err(|source| ProbeError::Link {
            program: TASK_ITER,
            source,
        })?;
        self.iterator = Some(TaskIterator::new(&link)?);
        if self.pinning.staging.is_some() {
            self.pinning.pin_link(TASK_ITER, link)?;
        } else {
            // Unpinned: the link lives as long as the daemon.
            self.pinning.unpinned.push(link);
        }
        log::debug!("task iterator attached");
        Ok(())
    }

    /// Links the walk of tracked tasks to TASK_STATE, pinned when pinning
    /// (the link keeps the map).
    fn attach_tracked_task_iter(&mut self) -> Result<(), ProbeError> {
        let ebpf = self.ebpf.as_mut().ok_or(ProbeError::NotLoaded)?;
        let map = match ebpf.map("TASK_STATE") {
            Some(Map::HashMap(data)) => data.fd().as_fd(),
            _ => return Err(ProbeError::MissingMap("TASK_STATE")),
        };
        let program = ebpf
            .program(TRACKED_TASK_ITER)
            .ok_or(ProbeError::MissingProgram(TRACKED_TASK_ITER))?;
        let program = program.fd().map_err(|source| ProbeError::Program {
            name: TRACKED_TASK_ITER,
            source,
        })?;
        let iterator = TaskIterator::over_map(program.as_fd(), map)?;
        if let Some(set) = &self.pinning.staging {
            iterator.pin(&set.link_path(TRACKED_TASK_ITER, 0))?;
        }
        self.tracked = Some(iterator);
        log::debug!("walk of tracked tasks attached");
        Ok(())
    }
}
