//! The report's words for numbers, times and states.
use crate::client::{jobs::elapsed, report::figures::State};

/// `61.2%`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// `4.512 s`: CPU and wait times to the millisecond, under a second to
/// the microsecond (cpu.stat's own resolution): a 2 ms job shows its 2 ms.
pub fn seconds(value: f64) -> String {
    if value.abs() < 1.0 {
        format!("{value:.6} s")
    } else {
        format!("{value:.3} s")
    }
}

/// Width notes are wrapped to.
pub(super) const NOTE_WIDTH: usize = 96;

/// `text` in lines of at most `width` characters (a longer word stays
/// whole), the first after `first`, the others after `indent`.
pub(super) fn wrap(text: &str, first: &str, indent: &str, width: usize) -> String {
    let mut out = String::from(first);
    let mut column = first.chars().count();
    let start = column;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if column > start && column + 1 + len > width {
            out.push('\n');
            out.push_str(indent);
            column = indent.chars().count();
        } else if column > start {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += len;
    }
    out
}

pub(super) fn state(state: State) -> &'static str {
    match state {
        State::Running => "running",
        State::Finished => "finished",
    }
}

/// `00:12:07 (727.0 s)`, or `0.33s` for a short time.
pub(super) fn duration(seconds: f64) -> String {
    if seconds < 60.0 {
        elapsed(seconds)
    } else {
        format!("{} ({seconds:.1} s)", elapsed(seconds))
    }
}

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
