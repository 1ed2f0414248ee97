//! Markdown pieces of the report: tables, number formats, and the marked
//! blocks each part of bench/RESULTS.md sits in, so a later `--only` run
//! finds a part by its key rather than by its title.
use std::fmt::Write as _;

/// `text` between the markers of `key`. `text` should end with a blank
/// line, as every part does; the block ends with one too.
pub fn marked(key: &str, text: &str) -> String {
    let blank = if text.ends_with("\n\n") { "" } else { "\n" };
    format!("{}\n{text}{blank}{}\n\n", open(key), close(key))
}

/// The text between the markers of `key` in `document`, if both are there.
pub fn block<'a>(document: &'a str, key: &str) -> Option<&'a str> {
    let open = format!("{}\n", open(key));
    let start = document.find(&open)? + open.len();
    let length = document[start..].find(&close(key))?;
    Some(&document[start..start + length])
}

fn open(key: &str) -> String {
    format!("<!-- bench:{key} -->")
}

fn close(key: &str) -> String {
    format!("<!-- /bench:{key} -->")
}

pub fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

pub fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// KiB to megabytes of 10^6 bytes.
pub fn mb(kib: u64) -> f64 {
    mb_f(kib as f64)
}

pub fn mb_f(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_block_is_found_by_its_key() {
        let document = format!(
            "intro\n\n{}{}",
            marked("scale", "## 8. Scale\n\nfigures\n\n"),
            marked("io", "## 3. IO\n\nno blank line at the end\n")
        );
        assert_eq!(
            block(&document, "scale"),
            Some("## 8. Scale\n\nfigures\n\n")
        );
        assert_eq!(
            block(&document, "io"),
            Some("## 3. IO\n\nno blank line at the end\n\n")
        );
        assert_eq!(block(&document, "io-outside"), None);
        // Written again, a block is the same.
        let scale = block(&document, "scale").unwrap();
        assert!(document.contains(&marked("scale", scale)));
        // An open marker without its close is no block.
        assert_eq!(block("<!-- bench:cost -->\n## 1. Cost\n", "cost"), None);
    }
}
