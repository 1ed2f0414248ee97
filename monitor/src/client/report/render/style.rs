//! How the text report looks: colour, bars, and the health a share's
//! colour shows.
use super::format::percent;
use crate::{
    cli::ColorChoice,
    client::report::figures::{HIGH_WAIT_SHARE, LOW_EFFICIENCY, MEMORY_NEAR_LIMIT},
};

/// Width of a bar, in characters.
const BAR_WIDTH: usize = 20;

/// What the text may use beyond plain characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
    pub bars: bool,
}

impl Style {
    /// `auto`: bars on a terminal, and colour there unless NO_COLOR is set
    /// (to anything non-empty, as no-color.org asks).
    pub fn choose(choice: ColorChoice, terminal: bool, no_color: bool) -> Self {
        match choice {
            ColorChoice::Always => Self {
                colour: true,
                bars: true,
            },
            ColorChoice::Never => Self {
                colour: false,
                bars: false,
            },
            ColorChoice::Auto => Self {
                colour: terminal && !no_color,
                bars: terminal,
            },
        }
    }

    pub(super) fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub(super) fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    /// A share with its bar (on a terminal), coloured by how it stands.
    pub(super) fn share(self, fraction: f64, health: Health) -> String {
        let text = percent(fraction);
        let code = match health {
            Health::Good => "32",
            Health::Fair => "33",
            Health::Poor => "31",
        };
        if self.bars {
            format!(
                "{} {}",
                self.paint(code, &bar(fraction, BAR_WIDTH)),
                self.paint(code, &format!("{text:>6}"))
            )
        } else {
            text
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    Good,
    Fair,
    Poor,
}

pub(super) fn efficiency_health(efficiency: f64) -> Health {
    if efficiency < LOW_EFFICIENCY {
        Health::Poor
    } else if efficiency < 2.0 * LOW_EFFICIENCY {
        Health::Fair
    } else {
        Health::Good
    }
}

pub(super) fn memory_health(ratio: f64) -> Health {
    if ratio > MEMORY_NEAR_LIMIT {
        Health::Poor
    } else if ratio > 0.75 {
        Health::Fair
    } else {
        Health::Good
    }
}

pub(super) fn wait_health(share: f64) -> Health {
    if share > HIGH_WAIT_SHARE {
        Health::Poor
    } else if share > HIGH_WAIT_SHARE / 4.0 {
        Health::Fair
    } else {
        Health::Good
    }
}

/// A bar of `width` characters in unicode blocks, in eighths; the rest light shade.
pub(super) fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut out = "█".repeat(full);
    if full < width {
        if part > 0 {
            out.push(PARTS[part]);
        }
        let used = full + usize::from(part > 0);
        out.push_str(&"░".repeat(width - used));
    }
    out
}
