//! Rendering only: `render(&App, &mut Frame)` reads the state and draws
//! it, one file per part of the screen: the header and tabs, each pane, the
//! full-height detail view, the footer and the help. Nothing here changes
//! the [`App`]; state changes happen in `App::update`.

mod binds;
mod detail;
mod ephemeral;
mod footer;
mod header;
mod ports;
mod reuseport;
mod scenarios;

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
};

use super::{app::App, app::Pane, model::Model};
use crate::{model::record::Record, output::text::endpoint};

struct Theme {
    no_color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.no_color {
            Style::default()
        } else {
            Style::default().fg(c)
        }
    }
    fn failure(&self) -> Style {
        if self.no_color {
            Style::default().add_modifier(Modifier::BOLD)
        } else {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        }
    }
    fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
    fn dim(&self) -> Style {
        if self.no_color {
            Style::default()
        } else {
            Style::default().fg(Color::DarkGray)
        }
    }
}

pub fn render(app: &App, f: &mut Frame) {
    let theme = Theme {
        no_color: app.no_color,
    };
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(f.area());
    header::render_header(app, &theme, f, header);
    header::render_tabs(app, &theme, f, tabs);
    if let Some(d) = &app.detail {
        detail::render_detail(app, &theme, f, body, &d.target, d.scroll);
    } else {
        match app.pane {
            Pane::Binds => binds::render_binds(app, &theme, f, body),
            Pane::Ports => ports::render_ports(app, &theme, f, body),
            Pane::Reuseport => reuseport::render_reuseport(app, &theme, f, body),
            Pane::Scenarios => scenarios::render_scenarios(app, &theme, f, body),
            Pane::Ephemeral => ephemeral::render_ephemeral(app, &theme, f, body),
        }
    }
    footer::render_footer(app, &theme, f, footer);
    if app.help {
        footer::render_help(app, f, body);
    }
}

/// `s` cut to `width` columns, ending in `…` when cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

fn age(model: &Model, ts_ns: u64) -> String {
    let secs = model.now_ns.saturating_sub(ts_ns) as f64 / 1e9;
    if secs < 100.0 {
        format!("{secs:.1}s")
    } else {
        format!("{:.0}m", secs / 60.0)
    }
}

fn who(r: &Record) -> String {
    match (r.pid, &r.comm, r.cgroup_tag()) {
        (Some(p), Some(c), Some(cg)) => format!("{p} {c} {cg}"),
        (Some(p), Some(c), None) => format!("{p} {c}"),
        _ => "-".to_owned(),
    }
}

fn decision_result(r: &Record) -> String {
    r.errno.map_or_else(|| "ok".to_owned(), |e| e.to_string())
}

fn asked(r: &Record) -> String {
    match (r.req_addr, r.req_port) {
        (Some(a), Some(p)) => endpoint(a, p),
        _ => endpoint(r.laddr, r.lport),
    }
}

fn flags_str(reuseaddr: bool, reuseport: bool, v6only: bool) -> String {
    [(reuseaddr, 'R'), (reuseport, 'r'), (v6only, '6')]
        .iter()
        .map(|(on, c)| if *on { *c } else { '.' })
        .collect()
}

fn heading(t: &Theme, text: String) -> Line<'static> {
    Line::from(Span::styled(
        text,
        t.fg(Color::Cyan).add_modifier(Modifier::BOLD),
    ))
}

fn secs(ns: Option<u64>) -> String {
    ns.map_or("-".to_owned(), |n| format!("{:.0}s", n as f64 / 1e9))
}
