//! Pane 2: per port, sockets by state with their owners, TIME_WAIT with
//! its time left, and the TIME_WAIT entries and exits of the last minute.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Color,
    widgets::{Block, Borders, Cell, Row, Sparkline, Table, TableState},
};

use super::{Theme, secs};
use crate::{
    commands::dashboard::app::{App, Pane},
    model::record::proto_str,
};

pub(super) fn render_ports(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let [table_area, spark_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(4)]).areas(area);
    let rows_data = app.port_rows();
    let height = usize::from(table_area.height.saturating_sub(2)).max(1);
    let selected = app.selected[1].min(rows_data.len().saturating_sub(1));
    let start = selected.saturating_sub(height - 1);
    let window = &rows_data[start.min(rows_data.len())..(start + height).min(rows_data.len())];
    let rows = window.iter().map(|row| {
        let states = row
            .states
            .iter()
            .map(|(s, n)| format!("{} {n}", s.short_name()))
            .collect::<Vec<_>>()
            .join(" ");
        let owners = if row.owners.is_empty() {
            row.last_owner
                .as_ref()
                .map_or("-".to_owned(), |(p, c)| format!("(was {p} {c})"))
        } else {
            row.owners
                .iter()
                .map(|(p, c)| format!("{p} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let owners = if row.pre {
            format!("pre {owners}")
        } else {
            owners
        };
        let port = if app.multi_ns {
            format!("{} {}", row.key.port, app.ns_name(row.key.netns))
        } else {
            row.key.port.to_string()
        };
        Row::new(vec![
            Cell::from(proto_str(row.key.proto)),
            Cell::from(port),
            Cell::from(states),
            Cell::from(row.time_wait.to_string()),
            Cell::from(format!(
                "{}/{}",
                secs(row.tw_left_max),
                secs(row.tw_left_min)
            )),
            Cell::from(owners),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Length(if app.multi_ns { 17 } else { 6 }),
            Constraint::Min(18),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Min(14),
        ],
    )
    .header(
        Row::new([
            "PROT",
            "PORT",
            "SOCKETS BY STATE",
            "TW",
            "TW LEFT",
            "OWNERS",
        ])
        .style(t.dim()),
    )
    .row_highlight_style(t.selected())
    .block(Block::default().borders(Borders::TOP).title(format!(
        " {} ({} ports, {} TW; sort: {} (s); TW LEFT newest/oldest) ",
        Pane::Ports.title(),
        rows_data.len(),
        app.model.time_wait.len(),
        app.port_sort.name()
    )));
    let mut state = TableState::default();
    if !rows_data.is_empty() {
        state.select(Some(selected - start));
    }
    f.render_stateful_widget(table, table_area, &mut state);
    let [enter, exit] =
        Layout::vertical([Constraint::Length(2), Constraint::Length(2)]).areas(spark_area);
    let entries: Vec<u64> = app.model.tw_entries.iter().copied().collect();
    let exits: Vec<u64> = app.model.tw_exits.iter().copied().collect();
    f.render_widget(
        Sparkline::default()
            .data(&entries)
            .style(t.fg(Color::Yellow))
            .block(Block::default().title(format!(
                " TIME_WAIT entries/s (60 s, last {}) ",
                entries.last().unwrap_or(&0)
            ))),
        enter,
    );
    f.render_widget(
        Sparkline::default()
            .data(&exits)
            .style(t.fg(Color::Green))
            .block(Block::default().title(format!(
                " TIME_WAIT exits/s (last {}) ",
                exits.last().unwrap_or(&0)
            ))),
        exit,
    );
}
