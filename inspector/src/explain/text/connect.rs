//! The text of a `connect()` explanation: the ephemeral range as the
//! destination sees it, the sockets that keep ports from it (rolled up),
//! the verdict, the advice and what the model assumes.

use std::io::{self, Write};

use super::{Lines, Table, View, more_rows, rollup};
use crate::{
    explain::{
        connect::{Explanation, PortHolder},
        words,
    },
    kernel::TcpState,
};

fn owner(h: &PortHolder) -> String {
    words::owner(
        h.pid,
        h.comm.as_deref(),
        h.last_pid.zip(h.last_comm.as_deref()),
    )
}

/// What tells one row from another.
#[derive(Hash, PartialEq, Eq)]
struct Key {
    state: TcpState,
    timewait: bool,
    laddr: std::net::IpAddr,
    owner: String,
    why: String,
}

fn groups(e: &Explanation) -> Vec<Vec<&PortHolder>> {
    let mut g = rollup::group(e.holders.iter().filter(|h| h.blocks), |h| Key {
        state: h.state,
        timewait: h.timewait,
        laddr: h.laddr,
        owner: owner(h),
        why: h.why.clone(),
    });
    g.sort_by_key(|g| std::cmp::Reverse(g.len()));
    g
}

/// `127.0.0.1:40000-40008`: a group's local address and its ports.
fn local(g: &[&PortHolder], max: usize) -> String {
    let ports: Vec<u16> = g.iter().map(|h| h.lport).collect();
    let p = rollup::ports(&ports, max);
    match g[0].laddr {
        std::net::IpAddr::V4(a) => format!("{a}:{p}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
}

/// What `tcp_tw_reuse` is set to, in words.
fn tw_reuse_words(v: u8) -> &'static str {
    match v {
        0 => "off",
        1 => "on",
        2 => "loopback only",
        _ => "unknown value",
    }
}

/// The one-screen text form of a `connect()` explanation.
pub fn write_connect(e: &Explanation, view: View, out: &mut impl Write) -> io::Result<()> {
    let mut out = Lines::new(out, view);
    out.para(
        "",
        2,
        &format!(
            "connect() to {} from {} in netns {}",
            e.destination, e.source, e.netns
        ),
    )?;
    let reserved: Vec<String> = e
        .reserved
        .iter()
        .map(|[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    out.para(
        "  ",
        4,
        &format!(
            "ephemeral range {}-{} (net.ipv4.ip_local_port_range): {} usable ports{}",
            e.range[0],
            e.range[1],
            e.usable,
            if reserved.is_empty() {
                String::new()
            } else {
                format!(" (reserved: {})", reserved.join(","))
            }
        ),
    )?;
    let connected: usize = e.in_use.values().sum();
    let states: Vec<String> = e.in_use.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let tw = &e.time_wait;
    let mut toward = format!(
        "toward it: {connected} connected{}; {} TIME_WAIT",
        if states.is_empty() {
            String::new()
        } else {
            format!(" ({})", states.join(", "))
        },
        tw.count,
    );
    if tw.count > 0 {
        // What "not reusable" means: a new connection cannot take the
        // 4-tuple over (tcp_twsk_unique()); it frees when its timer ends.
        toward.push_str(&format!(
            "{}: {} can be taken over now (tcp_tw_reuse), {} once older than tcp_tw_reuse_delay, {} only by expiring",
            match tw.expires_in_ms {
                Some([a, b]) => format!(", expiring {}", words::within(a, b)),
                None => String::new(),
            },
            tw.reusable_now,
            tw.reusable_later,
            tw.not_reusable,
        ));
        if tw.at_boundary > 0 {
            toward.push_str(&format!(
                ", {} at tcp_tw_reuse_delay's edge",
                tw.at_boundary
            ));
        }
    }
    out.para("  ", 4, &toward)?;
    out.para(
        "  ",
        4,
        &format!(
            "held for every destination: {} bound without connect(), {} listening; {} connections toward other destinations",
            e.bound_only, e.listening, e.other_destinations
        ),
    )?;
    out.para(
        "  ",
        4,
        &format!(
            "settings: net.ipv4.tcp_tw_reuse={} ({}), tcp_tw_reuse_delay={}, tcp_timestamps={} ({})",
            e.tcp_tw_reuse,
            tw_reuse_words(e.tcp_tw_reuse),
            e.tcp_tw_reuse_delay_ms
                .map_or("1 s (no such sysctl here)".to_owned(), |d| format!("{d} ms")),
            e.tcp_timestamps,
            if e.tcp_timestamps == 0 { "off" } else { "on" }
        ),
    )?;
    out.line(&format!("  free ports toward it: {}", e.free))?;
    let groups = groups(e);
    if !groups.is_empty() {
        let shown = view.limit.unwrap_or(usize::MAX).min(groups.len());
        let mut table = Table {
            header: vec!["COUNT", "STATE", "LOCAL", "REMOTE", "OWNER", "FREE IN"],
            rows: Vec::new(),
            optional: vec![3],
            right: vec![0],
        };
        for g in &groups[..shown] {
            let h = g[0];
            let peers: Vec<_> = g.iter().map(|h| (h.raddr, h.rport)).collect();
            // The STATE column already names the state the reason starts with.
            let state = format!("{}, ", h.state);
            let mut why = h.why.strip_prefix(&state).unwrap_or(&h.why).to_owned();
            if let Some(reuse) = rollup::expiry(g.iter().filter_map(|h| h.reusable_in_ms)) {
                why.push_str(&format!(" (in {reuse})"));
            }
            table.rows.push((
                vec![
                    g.len().to_string(),
                    h.state.to_string(),
                    local(g, 14),
                    rollup::remotes(&peers),
                    owner(h),
                    rollup::expiry(g.iter().filter_map(|h| h.expires_ms))
                        .unwrap_or_else(|| "-".into()),
                ],
                why,
            ));
        }
        table.write(&mut out)?;
        if shown < groups.len() {
            let hidden: usize = groups[shown..].iter().map(Vec::len).sum();
            out.line(&more_rows(groups.len() - shown, hidden))?;
        }
    }
    out.blank()?;
    let mut verdict = e.verdict.to_string();
    if let Some(u) = &e.uncertain {
        verdict.push_str(&format!(" (uncertain: {u})"));
    }
    out.para("connect() ", 2, &verdict)?;
    out.para(
        "  rule: ",
        4,
        &format!("{}: {}", e.rule.function, e.rule.condition),
    )?;
    for a in &e.advice {
        out.para("  advice: ", 4, a)?;
    }
    out.para(
        "assumes: ",
        4,
        &format!(
            "{} (--json says each in full)",
            e.assumptions_short.join("; ")
        ),
    )?;
    Ok(())
}

/// One line for a failed `connect()` in the stream: the rule, the count
/// behind it, the first (rolled-up) holders and the safest advice.
pub fn summary_line(e: &Explanation) -> String {
    let mut line = format!("{}: {}", e.rule.function, e.rule.condition);
    let held: Vec<String> = groups(e)
        .iter()
        .take(3)
        .map(|g| {
            let h = g[0];
            let peers: Vec<_> = g.iter().map(|h| (h.raddr, h.rport)).collect();
            format!(
                "{}{} {} -> {} ({})",
                if g.len() > 1 {
                    format!("{} ", g.len())
                } else {
                    String::new()
                },
                h.state,
                local(g, 40),
                rollup::remotes(&peers),
                owner(h)
            )
        })
        .collect();
    if !held.is_empty() {
        line.push_str(&format!("; held by {}", held.join(", ")));
    }
    if let Some(a) = e.advice.first() {
        line.push_str(&format!("; {a}"));
    }
    line
}
