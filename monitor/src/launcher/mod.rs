//! The launcher socket: trusted launchers (`monitor run`, Apptainer's
//! starter, srun/mpirun wrappers) connect, and the daemon puts them and
//! their descendants into a job.
//!
//! Identity comes from the kernel only (SO_PEERCRED, SO_PEERPIDFD); what a
//! peer may claim is bounded by that identity: job ids are per uid, only
//! root may name another user. The executable check keeps unknown programs
//! from making jobs at all; it is not what the claims rest on.
pub mod adopt;
pub mod hello;
pub mod limits;
pub mod peer;
pub mod pidfd;
pub mod placement;
pub mod rate;
pub mod server;
pub mod socket;
pub mod stats;
pub mod trust;
