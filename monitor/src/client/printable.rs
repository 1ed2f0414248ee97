//! Text from the daemon made safe for a terminal. Job ids, names, labels,
//! user names and cgroup paths may come from any local user (a hello, a
//! directory name), so before they are printed: control characters (C0,
//! DEL, C1: escape sequences, OSC 8 links, cursor moves) and the Unicode
//! bidirectional controls (which reorder what follows, U+202E "right to
//! left override") are shown escaped, `\u{1b}`, instead of acted on.
use std::borrow::Cow;

/// Whether a terminal would act on `c` rather than show it.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}')
}

pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts_on_terminal(c) {
            shown.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        assert!(matches!(printable("lammps run 3 – ü"), Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_and_bidi_controls_are_shown_not_acted_on() {
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(
            printable("\x1b]8;;http://x\x07link"),
            "\\u{1b}]8;;http://x\\u{7}link"
        );
        assert_eq!(printable("job\u{202e}gpj.exe"), "job\\u{202e}gpj.exe");
        assert_eq!(printable("tab\there\u{9b}"), "tab\\u{9}here\\u{9b}");
    }
}
