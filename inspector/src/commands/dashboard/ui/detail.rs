//! Enter's full-height view: a decision with its whole explanation and the
//! port's holders, a port's sockets, or a reuseport group's deliveries.

use ratatui::{
    Frame,
    layout::Rect,
    style::Color,
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph, Wrap},
};

use super::{Theme, age, asked, binds::detail_lines, decision_result, flags_str, heading, secs};
use crate::{
    commands::dashboard::{
        app::{App, DetailTarget, asked_key},
        model::Holder,
    },
    kernel::Phase,
    model::record::proto_str,
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
/// port's holders, a port's sockets, or a reuseport group's deliveries.
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
