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
        app::{App, Pane},
        model::GroupKey,
    },
    model::record::proto_str,
    output::text::endpoint,
};

pub(super) fn render_reuseport(app: &App, t: &Theme, f: &mut Frame, area: Rect) {
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
        let udp = key.proto == Some(crate::kernel::Proto::Udp);
        // A UDP group hashes flows, and every datagram of a flow goes to
        // the same member: datagram counts are no sample of the hash, so
        // no test is run on them here.
        let judged = if udp {
            String::new()
        } else {
            format!(
                "  {} {:.3}",
                if width >= 100 { "chi2 p" } else { "p" },
                spread.p_value
            )
        };
        let title = format!(
            "{} {}{ns}  {} members  {} {}  max/mean {:.2}{judged}",
            proto_str(key.proto),
            endpoint(key.addr, key.port),
            spread.members,
            spread.total,
            match (udp, width >= 100) {
                (true, true) => "datagrams",
                (true, false) => "dgrams",
                (false, true) => "delivered",
                (false, false) => "deliv",
            },
            spread.imbalance,
        );
        let style = if gi == selected {
            t.selected()
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        lines.push(Line::from(Span::styled(title, style)));
        let cause = if udp {
            format!(
                "  cause: inspector balance {} --proto udp judges by flow (one flow's datagrams all go to one member) and counts drops",
                key.port
            )
        } else {
            let (code, detail) = App::group_cause(members);
            // What `balance` adds: a TCP group's accepts and queues.
            let more = if key.proto == Some(crate::kernel::Proto::Tcp) {
                format!("; accepts and queues: inspector balance {}", key.port)
            } else {
                String::new()
            };
            format!("  cause: {} ({detail}){more}", code.as_str())
        };
        lines.push(Line::from(Span::styled(cause, t.dim())));
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
