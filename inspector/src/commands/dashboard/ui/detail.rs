//! Enter's full-height view: a decision with its whole explanation and
//! what decided it (the port's holders, or a connect()'s local ports toward
//! its destination), a port's sockets, a reuseport group's deliveries, or
//! a destination's local ports.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph, Wrap},
};

use super::{
    Theme, age, asked, binds::detail_lines, decision_result, ephemeral, flags_str, heading,
    reuseport, secs,
};
use crate::{
    commands::dashboard::{
        app::{App, DetailTarget, asked_key, connect_destination},
        model::Holder,
    },
    kernel::Phase,
    model::record::{Record, proto_str},
    output::text::endpoint,
};

/// The explanation with TIME_WAIT holders' owners filled in from what the
/// dashboard saw: a timewait socket has no process, but the dashboard
/// knows who owned the connection before.
fn with_last_owner(why: &str, holders: &[Holder]) -> String {
    let mut last: Vec<&(u32, String)> = holders
        .iter()
        .filter(|h| h.is_time_wait())
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
        let owner = match (&h.owner, h.is_time_wait()) {
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
            h.state.short_name(),
            addr,
            owner,
            opts,
            app.ns_name(h.netns),
            if h.is_time_wait() {
                secs(h.left_ns)
            } else {
                String::new()
            }
        )));
    }
}

/// Enter's full-height view: a decision with its whole explanation and the
/// port's holders (a connect(): its destination's local ports), a port's
/// sockets, a reuseport group's deliveries, or a destination's ports.
pub(super) fn render_detail(
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
        } => decision(app, t, record, *count, *first_ns, &mut lines),
        DetailTarget::Port(key) => {
            let holders = app.model.holders(*key);
            let tw = holders.iter().filter(|h| h.is_time_wait()).count();
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
            let width = usize::from(area.width.saturating_sub(4)).min(60);
            reuseport::group_lines(app, t, key, width, &mut lines);
            format!(
                " Reuseport group {} {} ",
                proto_str(key.proto),
                endpoint(key.addr, key.port)
            )
        }
        DetailTarget::Destination(key) => {
            ephemeral::destination_lines(app, t, key, None, &mut lines);
            format!(" Ephemeral ports toward {} ", endpoint(key.addr, key.port))
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

/// A decision: the call, its explanation clause by clause, then what
/// decided it: the holders of the port a bind() or listen() asked for, or
/// the local ports in use toward a connect()'s destination, when it failed
/// and now. Returns the title.
fn decision(
    app: &App,
    t: &Theme,
    r: &Record,
    count: u64,
    first_ns: u64,
    lines: &mut Vec<Line<'static>>,
) -> String {
    let captured = app.captured(r);
    let key = asked_key(r);
    let destination = connect_destination(r);
    // Only a bind() or listen() is decided by the port's holders.
    let holders = match destination {
        Some(_) => Vec::new(),
        None => app.model.holders(key),
    };
    // The owners the explanation lacks: from the moment of the failure
    // when captured, else from now.
    let known = captured.map_or(&holders[..], |c| &c.holders[..]);
    lines.extend(detail_lines(app, r).into_iter().take(2));
    if count > 1 {
        lines.push(Line::from(format!(
            "{count} identical decisions, the first {} ago, the last {} ago",
            age(&app.model, first_ns),
            age(&app.model, r.ts_ns)
        )));
    }
    lines.push(Line::default());
    lines.push(heading(t, "Why".to_owned()));
    match &r.explanation {
        // Each clause on a line of its own: the rule, the holders, the
        // advice.
        Some(why) => {
            for part in with_last_owner(why, known).split("; ") {
                lines.push(Line::from(format!("  {part}")));
            }
        }
        None if r.is_failure() => lines.push(Line::from(Span::styled(
            match destination {
                Some(_) => "  no explanation came with this connect()",
                None => "  no explanation: its namespace was gone when looked at, or more than 20 failures came in that second",
            },
            t.dim(),
        ))),
        None => lines.push(Line::from(Span::styled(
            "  the kernel allowed it: nothing to explain",
            t.dim(),
        ))),
    }
    if let Some(dest) = destination {
        let at = captured.map(|c| (c.ts_ns, c.destination.as_ref()));
        ephemeral::destination_lines(app, t, &dest, at, lines);
    } else {
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
            holder_lines(app, t, &c.holders, lines);
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
        holder_lines(app, t, &holders, lines);
    }
    format!(
        " Decision: {} {}() {} -> {} ",
        proto_str(r.proto),
        r.phase.map_or("?", Phase::as_str),
        asked(r),
        decision_result(r)
    )
}
