//! Pane 5: per destination, the local ports client connections hold toward
//! it against the namespace's range, and the selected one in brief below.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Color,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap},
};

use super::Theme;
use crate::{
    commands::dashboard::app::{App, Pane},
    model::ephemeral::DestRow,
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
        let owners = r
            .owners
            .iter()
            .take(if wide { 3 } else { 1 })
            .map(|(p, c, _)| format!("{p} {c}"))
            .collect::<Vec<_>>()
            .join(", ");
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
            Cell::from(if owners.is_empty() {
                "-".to_owned()
            } else {
                owners
            }),
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
        " {} ({} destinations; TW: share in TIME_WAIT) ",
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
            let range = match r.range {
                Some(g) => format!(
                    "ip_local_port_range {}-{} less {} reserved = {} ports",
                    g.low,
                    g.high,
                    g.reserved,
                    g.size()
                ),
                None => "range not read yet".to_owned(),
            };
            let failures = if r.failures.is_empty() {
                "none failed".to_owned()
            } else {
                r.failures
                    .iter()
                    .map(|(e, n)| format!("{e} x{n}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let owners = r
                .owners
                .iter()
                .map(|(p, c, n)| format!("{p} {c} x{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                Line::from(format!(
                    "{} netns {}: {} local ports in use ({} live, {} TIME_WAIT)",
                    endpoint(r.key.addr, r.key.port),
                    app.ns_name(r.key.netns),
                    r.in_use,
                    r.in_use - r.time_wait.min(r.in_use),
                    r.time_wait
                )),
                Line::from(range),
                Line::from(format!("connect(): {} calls; {failures}", r.connects)),
                Line::from(format!(
                    "owners: {}",
                    if owners.is_empty() { "-" } else { &owners }
                )),
            ]
        }
        None => vec![Line::from(Span::styled(
            "No TCP connect() seen yet. Scenarios 19 to 22 make some (4, Enter).",
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
