//! `monitor`: the node daemon and its command-line clients (see lib.rs).
fn main() -> std::process::ExitCode {
    monitor::main()
}
