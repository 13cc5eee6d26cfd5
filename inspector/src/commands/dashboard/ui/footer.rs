//! The footer's keys (or the `/` prompt) and the `?` help over the body.

use ratatui::{
    Frame,
    layout::Rect,
    style::Color,
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Wrap},
};

use super::{Theme, fit};
use crate::commands::dashboard::app::{App, Pane};

pub(super) fn render_footer(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let line = if let Some(text) = &app.input {
        // The prompt's hint gives way to the text typed.
        let hint = if area.width >= 90 {
            " filter (port N pid N comm X netns N errno E): "
        } else {
            " filter: "
        };
        Line::from(vec![
            Span::styled(hint, t.fg(Color::Yellow)),
            Span::raw(format!("{text}_")),
        ])
    } else if app.detail.is_some() {
        Line::from(Span::styled(
            " Esc back  j/k scroll  PgUp/PgDn page  g top  p pause  ? help  q quit",
            t.dim(),
        ))
    } else {
        let keys = match app.pane {
            Pane::Binds => {
                " Tab pane  j/k move  Enter detail  / filter  f failures  p pause  ? help  q quit"
            }
            Pane::Ports => {
                " Tab pane  j/k move  Enter detail  s sort  / filter  p pause  ? help  q quit"
            }
            Pane::Reuseport => {
                " Tab pane  j/k move  Enter detail  s sort  r reset  / filter  ? help  q quit"
            }
            Pane::Scenarios => {
                " Tab pane  j/k move  Enter run  / filter  p pause  c clear  ? help  q quit"
            }
            Pane::Ephemeral => {
                " Tab pane  j/k move  Enter detail  / filter  a all netns  ? help  q quit"
            }
        };
        Line::from(Span::styled(keys, t.dim()))
    };
    f.render_widget(Paragraph::new(line), area);
}

pub(super) fn render_help(app: &App, f: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = [
        "Tab / Shift-Tab, 1-5   switch pane",
        "j k, arrows, PgUp/PgDn select (scroll in a detail view)",
        "Enter                 detail view; in 4 run the scenario",
        "Esc                   close the detail view, clear the filter",
        "/                     filter: port N pid N comm X netns N|NAME errno E",
        "s                     sort panes 2 and 3",
        "a                     show all namespaces again",
        "f                     only failed decisions",
        "p                     pause the display (records are kept)",
        "c                     clear what is shown",
        "r                     reset reuseport counts",
        "q, Ctrl-C             quit",
    ]
    .iter()
    .map(|l| Line::from(*l))
    .collect();
    lines.push(Line::default());
    lines.push(Line::from(format!(
        "mode: {} with {} probes",
        app.header.mode, app.header.probes
    )));
    let m = &app.model;
    // The header counts the namespaces followed; every one's count here.
    if app.namespaces.is_some() {
        lines.push(Line::from(format!(
            "failed calls: {} in the namespaces shown, {} in all namespaces",
            app.failures_in_view(),
            m.failures
        )));
    }
    lines.push(Line::from(format!(
        "forgotten: {} sockets, {} TIME_WAIT aged out, {} reuseport members",
        m.evicted, m.tw_aged_out, m.members_evicted
    )));
    lines.push(Line::from(format!(
        "pane 3 verdicts: {} ports forgotten, {} records dropped (windows shortened)",
        m.windows.evicted, m.windows.dropped
    )));
    let w = 100.min(area.width);
    if let Some(why) = &app.fallback {
        // The kernel's message in the rows left over: the box never runs
        // off the screen.
        let inner = usize::from(w.saturating_sub(2)).max(1);
        let rows = usize::from(area.height.saturating_sub(2)).saturating_sub(lines.len() + 2);
        let text: Vec<char> = fit(why, inner * rows).chars().collect();
        lines.extend(
            text.chunks(inner)
                .map(|c| Line::from(c.iter().collect::<String>())),
        );
    }
    lines.push(Line::default());
    lines.push(Line::from("any key closes this help"));
    let h = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" Keys ")),
        rect,
    );
}
