//! Client commands: they talk to the daemon over its launcher socket.
pub mod run;
