//! Pinning what a fresh load attaches, so the programs outlive the daemon.
use std::path::PathBuf;

use aya::programs::links::{FdLink, PinnedLink};

use super::ProbeError;
use crate::kernel::pins::PinSet;

/// Where this run's programs, links and maps are pinned, if anywhere.
#[derive(Default)]
pub(super) struct Pinning {
    /// The set being pinned by a fresh load, until
    /// [`Probes::commit_pins`](super::Probes::commit_pins).
    pub(super) staging: Option<PinSet>,
    /// The committed set (reattached to, or committed by this run).
    pub(super) dir: Option<PathBuf>,
    /// Pinned links: the pins keep them attached after the daemon exits.
    pub(super) links: Vec<PinnedLink>,
    /// Links kept only by the daemon (the iterator's, when not pinning).
    pub(super) unpinned: Vec<FdLink>,
    pub(super) links_per_program: std::collections::HashMap<&'static str, usize>,
}

impl Pinning {
    /// Pins `link` of `program` (when pinning; otherwise the program keeps it).
    pub(super) fn pin_link(
        &mut self,
        program: &'static str,
        link: FdLink,
    ) -> Result<(), ProbeError> {
        let Some(set) = &self.staging else {
            return Ok(());
        };
        // Numbered per program, so a program's first link has a known name.
        let n = self.links_per_program.entry(program).or_default();
        let path = set.link_path(program, *n);
        *n += 1;
        let pinned = link.pin(&path).map_err(|source| ProbeError::Pin {
            what: "link",
            path,
            source,
        })?;
        self.links.push(pinned);
        Ok(())
    }

    /// Pins a link taken from its program (when pinning).
    pub(super) fn pin_taken<L>(&mut self, program: &'static str, link: L) -> Result<(), ProbeError>
    where
        FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
    {
        let link = FdLink::try_from(link).map_err(|source| ProbeError::Link { program, source })?;
        self.pin_link(program, link)
    }

    pub(super) fn pin_program(
        &self,
        name: &'static str,
        program: &mut aya::programs::Program,
    ) -> Result<(), ProbeError> {
        let Some(set) = &self.staging else {
            return Ok(());
        };
        let path = set.program_path(name);
        program.pin(&path).map_err(|source| ProbeError::Pin {
            what: "program",
            path,
            source,
        })
    }
}
