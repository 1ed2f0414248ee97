//! The host facts the daemon depends on: privileges, tracefs, cgroupfs.
pub mod cgroupfs;
pub mod duration;
pub mod privileges;
pub mod tracefs;
