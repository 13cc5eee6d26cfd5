//! The text of a port's explanation: its sockets rolled up, then the
//! verdicts of `bind()` and `listen()` with their blockers and advice.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use super::{Lines, Table, View, more_rows, rollup};
use crate::{
    explain::{
        Outcome,
        bind::{Blocker, Decision, Explanation},
        inventory::{FLAGS_KERNEL, Holder},
        words::{self, fmt_addr, opts},
    },
    kernel::{Proto, TcpState},
};

/// Where a state's rows go in the table: listeners first, then sockets
/// only bound, connections, and TIME_WAIT last.
fn rank(h: &Holder) -> u8 {
    match (h.timewait, h.state) {
        (true, _) => 3,
        (false, TcpState::LISTEN) => 0,
        (false, TcpState::CLOSE) => 1,
        _ => 2,
    }
}

/// A holder's owner in a table cell: `PID COMM`, `(was PID COMM)` for a
/// TIME_WAIT connection whose last owner is known, `-` for none.
fn owner_cell(h: &Holder) -> String {
    match (h.pid, &h.comm, h.last_pid, &h.last_comm) {
        (Some(p), Some(c), ..) => format!("{p} {c}"),
        (Some(p), None, ..) => p.to_string(),
        (None, _, Some(p), Some(c)) => format!("(was {p} {c})"),
        _ => "-".into(),
    }
}

/// What tells one row from another: everything shown but the far end
/// and the expiry.
#[derive(Hash, PartialEq, Eq)]
struct Key {
    proto: Proto,
    state: TcpState,
    timewait: bool,
    local: String,
    owner: String,
    uid: Option<u32>,
    opts: String,
    note: String,
}

fn note(h: &Holder, flags_source: &str) -> String {
    let mut parts = Vec::new();
    match (&h.container, &h.cgroup) {
        (Some(id), _) => parts.push(format!(
            "container {}",
            id.get(..id.len().min(12)).unwrap_or(id)
        )),
        (None, Some(path)) if path != "/" => parts.push(format!("cgroup {path}")),
        _ => {}
    }
    if h.flags_source != flags_source {
        parts.push(format!("flags from {}", h.flags_source));
    }
    parts.join(", ")
}

/// The one-screen text form of a port's explanation.
pub fn write_bind(e: &Explanation, view: View, out: &mut impl Write) -> io::Result<()> {
    let mut out = Lines::new(out, view);
    let r = &e.request;
    let mut groups = rollup::group(&e.holders, |h| Key {
        proto: h.proto,
        state: h.state,
        timewait: h.timewait,
        local: fmt_addr(h.laddr, h.lport),
        owner: owner_cell(h),
        uid: h.uid,
        opts: opts(h.reuseaddr, h.reuseport, h.v6only),
        note: note(h, &e.flags_source),
    });
    groups.sort_by_key(|g| {
        let h = g[0];
        (h.proto != r.proto, rank(h), std::cmp::Reverse(g.len()))
    });
    out.para(
        "",
        2,
        &format!(
            "port {}/{} in netns {}: {}{} (flags from {})",
            r.lport,
            r.proto,
            e.netns,
            words::count(e.holders.len(), "socket", "sockets"),
            if groups.len() < e.holders.len() {
                format!(" in {}", words::count(groups.len(), "row", "rows"))
            } else {
                String::new()
            },
            e.flags_source
        ),
    )?;
    if !groups.is_empty() {
        let protos = e.holders.iter().any(|h| h.proto != e.holders[0].proto);
        let shown = view.limit.unwrap_or(usize::MAX).min(groups.len());
        let mut table = Table {
            header: vec![
                "COUNT", "PROTO", "STATE", "LOCAL", "REMOTE", "OWNER", "UID", "OPTS", "FREE IN",
            ],
            rows: Vec::new(),
            // Without a second protocol the PROTO column says nothing;
            // REMOTE gives way first when the screen is narrow.
            optional: vec![4, 1],
            right: vec![0],
        };
        for g in &groups[..shown] {
            let h = g[0];
            let peers: Vec<_> = g.iter().map(|h| (h.raddr, h.rport)).collect();
            table.rows.push((
                vec![
                    g.len().to_string(),
                    if protos {
                        h.proto.to_string()
                    } else {
                        String::new()
                    },
                    h.state.to_string(),
                    fmt_addr(h.laddr, h.lport),
                    rollup::remotes(&peers),
                    owner_cell(h),
                    h.uid.map_or("-".into(), |u| u.to_string()),
                    opts(h.reuseaddr, h.reuseport, h.v6only),
                    rollup::expiry(g.iter().filter_map(|h| h.expires_ms))
                        .unwrap_or_else(|| "-".into()),
                ],
                note(h, &e.flags_source),
            ));
        }
        if !protos {
            table.header.remove(1);
            table.optional = vec![3];
            for (cells, _) in &mut table.rows {
                cells.remove(1);
            }
        }
        table.write(&mut out)?;
        if shown < groups.len() {
            let hidden: usize = groups[shown..].iter().map(Vec::len).sum();
            out.line(&more_rows(groups.len() - shown, hidden))?;
        }
        out.line(&format!("OPTS: {}", words::OPTS_LEGEND))?;
    }
    out.blank()?;
    let set: Vec<&str> = [
        (r.reuseaddr, "SO_REUSEADDR"),
        (r.reuseport, "SO_REUSEPORT"),
        (r.v6only, "IPV6_V6ONLY"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    out.para(
        "",
        4,
        &format!(
            "new {} socket {} ({}, uid {}):",
            r.proto,
            fmt_addr(r.laddr, r.lport),
            if set.is_empty() {
                "no SO_REUSEADDR, SO_REUSEPORT or IPV6_V6ONLY".to_owned()
            } else {
                set.join(", ")
            },
            r.uid
        ),
    )?;
    let holders: HashMap<u64, &Holder> = e.holders.iter().map(|h| (h.cookie, h)).collect();
    for (what, d) in [("bind()", &e.bind), ("listen()", &e.listen)] {
        write_decision(&mut out, what, d, &holders, view)?;
    }
    if let Some(p) = &e.probe {
        out.line(&format!(
            "  probe: bind() {}{}: {}",
            p.bind,
            p.listen
                .as_ref()
                .map(|l| format!(", listen() {l}"))
                .unwrap_or_default(),
            if p.agrees {
                "agrees with the prediction"
            } else if p.agrees_with_alternative {
                "agrees with the alternative"
            } else {
                "DIFFERS from the prediction"
            }
        ))?;
    }
    for n in &e.notes {
        out.para("note: ", 6, n)?;
    }
    Ok(())
}

fn write_decision<W: Write>(
    out: &mut Lines<'_, W>,
    what: &str,
    d: &Decision,
    holders: &HashMap<u64, &Holder>,
    view: View,
) -> io::Result<()> {
    if d.result == Outcome::NotReached {
        // The rule says only that the bind above failed.
        return out.line(&format!(
            "  {what:<9} {} (the bind() above failed)",
            d.result
        ));
    }
    let mut verdict = d.result.to_string();
    if let Some(alt) = d.if_unknown_flags_set {
        verdict.push_str(&format!(" (or {alt} if the unknown flags are set)"));
    }
    if let Some(alt) = d.if_chain_order_differs {
        verdict.push_str(&format!(
            " (or {alt}, depending on the order of IPv4 and IPv6 sockets in the kernel's hash chain)"
        ));
    }
    if let Some(alt) = d.if_udp_walk_differs {
        verdict.push_str(&format!(
            " (or {alt}: whether a SO_REUSEPORT match ends udp_lib_lport_inuse()'s walk depends on the kernel, and it could not be measured here)"
        ));
    }
    out.para(&format!("  {what:<9} "), 14, &verdict)?;
    out.para(
        "    rule: ",
        10,
        &format!("{}: {}", d.rule.function, d.rule.condition),
    )?;
    let groups = blocker_groups(d, holders);
    let shown = view.limit.unwrap_or(usize::MAX).min(groups.len());
    for g in &groups[..shown] {
        out.para("    blocked by: ", 6, &blocked_by(g, holders))?;
        if !d.rule.condition.ends_with(&g[0].why) {
            out.para("      because: ", 8, &g[0].why)?;
        }
    }
    if shown < groups.len() {
        let hidden: usize = groups[shown..].iter().map(Vec::len).sum();
        out.line(&format!("    {}", more_rows(groups.len() - shown, hidden)))?;
    }
    for a in &d.advice {
        out.para("    advice: ", 6, a)?;
    }
    Ok(())
}

/// The blockers rolled up by what they are and why they block.
fn blocker_groups<'a>(d: &'a Decision, holders: &HashMap<u64, &Holder>) -> Vec<Vec<&'a Blocker>> {
    rollup::group(&d.blockers, |b| {
        let last = holders
            .get(&b.cookie)
            .and_then(|h| h.last_pid.zip(h.last_comm.clone()));
        (
            b.state,
            fmt_addr(b.laddr, b.lport),
            b.pid,
            b.comm.clone(),
            last,
            b.why.clone(),
        )
    })
}

/// One rolled-up blocker: `LISTEN 0.0.0.0:8080 (pid 7 srv, cookie 42)`,
/// or `50 TIME_WAIT 127.0.0.1:8080 -> 127.0.0.1:* (no owner, free in
/// 12-58 s)`.
fn blocked_by(g: &[&Blocker], holders: &HashMap<u64, &Holder>) -> String {
    let b = g[0];
    let last = holders
        .get(&b.cookie)
        .and_then(|h| h.last_pid.zip(h.last_comm.as_deref()));
    let mut who = words::owner(b.pid, b.comm.as_deref(), last);
    if let Some(expiry) = rollup::expiry(
        g.iter()
            .filter_map(|b| holders.get(&b.cookie).and_then(|h| h.expires_ms)),
    ) {
        who.push_str(&format!(", free in {expiry}"));
    }
    if g.len() == 1 {
        who.push_str(&format!(", cookie {}", b.cookie));
    }
    let peers: Vec<_> = g.iter().map(|b| (b.raddr, b.rport)).collect();
    // Unconnected sockets have no far end to show.
    let remote = if peers.iter().all(|(a, p)| a.is_unspecified() && *p == 0) {
        String::new()
    } else {
        format!(" -> {}", rollup::remotes(&peers))
    };
    format!(
        "{}{} {}{remote} ({who})",
        if g.len() > 1 {
            format!("{} ", g.len())
        } else {
            String::new()
        },
        b.state,
        fmt_addr(b.laddr, b.lport),
    )
}

/// One line for a failed `bind()` (or `listen()`, with `listen`) in the
/// stream: the rule, the sockets that hold the port (rolled up, the first
/// three rows) and the safest advice.
pub fn failure_line(e: &Explanation, listen: bool) -> String {
    let d = if listen { &e.listen } else { &e.bind };
    if d.result.is_ok() {
        return if e.flags_source == FLAGS_KERNEL {
            "no socket that existed at the failure blocks it now: the holder has gone since".into()
        } else {
            "no socket that blocks it is visible now: the holder has gone since, or it is a \
             TCP socket bound without listen(), which sock_diag lists only from Linux 6.6 on"
                .into()
        };
    }
    let holders: HashMap<u64, &Holder> = e.holders.iter().map(|h| (h.cookie, h)).collect();
    let held: Vec<String> = rollup::group(&d.blockers, |b| {
        let last = holders
            .get(&b.cookie)
            .and_then(|h| h.last_pid.zip(h.last_comm.clone()));
        (
            b.state,
            fmt_addr(b.laddr, b.lport),
            b.pid,
            b.comm.clone(),
            last,
        )
    })
    .iter()
    .take(3)
    .map(|g| {
        let b = g[0];
        let last = holders
            .get(&b.cookie)
            .and_then(|h| h.last_pid.zip(h.last_comm.as_deref()));
        format!(
            "{}{} {} ({})",
            if g.len() > 1 {
                format!("{} ", g.len())
            } else {
                String::new()
            },
            b.state,
            fmt_addr(b.laddr, b.lport),
            words::owner(b.pid, b.comm.as_deref(), last)
        )
    })
    .collect();
    let mut line = format!("{}: {}", d.rule.function, d.rule.condition);
    if !held.is_empty() {
        line.push_str(&format!("; held by {}", held.join(", ")));
    }
    if let Some(a) = d.advice.first() {
        line.push_str(&format!("; {a}"));
    }
    line
}
