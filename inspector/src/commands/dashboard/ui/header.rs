//! The header line (mode, rates, failures, namespaces and filters) and
//! the pane tabs under it.

use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
};

use super::{Theme, fit};
use crate::commands::dashboard::app::{App, Pane};

pub(super) fn render_header(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let dropped = app.counters.dropped;
    let wide = area.width >= 120;
    let ns = match &app.namespaces {
        Some(ns) => format!(
            "netns {}",
            ns.iter()
                .map(|n| app.ns_name(*n))
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => "netns all".to_owned(),
    };
    // The attach mode, and why auto did not get fentry (full text in `?`).
    let mode = match app.fallback_short() {
        Some(why) if wide => format!("{}({}) auto: {why}", app.header.mode, app.header.probes),
        Some(why) => format!(
            "{}({}) {}",
            app.header.mode,
            app.header.probes,
            why.rsplit(' ').next().unwrap_or_default()
        ),
        None => format!("{}({})", app.header.mode, app.header.probes),
    };
    let mode = match &app.replay_clock {
        Some(clock) => format!("{} {clock}", app.header.mode),
        None => mode,
    };
    let mut spans = vec![
        Span::styled(
            " inspector ",
            t.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(" {mode}  {:.0} ev/s  ", app.model.rate)),
    ];
    // Narrow, the kernel's counters show only when not zero: the room goes
    // to the namespaces and filters.
    if wide || dropped > 0 || app.counters.read_errors > 0 {
        spans.extend([
            Span::styled(
                format!("dropped {dropped}"),
                if dropped > 0 {
                    t.failure().add_modifier(Modifier::REVERSED)
                } else {
                    Style::default()
                },
            ),
            // Kernel-side read and map failures (`inspector_common::counter`).
            Span::raw(" "),
            Span::styled(
                format!("err {}", app.counters.read_errors),
                if app.counters.read_errors > 0 {
                    t.failure().add_modifier(Modifier::REVERSED)
                } else {
                    Style::default()
                },
            ),
            Span::raw("  "),
        ]);
    }
    // Scoped to the namespaces followed; every namespace's count is in `?`.
    spans.push(Span::raw(format!("{} failed  ", app.failures_in_view())));
    if app.paused {
        // Right after the name: never the part cut off.
        let held = if app.shed > 0 {
            format!("PAUSED +{} (-{} shed) ", app.held.len(), app.shed)
        } else {
            format!("PAUSED +{} ", app.held.len())
        };
        spans.insert(1, Span::styled(held, t.failure()));
    }
    // Namespaces and filters last, shortened to what is left of the line.
    let mut tail = ns;
    if wide || app.header.filters != "none" {
        tail.push_str(&format!("  filter {}", app.header.filters));
    }
    if let Some(v) = &app.view {
        tail.push_str(&format!(" + {}", v.describe()));
    }
    let used: usize = spans.iter().map(Span::width).sum();
    spans.push(Span::raw(fit(
        &tail,
        usize::from(area.width).saturating_sub(used),
    )));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub(super) fn render_tabs(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let mut spans = Vec::new();
    // Full titles when they fit, else the short ones (80 columns).
    let full: usize = Pane::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| format!(" {} {} ", i + 1, p.title()).chars().count() + 1)
        .sum();
    let short = full > usize::from(area.width) + 1;
    for (i, p) in Pane::ALL.iter().enumerate() {
        let title = if short { p.short_title() } else { p.title() };
        let label = format!(" {} {title} ", i + 1);
        let style = if *p == app.pane {
            t.selected().add_modifier(Modifier::BOLD)
        } else {
            t.dim()
        };
        spans.push(Span::styled(label, style));
        spans.push(Span::raw(" "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
