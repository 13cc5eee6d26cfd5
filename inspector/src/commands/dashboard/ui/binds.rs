//! Pane 1: bind/listen/connect decisions, failures pinned on top with a
//! count per errno, runs of identical decisions folded, the selected one in
//! brief below.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap},
};

use super::{Theme, age, asked, decision_result, who};
use crate::{
    commands::dashboard::app::{App, DecisionRow, PIN_NS, Pane},
    kernel::Phase,
    model::record::{Record, proto_str},
    output::text::{endpoint, opts},
};

fn decision_row<'a>(app: &App, t: &Theme, row: &DecisionRow<'a>, pinned: bool) -> Row<'a> {
    let r = row.record;
    let style = if r.is_failure() {
        t.failure()
    } else {
        Style::default()
    };
    let count = if row.count > 1 {
        format!("x{}", row.count)
    } else {
        String::new()
    };
    let mut address = asked(r);
    if app.multi_ns {
        address = format!("{address} {}", app.ns_name(r.netns));
    }
    Row::new(vec![
        Cell::from(format!(
            "{}{}",
            if pinned { "!" } else { "" },
            age(&app.model, r.ts_ns)
        )),
        Cell::from(count),
        Cell::from(r.phase.map_or("?", Phase::as_str)),
        Cell::from(decision_result(r)),
        Cell::from(proto_str(r.proto)),
        Cell::from(opts(r)),
        Cell::from(address),
        Cell::from(who(r)),
    ])
    .style(style)
}

const DECISION_COLUMNS: [Constraint; 8] = [
    Constraint::Length(6),
    Constraint::Length(5),
    Constraint::Length(8),
    Constraint::Length(13),
    Constraint::Length(4),
    Constraint::Length(4),
    Constraint::Min(16),
    Constraint::Min(10),
];

pub(super) fn render_binds(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let pinned = app.pinned_rows();
    let counts = app.failure_counts();
    // The failures strip: a line of counts per errno and the newest
    // failures, which a flood of successes cannot push out.
    let strip_h = if pinned.is_empty() {
        0
    } else {
        pinned.len() as u16 + 1
    };
    let [strip, list, detail] = Layout::vertical([
        Constraint::Length(strip_h),
        Constraint::Min(3),
        Constraint::Length(5),
    ])
    .areas(area);
    let rows_shown = app.decision_rows();
    let decisions: u64 = rows_shown.iter().map(|r| r.count).sum();
    let sel = app.selected[0].min((pinned.len() + rows_shown.len()).saturating_sub(1));
    if !pinned.is_empty() {
        let per_errno = counts
            .iter()
            .map(|(e, n)| format!("{e} x{n}"))
            .collect::<Vec<_>>()
            .join("  ");
        let [counts_line, pinned_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(strip);
        f.render_widget(
            Paragraph::new(Span::styled(
                format!(
                    "Failures, last {} min: {per_errno}",
                    PIN_NS / 60_000_000_000
                ),
                t.failure(),
            )),
            counts_line,
        );
        let rows = pinned.iter().map(|row| decision_row(app, t, row, true));
        let table = Table::new(rows, DECISION_COLUMNS).row_highlight_style(t.selected());
        let mut state = TableState::default();
        if sel < pinned.len() {
            state.select(Some(sel));
        }
        f.render_stateful_widget(table, pinned_area, &mut state);
    }
    // Build only the rows that fit (title and header take two lines),
    // scrolled so the selection stays in view.
    let height = usize::from(list.height.saturating_sub(2)).max(1);
    let list_sel = sel.checked_sub(pinned.len());
    let selected = list_sel
        .unwrap_or(0)
        .min(rows_shown.len().saturating_sub(1));
    let start = selected.saturating_sub(height - 1);
    let window = &rows_shown[start.min(rows_shown.len())..(start + height).min(rows_shown.len())];
    let rows = window.iter().map(|row| decision_row(app, t, row, false));
    let table = Table::new(rows, DECISION_COLUMNS)
        .header(
            Row::new([
                "AGE", "RUN", "PHASE", "RESULT", "PROT", "OPTS", "ADDRESS", "OWNER",
            ])
            .style(t.dim()),
        )
        .row_highlight_style(t.selected())
        .block(Block::default().borders(Borders::TOP).title(format!(
            " {}{} ({} shown, {decisions} calls; R/r/6=REUSEADDR/PORT/V6ONLY) ",
            Pane::Binds.title(),
            if app.failures_only {
                ", failures only"
            } else {
                ""
            },
            rows_shown.len(),
        )));
    let mut state = TableState::default();
    if list_sel.is_some() && !rows_shown.is_empty() {
        state.select(Some(selected - start));
    }
    f.render_stateful_widget(table, list, &mut state);
    let text = match app.selected_decision() {
        Some(row) => {
            let mut lines = detail_lines(app, row.record);
            if row.record.explanation.is_some() {
                lines.push(Line::from(Span::styled(
                    "Enter: the whole explanation and the port's holders",
                    t.dim(),
                )));
            }
            lines
        }
        None => vec![Line::from(Span::styled(
            "No bind decisions yet. Run a server, or start a scenario (4, Enter).",
            t.dim(),
        ))],
    };
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::TOP).title(" Detail ")),
        detail,
    );
}

pub(super) fn detail_lines(app: &App, r: &Record) -> Vec<Line<'static>> {
    let flags = [
        ("SO_REUSEADDR", r.reuseaddr),
        ("SO_REUSEPORT", r.reuseport),
        ("IPV6_V6ONLY", r.v6only),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| *n)
    .collect::<Vec<_>>();
    let flags = if flags.is_empty() {
        "no options".to_owned()
    } else {
        flags.join(" ")
    };
    let mut lines = vec![
        Line::from(format!(
            "{} {}() {} {} -> {}; local {}",
            proto_str(r.proto),
            r.phase.map_or("?", Phase::as_str),
            if r.phase == Some(Phase::Connect) {
                "to"
            } else {
                "asked"
            },
            asked(r),
            decision_result(r),
            endpoint(r.laddr, r.lport)
        )),
        Line::from(format!(
            "owner {} uid {} · {flags} · netns {} · sock {} ino {}",
            who(r),
            r.uid.map_or("-".to_owned(), |u| u.to_string()),
            app.ns_name(r.netns),
            r.sock_id(),
            r.ino.map_or("-".to_owned(), |i| i.to_string())
        )),
    ];
    if let Some(why) = &r.explanation {
        lines.push(Line::from(format!("why: {why}")));
    }
    lines
}
