//! The daemon's working parts below the wiring: the sample thread and what it
//! keeps (the finished-jobs cap, the user-name cache). `crate::service`
//! assembles them with the sockets and the web server.
mod finished_cap;
pub mod sampler;
mod users;
