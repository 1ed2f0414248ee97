//! A goal: a measured figure, the bound it must keep and how both are
//! written. One declaration judges the figure (PASS or MISS) and prints
//! the bound, in the section and in the goals table alike.

/// Which side of its threshold a figure must stay on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    AtMost,
    AtLeast,
}

/// How a figure and its threshold are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A fraction (0.01 is 1%), signed: how much slower a job ran.
    Slowdown,
    /// Percent of one CPU core.
    CorePercent,
    Milliseconds,
    /// Megabytes of 10^6 bytes.
    Megabytes,
    PerSecond,
}

impl Unit {
    fn measured(self, value: f64) -> String {
        match self {
            Self::Slowdown => format!("{:+.1}%", value * 100.0),
            Self::CorePercent => format!("{value:.3}% of one core"),
            Self::Milliseconds => format!("{value:.2} ms"),
            Self::Megabytes => format!("{value:.1} MB"),
            Self::PerSecond => format!("{value:.0}/s"),
        }
    }

    fn threshold(self, value: f64) -> String {
        match self {
            Self::Slowdown => format!("{:.0}%", value * 100.0),
            Self::CorePercent => format!("{value}%"),
            Self::Milliseconds => format!("{value} ms"),
            Self::Megabytes => format!("{value} MB"),
            Self::PerSecond => format!("{value:.0}/s"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub name: String,
    pub measured: f64,
    pub comparison: Comparison,
    pub threshold: f64,
    pub unit: Unit,
    /// Whatever else the goal asks for held (say, no registration failed).
    pub conditions_met: bool,
    /// Why the figure cannot be judged (the daemon did not do what was
    /// measured), shown after it.
    pub invalid: Option<&'static str>,
}

impl Goal {
    pub fn at_most(name: impl Into<String>, measured: f64, threshold: f64, unit: Unit) -> Self {
        Self::new(name.into(), measured, Comparison::AtMost, threshold, unit)
    }

    pub fn at_least(name: impl Into<String>, measured: f64, threshold: f64, unit: Unit) -> Self {
        Self::new(name.into(), measured, Comparison::AtLeast, threshold, unit)
    }

    fn new(
        name: String,
        measured: f64,
        comparison: Comparison,
        threshold: f64,
        unit: Unit,
    ) -> Self {
        Self {
            name,
            measured,
            comparison,
            threshold,
            unit,
            conditions_met: true,
            invalid: None,
        }
    }

    /// The goal is met only if `condition` holds too.
    pub fn provided(self, condition: bool) -> Self {
        Self {
            conditions_met: self.conditions_met && condition,
            ..self
        }
    }

    /// The figure cannot be judged, for `why` (if `Some`).
    pub fn invalid_if(self, why: Option<&'static str>) -> Self {
        Self {
            invalid: why,
            ..self
        }
    }

    /// The figure is on the right side of the threshold (a figure that is
    /// not a number is not) and the other conditions held.
    pub fn met(&self) -> bool {
        let within = match self.comparison {
            Comparison::AtMost => self.measured <= self.threshold,
            Comparison::AtLeast => self.measured >= self.threshold,
        };
        within && self.conditions_met
    }

    /// The figure in its unit.
    pub fn figure(&self) -> String {
        self.unit.measured(self.measured)
    }

    /// The figure as shown, with why it cannot be judged if it cannot.
    pub fn measured_text(&self) -> String {
        let text = self.figure();
        match self.invalid {
            Some(why) => format!("{text} ({why})"),
            None => text,
        }
    }

    /// The bound, e.g. `<= 20 ms`.
    pub fn target(&self) -> String {
        let sign = match self.comparison {
            Comparison::AtMost => "<=",
            Comparison::AtLeast => ">=",
        };
        format!("{sign} {}", self.unit.threshold(self.threshold))
    }

    /// PASS or MISS (noted when too few rounds ran to judge by them), or
    /// INVALID.
    pub fn verdict(&self, trusted: bool) -> &'static str {
        if self.invalid.is_some() {
            return "INVALID";
        }
        match (self.met(), trusted) {
            (true, true) => "PASS",
            (false, true) => "MISS",
            (true, false) => "PASS (too few rounds to judge)",
            (false, false) => "MISS (too few rounds to judge)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_declaration_judges_and_prints_the_bound() {
        let goal = Goal::at_most("scrape", 14.99, 20.0, Unit::Milliseconds);
        assert!(goal.met());
        assert_eq!(goal.measured_text(), "14.99 ms");
        assert_eq!(goal.target(), "<= 20 ms");
        assert_eq!(goal.verdict(true), "PASS");
        assert_eq!(goal.verdict(false), "PASS (too few rounds to judge)");
        let slow = Goal::at_most("scrape", 20.01, 20.0, Unit::Milliseconds);
        assert!(!slow.met());
        assert_eq!(slow.verdict(true), "MISS");
        assert_eq!(slow.verdict(false), "MISS (too few rounds to judge)");
    }

    #[test]
    fn the_bound_itself_passes_on_either_side() {
        assert!(Goal::at_most("x", 1.0, 1.0, Unit::CorePercent).met());
        assert!(Goal::at_least("x", 1000.0, 1000.0, Unit::PerSecond).met());
        assert!(!Goal::at_least("x", 999.6, 1000.0, Unit::PerSecond).met());
        assert!(!Goal::at_most("x", f64::NAN, 1.0, Unit::Megabytes).met());
    }

    #[test]
    fn units_write_figures_and_thresholds() {
        let cases = [
            (Unit::Slowdown, -0.002, 0.01, "-0.2%", "<= 1%"),
            (Unit::Slowdown, 0.019, 0.03, "+1.9%", "<= 3%"),
            (Unit::CorePercent, 0.94, 1.0, "0.940% of one core", "<= 1%"),
            (Unit::Milliseconds, 8.077, 15.0, "8.08 ms", "<= 15 ms"),
            (Unit::Megabytes, 58.24, 50.0, "58.2 MB", "<= 50 MB"),
        ];
        for (unit, measured, threshold, shown, target) in cases {
            let goal = Goal::at_most("x", measured, threshold, unit);
            assert_eq!(
                (goal.measured_text().as_str(), goal.target().as_str()),
                (shown, target)
            );
        }
        let rate = Goal::at_least("x", 2616.4, 1000.0, Unit::PerSecond);
        assert_eq!(rate.measured_text(), "2616/s");
        assert_eq!(rate.target(), ">= 1000/s");
    }

    #[test]
    fn other_conditions_and_invalid_figures() {
        let refused = Goal::at_most("p99", 1.0, 10.0, Unit::Milliseconds).provided(false);
        assert!(!refused.met());
        assert_eq!(refused.verdict(true), "MISS");
        let unmeasured =
            Goal::at_most("faults", 0.01, 0.03, Unit::Slowdown).invalid_if(Some("RSS not counted"));
        assert!(unmeasured.met());
        assert_eq!(unmeasured.verdict(true), "INVALID");
        assert_eq!(unmeasured.measured_text(), "+1.0% (RSS not counted)");
    }
}
