//! A `--only` run merged into the last report: the benchmarks that ran
//! replace their marked sections and their rows of the goals table; every
//! other part stays as it was, found by its marker, never by its title.
use super::{
    Benchmark, GOALS, MACHINE, Report,
    markdown::{block, marked},
};

/// `existing` (the last RESULTS.md) with the sections and goals of the
/// benchmarks in `report` put in place of theirs, and the method brought
/// up to date. Without a marked goals table in `existing` (no report, or
/// one from before the markers), `report` is written whole.
pub fn merge(existing: &str, report: &Report) -> String {
    let Some(old_goals) = block(existing, GOALS) else {
        return report.markdown();
    };
    let stamp = format!(
        "_This section: `cargo xtask bench --only`, {}, {} rounds; the rest of the file is from an earlier run._\n\n",
        report.environment.date, report.rounds
    );
    let outcomes = report.outcomes();
    let ran = |bench: Benchmark| outcomes.iter().any(|(b, _)| *b == bench);
    let mut sections = String::new();
    for bench in Benchmark::ALL {
        if let Some((_, outcome)) = outcomes.iter().find(|(b, _)| *b == bench) {
            sections += &report.section_block(bench, *outcome, &stamp);
        } else if let Some(text) = block(existing, &bench.key()) {
            sections += &marked(&bench.key(), text);
        }
    }
    // The earlier rows of the benchmarks that did not run, then the new
    // ones, in section order (a stable sort keeps each one's own order).
    let mut rows: Vec<(Benchmark, Vec<String>)> = goal_rows(old_goals)
        .filter(|(bench, _)| !ran(*bench))
        .collect();
    rows.extend(report.goal_rows());
    rows.sort_by_key(|(bench, _)| bench.number());
    let machine = block(existing, MACHINE).map_or_else(|| report.machine_section(), str::to_string);
    report.document(
        &machine,
        &sections,
        rows.into_iter().map(|(_, row)| row).collect(),
    )
}

/// The rows of a goals table with the benchmark each belongs to, by its
/// key in the first cell; rows of benchmarks that exist no more are left out.
pub(super) fn goal_rows(table: &str) -> impl Iterator<Item = (Benchmark, Vec<String>)> + '_ {
    table.lines().filter_map(|line| {
        let cells: Vec<String> = line
            .strip_prefix("| ")?
            .strip_suffix(" |")?
            .split(" | ")
            .map(str::to_string)
            .collect();
        let bench = Benchmark::from_key(cells.first()?.strip_prefix('`')?.strip_suffix('`')?)?;
        Some((bench, cells))
    })
}
