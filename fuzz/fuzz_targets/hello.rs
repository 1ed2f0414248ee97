//! The launcher hello: what a launcher sends on the socket, parsed as the
//! server hands it over (up to the first newline, under MAX_HELLO bytes),
//! for a root and a non-root peer, within the default size limits and
//! within small ones, and the refusal written back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::launcher::hello::{Hello, HelloLimits, MAX_HELLO, Reply};

/// Small enough for short inputs to reach every size check.
const SMALL: HelloLimits = HelloLimits {
    name: 8,
    label_name: 4,
    label_value: 8,
};

fuzz_target!(|data: &[u8]| {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.len() >= MAX_HELLO {
        return;
    }
    for peer_is_root in [false, true] {
        for limits in [HelloLimits::default(), SMALL] {
            if let Err(e) = Hello::parse_within(line, peer_is_root, &limits) {
                assert!(Reply::error(e).line().ends_with('\n'));
            }
        }
    }
});
