//! The BTF reader: arbitrary bytes as the kernel's BTF blob, then every
//! lookup the daemon makes in it at start (the programs' kernel layout),
//! and each one on its own so that one missing struct hides no other.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::kernel::{btf::Btf, offsets::layout_from};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let _ = layout_from(&btf);
    for (strukt, path) in [
        ("task_struct", &["se", "sum_exec_runtime"][..]),
        ("task_struct", &["sched_info", "run_delay"]),
        ("task_struct", &["signal"]),
        ("task_io_accounting", &["write_bytes"]),
        ("css_set", &["dfl_cgrp"]),
        ("mm_struct", &["rss_stat"]),
        ("percpu_counter", &["count"]),
    ] {
        let _ = btf.member_offset(strukt, path);
        let _ = btf.member_struct_name(strukt, path);
        let _ = btf.struct_size(strukt);
    }
    let _ = btf.tracepoint_args("sched_process_exit");
});
