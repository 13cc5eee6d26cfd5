//! Pane 4: the scenario catalog, and the selected scenario's claim and
//! last result.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap},
};

use super::Theme;
use crate::{
    commands::dashboard::app::{App, ScenarioState},
    scenario::{CATALOG, report::verdict_label},
};

pub(super) fn render_scenarios(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let list_w = area.width.clamp(30, 40);
    let [list, detail] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(20)]).areas(area);
    let running = match &app.scenario {
        ScenarioState::Running(s) => Some(s.number),
        _ => None,
    };
    let rows = CATALOG.iter().enumerate().map(|(i, s)| {
        let mark = if running == Some(s.number) {
            "…".to_owned()
        } else {
            match app
                .results
                .get(i)
                .and_then(Option::as_ref)
                .and_then(|r| r.verdict)
            {
                Some(crate::scenario::Verdict::Confirmed) => "✓",
                Some(crate::scenario::Verdict::Refuted) => "✗",
                Some(crate::scenario::Verdict::Partly) => "~",
                Some(crate::scenario::Verdict::Untestable) => "?",
                None => " ",
            }
            .to_owned()
        };
        Row::new(vec![
            Cell::from(mark),
            Cell::from(format!("{:>2} {}", s.number, s.name)),
        ])
    });
    let table = Table::new(rows, [Constraint::Length(1), Constraint::Min(10)])
        .row_highlight_style(t.selected())
        .block(
            Block::default()
                .borders(Borders::TOP | Borders::RIGHT)
                // The list's corner is where the detail's top line goes
                // on: a tee, not a corner.
                .border_set(symbols::border::Set {
                    top_right: symbols::line::HORIZONTAL_DOWN,
                    ..symbols::border::PLAIN
                })
                .title(" Scenarios (Enter runs) "),
        );
    let mut state = TableState::default();
    state.select(Some(app.selected[3].min(CATALOG.len() - 1)));
    f.render_stateful_widget(table, list, &mut state);

    let s = &CATALOG[app.selected[3].min(CATALOG.len() - 1)];
    let mut text = vec![
        Line::from(Span::styled(
            format!("{} {}", s.number, s.title),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::from(vec![
            Span::styled("claim ", t.dim()),
            Span::raw(format!(
                "\"{}\" ({})",
                narrow_marks(s.claim),
                s.source.unwrap_or("own claim")
            )),
        ]),
    ];
    let result = app.results.get(app.selected[3]).and_then(Option::as_ref);
    if running == Some(s.number) {
        text.push(Line::from(Span::styled(
            "running in its own network namespace; the other panes follow it live",
            t.fg(Color::Yellow),
        )));
    } else if let Some(r) = result {
        let style = match r.verdict {
            Some(crate::scenario::Verdict::Confirmed) => t.fg(Color::Green),
            Some(crate::scenario::Verdict::Refuted) => t.failure(),
            _ => t.fg(Color::Yellow),
        };
        let check = &r.evidence_check;
        text.push(Line::from(vec![
            Span::styled(verdict_label(r.verdict), style.add_modifier(Modifier::BOLD)),
            Span::raw(if check.agrees {
                format!(
                    "  evidence agrees ({} checks, {} events)",
                    check.checked, r.evidence_total
                )
            } else {
                format!("  EVIDENCE DISAGREES: {}", check.mismatches.join("; "))
            }),
        ]));
        text.push(Line::from(vec![
            Span::styled("observed ", t.dim()),
            Span::raw(r.summary().to_owned()),
        ]));
        if let Some(e) = &r.error {
            text.push(Line::from(Span::styled(format!("error: {e}"), t.failure())));
        }
        text.push(Line::from(vec![
            Span::styled("why ", t.dim()),
            Span::raw(r.explanation.clone()),
        ]));
    } else {
        text.push(Line::from(Span::styled(
            "not run yet: Enter runs it",
            t.dim(),
        )));
    }
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::TOP)),
        detail,
    );
}

/// The documents' emoji check marks drawn as one-column marks: terminals
/// disagree on the width of emoji, which garbles wrapped lines.
fn narrow_marks(s: &str) -> String {
    s.replace('✅', "✓").replace('❌', "✗")
}
