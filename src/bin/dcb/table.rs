//! Breakers as a table for people.

use distributed_circuit_breaker::ops::format_duration;
use distributed_circuit_breaker::store::BreakerInfo;

const HEADER: [&str; 8] = [
    "NAME",
    "STATE",
    "GENERATION",
    "FAIL%",
    "CALLS",
    "LEFT",
    "FORCED-BY",
    "REASON",
];

/// One row's cells.
fn row(info: &BreakerInfo) -> [String; 8] {
    let note = info.note.as_ref();
    [
        info.name.clone(),
        info.state.to_string(),
        info.generation.to_string(),
        info.failure_rate()
            .map_or_else(|| "-".to_owned(), |r| format!("{:.1}", r * 100.0)),
        info.calls.to_string(),
        left(info),
        note.and_then(|n| n.actor.clone())
            .unwrap_or_else(|| "-".to_owned()),
        note.and_then(|n| n.reason.clone())
            .unwrap_or_else(|| "-".to_owned()),
    ]
}

/// Time left in a break or a forced state.
pub(crate) fn left(info: &BreakerInfo) -> String {
    if info.forced_until_reset {
        "until reset".to_owned()
    } else if info.remaining.is_zero() {
        "-".to_owned()
    } else {
        format_duration(info.remaining)
    }
}

/// Aligned columns, the last one free.
pub(crate) fn table(infos: &[BreakerInfo]) -> String {
    let rows: Vec<[String; 8]> = infos.iter().map(row).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One breaker, a field per line.
pub(crate) fn detail(info: &BreakerInfo) -> String {
    let note = info.note.as_ref();
    let rate = info
        .failure_rate()
        .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let mut lines = vec![
        ("name", info.name.clone()),
        ("state", info.state.to_string()),
        ("generation", info.generation.to_string()),
        ("time left", left(info)),
        (
            "window",
            format!(
                "{} calls, {} failures ({rate}), {} slow",
                info.calls, info.failures, info.slow
            ),
        ),
        ("failure run", info.consecutive_failures.to_string()),
    ];
    if let Some(n) = note {
        lines.push((
            "forced by",
            n.actor.clone().unwrap_or_else(|| "-".to_owned()),
        ));
        lines.push(("reason", n.reason.clone().unwrap_or_else(|| "-".to_owned())));
        lines.push((
            "forced at",
            humantime::format_rfc3339_seconds(n.at).to_string(),
        ));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{k:<12}{v}\n"))
        .collect()
}
