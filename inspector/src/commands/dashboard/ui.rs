//! Rendering only: `render(&App, &mut Frame)` reads the state and draws it.

use crate::model::ephemeral::DestRow;
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap},
};

use super::{
    app::{App, DecisionRow, DetailTarget, PIN_NS, Pane, ScenarioState, asked_key},
    model::{Holder, Model},
};
use crate::{
    kernel::Phase,
    model::record::{Record, proto_str},
    output::text::{endpoint, opts},
    scenario::{CATALOG, report::verdict_label},
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
    if let Some(d) = &app.detail {
        render_detail(app, &theme, f, body, &d.target, d.scroll);
    } else {
        match app.pane {
            Pane::Binds => render_binds(app, &theme, f, body),
            Pane::Ports => render_ports(app, &theme, f, body),
            Pane::Reuseport => render_reuseport(app, &theme, f, body),
            Pane::Scenarios => render_scenarios(app, &theme, f, body),
            Pane::Ephemeral => render_ephemeral(app, &theme, f, body),
        }
    }
    render_footer(app, &theme, f, footer);
    if app.help {
        render_help(app, f, body);
    }
}

fn render_header(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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
    spans.push(Span::raw(format!("{} failed  ", app.model.failures)));
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

fn render_tabs(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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

fn render_footer(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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
                " Tab pane  j/k move  / filter  p pause  c clear  a all netns  ? help  q quit"
            }
        };
        Line::from(Span::styled(keys, t.dim()))
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

fn render_binds(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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

fn detail_lines(app: &App, r: &Record) -> Vec<Line<'static>> {
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

/// The explanation with TIME_WAIT holders' owners filled in from what the
/// dashboard saw: a timewait socket has no process, but the dashboard
/// knows who owned the connection before.
fn with_last_owner(why: &str, holders: &[Holder]) -> String {
    let mut last: Vec<&(u32, String)> = holders
        .iter()
        .filter(|h| h.time_wait)
        .filter_map(|h| h.owner.as_ref())
        .collect();
    last.dedup();
    match last.as_slice() {
        [(pid, comm)] if why.contains("TIME_WAIT") => why.replace(
            "(no owner)",
            &format!("(no owner, last owner pid {pid} {comm})"),
        ),
        _ => why.to_owned(),
    }
}

fn flags_str(reuseaddr: bool, reuseport: bool, v6only: bool) -> String {
    [(reuseaddr, 'R'), (reuseport, 'r'), (v6only, '6')]
        .iter()
        .map(|(on, c)| if *on { *c } else { '.' })
        .collect()
}

/// The holders table as fixed-width lines, so it scrolls with the rest.
fn holder_lines(app: &App, t: &Theme, holders: &[Holder], out: &mut Vec<Line<'static>>) {
    if holders.is_empty() {
        out.push(Line::from(Span::styled(
            "  none seen by the dashboard (it knows sockets from the moment it started)",
            t.dim(),
        )));
        return;
    }
    out.push(Line::from(Span::styled(
        format!(
            "  {:<10} {:<21} {:<20} {:<4} {:<10} {}",
            "STATE", "ADDRESS", "OWNER (WAS)", "OPTS", "NETNS", "LEFT"
        ),
        t.dim(),
    )));
    for h in holders {
        let addr = h
            .addr
            .map_or_else(|| "-".to_owned(), |a| endpoint(a.ip, a.port));
        let owner = match (&h.owner, h.time_wait) {
            (Some((p, c)), false) => format!("{p} {c}"),
            (Some((p, c)), true) => format!("(was {p} {c})"),
            (None, true) => "(none seen)".to_owned(),
            (None, false) => "-".to_owned(),
        };
        let opts = h.addr.map_or_else(
            || "?".to_owned(),
            |a| flags_str(a.reuseaddr, a.reuseport, a.v6only),
        );
        let owner = if h.pre { format!("pre {owner}") } else { owner };
        let owner: String = owner.chars().take(20).collect();
        out.push(Line::from(format!(
            "  {:<10} {:<21} {:<20} {:<4} {:<10} {}",
            short_state(h.state),
            addr,
            owner,
            opts,
            app.ns_name(h.netns),
            if h.time_wait {
                secs(h.left_ns)
            } else {
                String::new()
            }
        )));
    }
}

fn heading(t: &Theme, text: String) -> Line<'static> {
    Line::from(Span::styled(
        text,
        t.fg(Color::Cyan).add_modifier(Modifier::BOLD),
    ))
}

/// Enter's full-height view: a decision with its whole explanation and the
/// port's holders, a port's sockets, or a reuseport group's deliveries.
fn render_detail(
    app: &App,
    t: &Theme,
    f: &mut Frame,
    area: Rect,
    target: &DetailTarget,
    scroll: u16,
) {
    let mut lines: Vec<Line<'static>> = Vec::new();
    let title = match target {
        DetailTarget::Decision {
            record,
            count,
            first_ns,
        } => {
            let r = record.as_ref();
            let key = asked_key(r);
            let holders = app.model.holders(key);
            let captured = app.captured(r);
            // The owners the explanation lacks: from the moment of the
            // failure when captured, else from now.
            let known = captured.map_or(&holders[..], |c| &c.holders[..]);
            lines.extend(detail_lines(app, r).into_iter().take(2));
            if *count > 1 {
                lines.push(Line::from(format!(
                    "{count} identical decisions, the first {} ago, the last {} ago",
                    age(&app.model, *first_ns),
                    age(&app.model, r.ts_ns)
                )));
            }
            lines.push(Line::default());
            lines.push(heading(t, "Why".to_owned()));
            match &r.explanation {
                // Each clause on a line of its own: the rule, the holders,
                // the advice.
                Some(why) => {
                    for part in with_last_owner(why, known).split("; ") {
                        lines.push(Line::from(format!("  {part}")));
                    }
                }
                None if r.is_failure() => lines.push(Line::from(Span::styled(
                    "  no explanation: the holder was gone when the failure was looked at",
                    t.dim(),
                ))),
                None => lines.push(Line::from(Span::styled(
                    "  the kernel allowed it: nothing to explain",
                    t.dim(),
                ))),
            }
            if let Some(c) = captured {
                lines.push(Line::default());
                lines.push(heading(
                    t,
                    format!(
                        "Holders of {} port {} when it failed ({} ago)",
                        proto_str(key.proto),
                        key.port,
                        age(&app.model, c.ts_ns)
                    ),
                ));
                holder_lines(app, t, &c.holders, &mut lines);
            }
            lines.push(Line::default());
            lines.push(heading(
                t,
                format!(
                    "Holders of {} port {} now (as the dashboard saw them)",
                    proto_str(key.proto),
                    key.port
                ),
            ));
            holder_lines(app, t, &holders, &mut lines);
            format!(
                " Decision: {} {}() {} -> {} ",
                proto_str(r.proto),
                r.phase.map_or("?", Phase::as_str),
                asked(r),
                decision_result(r)
            )
        }
        DetailTarget::Port(key) => {
            let holders = app.model.holders(*key);
            let tw = holders.iter().filter(|h| h.time_wait).count();
            lines.push(Line::from(format!(
                "{} sockets, {tw} of them in TIME_WAIT; netns {}",
                holders.len(),
                app.ns_name(key.netns)
            )));
            lines.push(Line::default());
            lines.push(heading(t, "Sockets".to_owned()));
            holder_lines(app, t, &holders, &mut lines);
            format!(" Port {} {} ", proto_str(key.proto), key.port)
        }
        DetailTarget::Group(key) => {
            let members = app.model.groups.get(key).map_or(&[][..], Vec::as_slice);
            let total: u64 = members.iter().map(|m| m.deliveries).sum();
            lines.push(Line::from(format!(
                "{} members, {total} delivered; netns {}; per-second deliveries, the last 60 s (kernel time)",
                members.len(),
                app.ns_name(key.netns)
            )));
            let now_sec = app.model.now_ns / 1_000_000_000;
            for m in members {
                lines.push(Line::default());
                let who = m
                    .owner
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |(p, c)| format!("{p} {c}"));
                let ino = m
                    .ino
                    .map_or_else(|| m.sock_id.clone(), |i| format!("ino {i}"));
                lines.push(heading(
                    t,
                    format!("{who} {ino}: {} delivered", m.deliveries),
                ));
                // One bar per second, oldest left, so bursts and pauses show.
                let width = usize::from(area.width.saturating_sub(4)).min(60);
                let first = now_sec.saturating_sub(width as u64 - 1);
                let mut per = vec![0u64; width];
                for (sec, n) in &m.per_sec {
                    if let Some(i) = sec.checked_sub(first).and_then(|i| usize::try_from(i).ok())
                        && let Some(slot) = per.get_mut(i)
                    {
                        *slot = *n;
                    }
                }
                let max = per.iter().copied().max().unwrap_or(0).max(1);
                const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
                let spark: String = per
                    .iter()
                    .map(|n| {
                        if *n == 0 {
                            ' '
                        } else {
                            BARS[((*n * 7) / max) as usize]
                        }
                    })
                    .collect();
                lines.push(Line::from(vec![
                    Span::raw("  "),
                    Span::styled(spark, t.fg(Color::Cyan)),
                ]));
                let recent: Vec<String> = m
                    .per_sec
                    .iter()
                    .rev()
                    .take(8)
                    .map(|(sec, n)| format!("-{}s:{n}", now_sec.saturating_sub(*sec)))
                    .collect();
                lines.push(Line::from(format!(
                    "  newest seconds: {}",
                    recent.join(" ")
                )));
            }
            format!(
                " Reuseport group {} {} ",
                proto_str(key.proto),
                endpoint(key.addr, key.port)
            )
        }
    };
    let shown = lines.len();
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((scroll.min(shown.saturating_sub(1) as u16), 0))
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(title)
                    .title_bottom(" Esc back · j/k scroll "),
            ),
        area,
    );
}

fn secs(ns: Option<u64>) -> String {
    ns.map_or("-".to_owned(), |n| format!("{:.0}s", n as f64 / 1e9))
}

fn render_ports(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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

fn render_reuseport(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let block = Block::default().borders(Borders::TOP).title(format!(
        " {} ({} groups; sort: {} (s); r resets counts; bars: deliveries) ",
        Pane::Reuseport.title(),
        app.model.groups.len(),
        app.group_sort.name()
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let groups = app.group_rows();
    if groups.is_empty() {
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
    let selected = app.selected[2].min(groups.len() - 1);
    for (gi, (key, members, spread)) in groups.iter().enumerate() {
        let ns = if app.multi_ns {
            format!(" netns {}", app.ns_name(key.netns))
        } else {
            String::new()
        };
        let title = format!(
            "{} {}{ns}  {} members  {} {}  max/mean {:.2}  {} {:.3}",
            proto_str(key.proto),
            endpoint(key.addr, key.port),
            spread.members,
            spread.total,
            if width >= 100 { "delivered" } else { "deliv" },
            spread.imbalance,
            if width >= 100 { "chi2 p" } else { "p" },
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
        for m in *members {
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
            let mut label = if m.closed {
                format!("  {owner} closed")
            } else {
                format!("  {owner}")
            };
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

fn render_ephemeral(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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

fn render_help(app: &App, f: &mut Frame, area: Rect) {
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
    lines.push(Line::from(format!(
        "forgotten: {} sockets, {} TIME_WAIT aged out, {} reuseport members",
        m.evicted, m.tw_aged_out, m.members_evicted
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
