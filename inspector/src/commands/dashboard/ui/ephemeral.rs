//! Pane 5: per destination, the local ports client connections hold toward
//! it against the namespace's range, under the most pressure first, and the
//! selected one in brief below; and a destination's detail (Enter here, or
//! on a connect() in pane 1): the range, the ports in use, when they free.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Color,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap},
};

use super::{Theme, age, heading};
use crate::{
    commands::dashboard::{
        app::{App, DestFacts, Pane},
        model::TIME_WAIT_NS,
    },
    model::ephemeral::{DestKey, DestRow},
    output::text::endpoint,
};

/// `in_use` of `size` as a bar `width` columns wide.
fn usage_bar(in_use: u32, size: Option<u32>, width: usize) -> (String, String) {
    let filled = match size {
        Some(0) => width,
        Some(n) => ((f64::from(in_use) / f64::from(n)) * width as f64)
            .ceil()
            .min(width as f64) as usize,
        None => 0,
    };
    ("█".repeat(filled), "░".repeat(width - filled))
}

/// Callers by connect() calls, then who held the connections found at
/// start (`pre`), at most `n`.
fn owners(app: &App, r: &DestRow, n: usize) -> String {
    let mut out: Vec<String> = r
        .owners
        .iter()
        .take(n)
        .map(|(p, c, _)| format!("{p} {c}"))
        .collect();
    if r.pre > 0 {
        let pre: Vec<String> = app
            .pre_owners(r)
            .take(n.saturating_sub(out.len()).max(1))
            .map(|(p, c, _)| format!("{p} {c}"))
            .collect();
        out.push(format!("pre {}", pre.join(", ")).trim_end().to_owned());
    }
    if out.is_empty() {
        "-".to_owned()
    } else {
        out.join(", ")
    }
}

fn range_text(r: &DestRow) -> String {
    match r.range {
        Some(g) => format!(
            "ip_local_port_range {}-{} less {} reserved = {} ports",
            g.low,
            g.high,
            g.reserved,
            g.size()
        ),
        None => "range not read yet".to_owned(),
    }
}

/// `10 of 10 ports (7 live, 3 TIME_WAIT)`.
fn in_use_text(r: &DestRow) -> String {
    let of = r
        .range
        .map_or_else(String::new, |g| format!(" of {}", g.size()));
    format!(
        "{}{of} ports ({} live, {} TIME_WAIT)",
        r.in_use,
        r.in_use - r.time_wait.min(r.in_use),
        r.time_wait
    )
}

/// When its TIME_WAIT ports are free again, seen at `now_ns`: `12 s`, or
/// `12-58 s` from the oldest to the newest.
fn tw_free_text(f: &DestFacts, now_ns: u64) -> Option<String> {
    let (oldest, newest) = f.tw_entered.filter(|_| f.row.time_wait > 0)?;
    let left =
        |entered: u64| TIME_WAIT_NS.saturating_sub(now_ns.saturating_sub(entered)) as f64 / 1e9;
    let (first, last) = (left(oldest), left(newest));
    Some(if f.row.time_wait == 1 || (last - first) < 0.5 {
        format!("free in {first:.0} s")
    } else {
        format!("free in {first:.0}-{last:.0} s")
    })
}

fn failures_text(r: &DestRow) -> String {
    if r.failures.is_empty() {
        "none failed".to_owned()
    } else {
        r.failures
            .iter()
            .map(|(e, n)| format!("{e} x{n}"))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

fn counted(owners: impl Iterator<Item = (u32, String, u64)>) -> String {
    owners
        .map(|(p, c, n)| format!("{p} {c} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A destination's local ports, as a detail view tells them: when a
/// connect() toward it failed (`at`: when, and what was captured then),
/// and now: the range, the ports in use, live or in TIME_WAIT, when they
/// free, those found at start, and who holds them.
pub(super) fn destination_lines(
    app: &App,
    t: &Theme,
    key: &DestKey,
    at: Option<(u64, Option<&DestFacts>)>,
    lines: &mut Vec<Line<'static>>,
) {
    let name = format!(
        "{} (netns {})",
        endpoint(key.addr, key.port),
        app.ns_name(key.netns)
    );
    if let Some((ts_ns, then)) = at {
        lines.push(Line::default());
        lines.push(heading(
            t,
            format!(
                "Local ports toward {name} when it failed ({} ago)",
                age(&app.model, ts_ns)
            ),
        ));
        match then {
            Some(f) => {
                lines.push(Line::from(format!("  in use: {}", in_use_text(&f.row))));
                if let Some(free) = tw_free_text(f, ts_ns) {
                    lines.push(Line::from(format!("  TIME_WAIT: {free}")));
                }
            }
            None => lines.push(Line::from(Span::styled(
                "  none in use that the dashboard knew of",
                t.dim(),
            ))),
        }
    }
    lines.push(Line::default());
    lines.push(heading(t, format!("Local ports toward {name} now")));
    let Some(f) = app.dest_facts(key) else {
        lines.push(Line::from(Span::styled(
            "  none in use that the dashboard knows of",
            t.dim(),
        )));
        return;
    };
    let r = &f.row;
    lines.push(Line::from(format!("  range: {}", range_text(r))));
    lines.push(Line::from(format!("  in use: {}", in_use_text(r))));
    if r.in_use > r.time_wait {
        lines.push(Line::from(
            "  live: each frees its port when its connection closes",
        ));
    }
    if let Some(free) = tw_free_text(&f, app.model.now_ns) {
        lines.push(Line::from(format!("  TIME_WAIT: {free}")));
    }
    if r.pre > 0 {
        let by = counted(app.pre_owners(r).cloned());
        lines.push(Line::from(if by.is_empty() {
            format!("  found at start: {}", r.pre)
        } else {
            format!("  found at start: {}, held by {by}", r.pre)
        }));
    }
    lines.push(Line::from(format!(
        "  connect(): {} calls; {}",
        r.connects,
        failures_text(r)
    )));
    let callers = counted(r.owners.iter().cloned());
    if !callers.is_empty() {
        lines.push(Line::from(format!("  callers: {callers}")));
    }
}

fn dest_name(app: &App, r: &DestRow) -> String {
    let d = endpoint(r.key.addr, r.key.port);
    if app.multi_ns {
        format!("{d} {}", app.ns_name(r.key.netns))
    } else {
        d
    }
}

pub(super) fn render_ephemeral(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let [table_area, detail] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(area);
    let rows_data = app.ephemeral_rows();
    let wide = area.width >= 120;
    let bar_w = if wide { 30 } else { 12 };
    let height = usize::from(table_area.height.saturating_sub(2)).max(1);
    let selected = app.selected[4].min(rows_data.len().saturating_sub(1));
    let start = selected.saturating_sub(height - 1);
    let window = &rows_data[start.min(rows_data.len())..(start + height).min(rows_data.len())];
    let rows = window.iter().map(|r| {
        let size = r.range.map(|g| g.size());
        let (full, empty) = usage_bar(r.in_use, size, bar_w);
        let count = format!(
            " {}/{}",
            r.in_use,
            size.map_or("?".to_owned(), |n| n.to_string())
        );
        let bar_style = match r.share() {
            Some(s) if s >= 0.8 => t.failure(),
            _ => t.fg(Color::Cyan),
        };
        let tw = if r.in_use == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.0}%",
                f64::from(r.time_wait) * 100.0 / f64::from(r.in_use)
            )
        };
        let owners = owners(app, r, if wide { 3 } else { 1 });
        let failed = r.failed();
        let row = Row::new(vec![
            Cell::from(dest_name(app, r)),
            Cell::from(Line::from(vec![
                Span::styled(full, bar_style),
                Span::styled(empty, t.dim()),
                Span::raw(count),
            ])),
            Cell::from(tw),
            Cell::from(if failed == 0 {
                "0".to_owned()
            } else {
                failed.to_string()
            }),
            Cell::from(owners),
        ]);
        if failed > 0 {
            row.style(t.failure())
        } else {
            row
        }
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(if app.multi_ns { 24 } else { 15 }),
            Constraint::Length(bar_w as u16 + 12),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new([
            "DESTINATION",
            "PORTS IN USE / RANGE",
            "TW",
            "FAILED",
            "OWNERS",
        ])
        .style(t.dim()),
    )
    .row_highlight_style(t.selected())
    .block(Block::default().borders(Borders::TOP).title(format!(
        " {} ({} destinations, fullest first; TW: share in TIME_WAIT) ",
        Pane::Ephemeral.title(),
        rows_data.len(),
    )));
    let mut state = TableState::default();
    if !rows_data.is_empty() {
        state.select(Some(selected - start));
    }
    f.render_stateful_widget(table, table_area, &mut state);
    let text = match rows_data.get(selected) {
        Some(r) => {
            let pre = if r.pre > 0 {
                format!("; {} found at start", r.pre)
            } else {
                String::new()
            };
            let mut owners = counted(r.owners.iter().cloned());
            if r.pre > 0 {
                let by = counted(app.pre_owners(r).cloned());
                if !by.is_empty() {
                    if !owners.is_empty() {
                        owners.push_str("; ");
                    }
                    owners.push_str(&format!("held at start by {by}"));
                }
            }
            vec![
                Line::from(format!(
                    "{} netns {}: {} local ports in use ({} live, {} TIME_WAIT)",
                    endpoint(r.key.addr, r.key.port),
                    app.ns_name(r.key.netns),
                    r.in_use,
                    r.in_use - r.time_wait.min(r.in_use),
                    r.time_wait
                )),
                Line::from(range_text(r)),
                Line::from(format!(
                    "connect(): {} calls; {}{pre}",
                    r.connects,
                    failures_text(r)
                )),
                Line::from(format!(
                    "owners: {}",
                    if owners.is_empty() { "-" } else { &owners }
                )),
            ]
        }
        None => vec![Line::from(Span::styled(
            "No client connection seen yet, nor found at start. Scenarios 19 to 22 make some (4, Enter).",
            t.dim(),
        ))],
    };
    f.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: true }).block(
            Block::default()
                .borders(Borders::TOP)
                .title(" Destination "),
        ),
        detail,
    );
}
