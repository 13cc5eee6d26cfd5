//! Pane 3: per SO_REUSEPORT group, a bar per member with its deliveries,
//! share, imbalance and the chi-square p-value, and the cause the
//! deliveries alone can name (`model::balance`).

use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph},
};

use super::{Theme, heading};
use crate::{
    commands::dashboard::{
        app::{App, GroupRow, Pane},
        model::GroupKey,
    },
    kernel::Proto,
    model::{
        balance::{Balance, State},
        record::proto_str,
    },
    output::text::endpoint,
};

pub(super) fn render_reuseport(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
    let groups = app.group_rows();
    let block = Block::default().borders(Borders::TOP).title(format!(
        " {} ({} groups; sort: {} (s); r resets counts; bars: deliveries) ",
        Pane::Reuseport.title(),
        groups.len(),
        app.group_sort.name()
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
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
    for (gi, row) in groups.iter().enumerate() {
        let style = if gi == selected {
            t.selected()
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        lines.push(Line::from(Span::styled(title(app, row, width), style)));
        lines.push(Line::from(Span::styled(cause_line(row), t.dim())));
        match row.verdict {
            Some(v) => judged_rows(t, row, v, width, &mut lines),
            None => delivery_rows(t, row, width, &mut lines),
        }
    }
    f.render_widget(Paragraph::new(lines), inner);
}

const LABEL_W: usize = 34;

/// A row: a label, a bar of `n` against the largest, `n` and its share of
/// the total, and more columns.
fn bar_line(
    t: &Theme,
    label: &str,
    (n, max, total): (u64, u64, u64),
    bar_w: usize,
    more: String,
) -> Line<'static> {
    let share = if total > 0 {
        n as f64 / total as f64
    } else {
        0.0
    };
    let filled = if max > 0 {
        (((n as f64 / max as f64) * bar_w as f64).round() as usize).min(bar_w)
    } else {
        0
    };
    // By characters: a process name may hold any (a byte cut could split
    // one).
    let label = super::fit(label, LABEL_W - 1);
    Line::from(vec![
        Span::raw(format!("{label:<LABEL_W$}")),
        Span::styled("█".repeat(filled), t.fg(Color::Cyan)),
        Span::raw(" ".repeat(bar_w - filled)),
        Span::raw(format!(" {n:>6} {:>5.1}%{more}", share * 100.0)),
    ])
}

/// Until its port's sockets have been read twice (and in a replay): each
/// member's deliveries since the start (or the last reset).
fn delivery_rows(t: &Theme, row: &GroupRow<'_>, width: usize, lines: &mut Vec<Line<'static>>) {
    let bar_w = width.saturating_sub(LABEL_W + 16).max(4);
    for m in row.members {
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
        let label = if m.closed {
            format!("  {owner} closed")
        } else {
            format!("  {owner}")
        };
        let counts = (m.deliveries, row.spread.max, row.spread.total);
        lines.push(bar_line(t, &label, counts, bar_w, String::new()));
    }
}

/// The verdict's window: each member of the port (one that got nothing
/// too) with what the kernel gave it, what it accepted, its queue and the
/// connections its process holds; for a queue several tasks accept from,
/// a bar per task.
fn judged_rows(
    t: &Theme,
    row: &GroupRow<'_>,
    v: &Balance,
    width: usize,
    lines: &mut Vec<Line<'static>>,
) {
    let udp = v.proto == Proto::Udp;
    let bar_w = width.saturating_sub(LABEL_W + 16 + 21).max(4);
    if row.members.is_empty() {
        let total = row.spread.total;
        let max = row.spread.max;
        for m in v.members.iter().filter(|m| m.accepted_by.len() > 1) {
            for task in &m.accepted_by {
                let label = format!("  {}/{} {}", task.pid, task.tid, task.comm);
                lines.push(bar_line(
                    t,
                    &label,
                    (task.count, max, total),
                    bar_w,
                    String::new(),
                ));
            }
            lines.push(Line::from(Span::styled(
                format!(
                    "  bars: accepts per task; one queue {}/{}, {} connections held",
                    m.queued, m.queue_limit, m.open
                ),
                t.dim(),
            )));
        }
        return;
    }
    let heads: [&str; 5] = if udp {
        ["dgrams", "share", "flows", "", "drops"]
    } else {
        ["got", "share", "accept", "queue", "open"]
    };
    let mut legend = " ".repeat(LABEL_W + bar_w);
    for h in heads {
        legend.push_str(&format!("{h:>7}"));
    }
    lines.push(Line::from(Span::styled(legend, t.dim())));
    let total: u64 = v.members.iter().map(|m| m.delivered).sum();
    let max = v.members.iter().map(|m| m.delivered).max().unwrap_or(0);
    for m in &v.members {
        let owner = match (m.pid, &m.comm) {
            (Some(p), Some(c)) => format!("{p} {c} ino {}", m.ino),
            _ => format!("ino {}", m.ino),
        };
        let label = match (m.state, udp) {
            (State::Closed, _) => format!("  {owner} closed"),
            (_, false) if !m.reuseport => format!("  {owner} plain"),
            _ => format!("  {owner}"),
        };
        let more = if udp {
            format!("{:>7}{:>7}{:>7}", m.flows, "", m.overflows)
        } else {
            format!(
                "{:>7}{:>7}{:>7}",
                m.accepted,
                format!("{}/{}", m.queued, m.queue_limit),
                m.open
            )
        };
        lines.push(bar_line(t, &label, (m.delivered, max, total), bar_w, more));
    }
}

/// A group's title: its address, members, what they got, and the split;
/// with a verdict, over its window.
fn title(app: &App, row: &GroupRow<'_>, width: usize) -> String {
    let key = &row.key;
    let spread = &row.spread;
    let ns = if app.multi_ns {
        format!(" netns {}", app.ns_name(key.netns))
    } else {
        String::new()
    };
    let addr = endpoint(key.addr, key.port);
    let proto = proto_str(key.proto);
    if let Some(v) = row.verdict {
        let window = if v.duration_s < 10.0 {
            format!("last {:.1} s", v.duration_s)
        } else {
            format!("last {:.0} s", v.duration_s)
        };
        if row.members.is_empty() {
            return format!(
                "{proto} {addr}{ns}  1 listener, {} tasks  {} accepted  max/mean {:.2}  ({window})",
                spread.members, spread.total, spread.imbalance,
            );
        }
        let split = match &v.spread {
            Some(s) if v.proto == Proto::Udp => {
                format!("  {} flows  max/mean {:.2}", s.total, s.imbalance)
            }
            Some(s) => format!("  max/mean {:.2}  p {:.3}", s.imbalance, s.p_value),
            None => String::new(),
        };
        return format!(
            "{proto} {addr}{ns}  {} members  {} {}{split}  ({window})",
            v.members.len(),
            v.members.iter().map(|m| m.delivered).sum::<u64>(),
            if v.proto == Proto::Udp {
                "datagrams"
            } else {
                "delivered"
            },
        );
    }
    let udp = key.proto == Some(Proto::Udp);
    // A UDP group hashes flows, and every datagram of a flow goes to the
    // same member: datagram counts are no sample of the hash, so no test
    // is run on them here.
    let judged = if udp {
        String::new()
    } else {
        format!(
            "  {} {:.3}",
            if width >= 100 { "chi2 p" } else { "p" },
            spread.p_value
        )
    };
    format!(
        "{proto} {addr}{ns}  {} members  {} {}  max/mean {:.2}{judged}",
        spread.members,
        spread.total,
        match (udp, width >= 100) {
            (true, true) => "datagrams",
            (true, false) => "dgrams",
            (false, true) => "delivered",
            (false, false) => "deliv",
        },
        spread.imbalance,
    )
}

/// The group's cause in one line: from its port's verdict, or, until two
/// socket reads frame one (and in a replay), from its deliveries alone.
fn cause_line(row: &GroupRow<'_>) -> String {
    let key = &row.key;
    if row.verdict.is_none() && key.proto == Some(Proto::Udp) {
        return format!(
            "  cause: inspector balance {} --proto udp judges by flow (one flow's datagrams all go to one member) and counts drops",
            key.port
        );
    }
    let (code, detail) = App::group_cause(row);
    // What the verdict adds: a TCP group's accepts and queues.
    let more = if row.verdict.is_none() && key.proto == Some(Proto::Tcp) {
        format!("; accepts and queues: inspector balance {}", key.port)
    } else {
        String::new()
    };
    format!("  cause: {} ({detail}){more}", code.as_str())
}

/// A group's detail: per member, its deliveries per second over the last
/// minute, one bar per second (`width` of them), oldest left, so bursts
/// and pauses show.
pub(super) fn group_lines(
    app: &App,
    t: &Theme,
    key: &GroupKey,
    width: usize,
    lines: &mut Vec<Line<'static>>,
) {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let members = app.model.groups.get(key).map_or(&[][..], Vec::as_slice);
    let total: u64 = members.iter().map(|m| m.deliveries).sum();
    // A listener that tasks share has no SO_REUSEPORT group: only its
    // verdict.
    if !members.is_empty() {
        lines.push(Line::from(format!(
            "{} members, {total} delivered; netns {}; per-second deliveries, the last 60 s (kernel time)",
            members.len(),
            app.ns_name(key.netns)
        )));
    }
    if let Some(v) = app.group_verdict(key) {
        if !members.is_empty() {
            lines.push(Line::default());
        }
        lines.push(heading(
            t,
            format!(
                "The last {:.1} s, with the sockets read at both ends (as `inspector balance {}` reports):",
                v.duration_s, key.port
            ),
        ));
        for l in crate::commands::balance::text(v).lines() {
            lines.push(Line::from(format!("  {l}")));
        }
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_cut_by_character_not_byte() {
        // A process name may hold multi-byte characters anywhere: here one
        // straddles the label's last byte.
        let label = format!("  {}", "é".repeat(40));
        let line = bar_line(
            &Theme { no_color: true },
            &label,
            (1, 2, 3),
            8,
            String::new(),
        );
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        assert!(text.starts_with("  éé"), "{text}");
        assert_eq!(text.chars().take_while(|&c| c != '█').count(), LABEL_W);
    }
}
