//! Rendering only: `render(&App, &mut Frame)` reads the state and draws it.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap},
};

use super::{
    app::{App, Pane, ScenarioState},
    model::Model,
};
use crate::{
    kernel::Phase,
    output::{endpoint, opts},
    record::{Record, proto_str},
    scenario::{CATALOG, report::verdict_label, stats::Spread},
};

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
    render_header(app, &theme, f, header);
    render_tabs(app, &theme, f, tabs);
    match app.pane {
        Pane::Binds => render_binds(app, &theme, f, body),
        Pane::Ports => render_ports(app, &theme, f, body),
        Pane::Reuseport => render_reuseport(app, &theme, f, body),
        Pane::Scenarios => render_scenarios(app, &theme, f, body),
    }
    render_footer(app, &theme, f, footer);
    if app.help {
        render_help(f, body);
    }
}

fn render_header(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let dropped = app.counters.dropped;
    let ns = match &app.namespaces {
        Some(ns) => format!(
            "netns {}",
            ns.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
        None => "netns all".to_owned(),
    };
    let mut spans = vec![
        Span::styled(
            " inspector ",
            t.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            " {}({})  {:.0} ev/s  ",
            app.header.mode, app.header.probes, app.model.rate
        )),
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
        Span::raw(format!(
            "  {} failed  {}  filter {}",
            app.model.failures, ns, app.header.filters
        )),
    ];
    if let Some(v) = &app.view {
        spans.push(Span::raw(format!(" + {}", v.describe())));
    }
    if app.paused {
        spans.push(Span::styled(" PAUSED", t.failure()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_tabs(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let mut spans = Vec::new();
    for (i, p) in Pane::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, p.title());
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

fn render_footer(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let line = if let Some(text) = &app.input {
        Line::from(vec![
            Span::styled(" filter (port N, pid N, comm NAME): ", t.fg(Color::Yellow)),
            Span::raw(format!("{text}_")),
        ])
    } else {
        Line::from(Span::styled(
            " Tab pane  j/k move  Enter run  / filter  f failures  p pause  c clear  ? help  q quit",
            t.dim(),
        ))
    };
    f.render_widget(Paragraph::new(line), area);
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

fn render_binds(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let [list, detail] = Layout::vertical([Constraint::Min(3), Constraint::Length(6)]).areas(area);
    let rows_shown = app.visible_decisions();
    // Build only the rows that fit (title and header take two lines),
    // scrolled so the selection stays in view.
    let height = usize::from(list.height.saturating_sub(2)).max(1);
    let selected = app.selected[0].min(rows_shown.len().saturating_sub(1));
    let start = selected.saturating_sub(height - 1);
    let window = &rows_shown[start.min(rows_shown.len())..(start + height).min(rows_shown.len())];
    let rows = window.iter().map(|r| {
        let style = if r.is_failure() {
            t.failure()
        } else {
            Style::default()
        };
        Row::new(vec![
            Cell::from(age(&app.model, r.ts_ns)),
            Cell::from(r.phase.map_or("?", Phase::as_str)),
            Cell::from(decision_result(r)),
            Cell::from(proto_str(r.proto)),
            Cell::from(opts(r)),
            Cell::from(asked(r)),
            Cell::from(who(r)),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(14),
            Constraint::Length(4),
            Constraint::Length(4),
            Constraint::Min(16),
            Constraint::Min(12),
        ],
    )
    .header(Row::new(["AGE", "PHASE", "RESULT", "PROT", "OPTS", "ADDRESS", "OWNER"]).style(t.dim()))
    .row_highlight_style(t.selected())
    .block(Block::default().borders(Borders::TOP).title(format!(
        " {}{} ({} shown, R=SO_REUSEADDR r=SO_REUSEPORT 6=V6ONLY) ",
        Pane::Binds.title(),
        if app.failures_only {
            ", failures only"
        } else {
            ""
        },
        rows_shown.len()
    )));
    let mut state = TableState::default();
    if !rows_shown.is_empty() {
        state.select(Some(selected - start));
    }
    f.render_stateful_widget(table, list, &mut state);
    let text = match rows_shown.get(selected) {
        Some(r) => detail_lines(r),
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

/// `ss`-style short state names, so a row of counts fits.
fn short_state(s: &str) -> &str {
    match s {
        "ESTABLISHED" => "ESTAB",
        "SYN_SENT" => "SYN-SENT",
        "SYN_RECV" => "SYN-RECV",
        "FIN_WAIT1" => "FIN-WAIT-1",
        "FIN_WAIT2" => "FIN-WAIT-2",
        "CLOSE_WAIT" => "CLOSE-WAIT",
        "LAST_ACK" => "LAST-ACK",
        other => other,
    }
}

fn detail_lines(r: &Record) -> Vec<Line<'static>> {
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
            r.netns,
            r.sock_id,
            r.ino.map_or("-".to_owned(), |i| i.to_string())
        )),
    ];
    if let Some(why) = &r.explanation {
        lines.push(Line::from(format!("why: {why}")));
    }
    lines
}

fn secs(ns: Option<u64>) -> String {
    ns.map_or("-".to_owned(), |n| format!("{:.0}s", n as f64 / 1e9))
}

fn render_ports(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let [table_area, spark_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(4)]).areas(area);
    let rows_data = app.model.port_rows();
    let height = usize::from(table_area.height.saturating_sub(2)).max(1);
    let selected = app.selected[1].min(rows_data.len().saturating_sub(1));
    let start = selected.saturating_sub(height - 1);
    let window = &rows_data[start.min(rows_data.len())..(start + height).min(rows_data.len())];
    let rows = window.iter().map(|row| {
        let states = row
            .states
            .iter()
            .map(|(s, n)| format!("{} {n}", short_state(s)))
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
        Row::new(vec![
            Cell::from(proto_str(row.key.proto)),
            Cell::from(row.key.port.to_string()),
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
            Constraint::Length(6),
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
        " {} ({} ports, {} TIME_WAIT; TW LEFT newest/oldest) ",
        Pane::Ports.title(),
        rows_data.len(),
        app.model.time_wait.len()
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

fn render_reuseport(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let block = Block::default().borders(Borders::TOP).title(format!(
        " {} ({} groups; r resets counts; bars: deliveries per member) ",
        Pane::Reuseport.title(),
        app.model.groups.len()
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.model.groups.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled(
                "No SO_REUSEPORT deliveries yet. Scenarios 10, 11 and 16 make some.",
                t.dim(),
            )),
            inner,
        );
        return;
    }
    let width = inner.width as usize;
    let mut lines = Vec::new();
    let selected = app.selected[2].min(app.model.groups.len() - 1);
    for (gi, (key, members)) in app.model.groups.iter().enumerate() {
        let counts: Vec<u64> = members.iter().map(|m| m.deliveries).collect();
        let spread = Spread::of(&counts);
        let title = format!(
            "{} {}  {} members  {} delivered  max/mean {:.2}  chi2 p {:.3}",
            proto_str(key.proto),
            endpoint(key.addr, key.port),
            spread.members,
            spread.total,
            spread.imbalance,
            spread.p_value
        );
        let style = if gi == selected {
            t.selected()
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        lines.push(Line::from(Span::styled(title, style)));
        let label_w = 34usize;
        let num_w = 16usize;
        let bar_w = width.saturating_sub(label_w + num_w + 2).max(4);
        for m in members {
            let share = if spread.total > 0 {
                m.deliveries as f64 / spread.total as f64
            } else {
                0.0
            };
            let filled = if spread.max > 0 {
                ((m.deliveries as f64 / spread.max as f64) * bar_w as f64).round() as usize
            } else {
                0
            };
            let ino = m
                .ino
                .map_or_else(|| m.sock_id.clone(), |i| format!("ino {i}"));
            let ino = match &m.cgroup {
                Some(cg) => format!("{cg} {ino}"),
                None => ino,
            };
            let owner = m
                .owner
                .as_ref()
                .map_or_else(|| ino.clone(), |(p, c)| format!("{p} {c} {ino}"));
            let mut label = format!("  {owner}");
            label.truncate(label_w);
            lines.push(Line::from(vec![
                Span::raw(format!("{label:<label_w$}")),
                Span::styled("█".repeat(filled), t.fg(Color::Cyan)),
                Span::raw(" ".repeat(bar_w - filled.min(bar_w))),
                Span::raw(format!(" {:>6} {:>5.1}%", m.deliveries, share * 100.0)),
            ]));
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn render_scenarios(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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

fn render_help(f: &mut Frame, area: Rect) {
    let lines = [
        "Tab / Shift-Tab, 1-4   switch pane",
        "j k, arrows, PgUp/PgDn select",
        "Enter                 run the selected scenario",
        "/                     filter: port N, pid N, comm NAME",
        "Esc                   clear the filter",
        "a                     show all namespaces again",
        "f                     only failed decisions",
        "p                     pause intake",
        "c                     clear what is shown",
        "r                     reset reuseport counts",
        "q, Ctrl-C             quit",
        "",
        "any key closes this help",
    ];
    let w = 52.min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(" Keys ")),
        rect,
    );
}
