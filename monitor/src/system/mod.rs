//! The host facts the daemon depends on: privileges, tracefs, cgroupfs, bpffs.
pub mod bpffs;
pub mod cgroupfs;
pub mod duration;
pub mod favordynmods;
pub mod ids;
pub mod log_every;
pub mod memory;
pub mod priority;
pub mod privileges;
pub mod secure_dir;
pub mod shares;
pub mod time;
pub mod token_bucket;
pub mod tracefs;
pub mod vital_thread;
pub mod wake;
