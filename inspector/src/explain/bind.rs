//! The bind explainer: from a checked [`BindPlan`] and the sockets on the
//! port ([`Inventory`]), the verdicts of `bind()` and `listen()` with the
//! sockets that block them, the advice, and the notes (a UDP address
//! shared across users, a port inside the ephemeral range). No I/O: the
//! kernel was read before, and `--probe` runs after ([`super::probe`]).

use std::net::IpAddr;

use serde::Serialize;

use super::{
    advice::{self, Who},
    inventory::{FLAGS_KERNEL, Holder, Inventory, Settings},
    probe::ProbeResult,
    request::BindPlan,
    rules::{Outcome, Port, Proto, Rule, Sock, Verdict},
    words::fmt_addr,
};
use crate::kernel::{Family, TcpState};

/// A blocking socket, named the way the inventory names it.
#[derive(Debug, Clone, Serialize)]
pub struct Blocker {
    pub cookie: u64,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub state: TcpState,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The condition that makes this socket block the call.
    pub why: String,
}

/// A verdict with its blockers resolved to sockets.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub result: Outcome,
    pub rule: Rule,
    pub blockers: Vec<Blocker>,
    /// Safest first.
    pub advice: Vec<String>,
    pub if_unknown_flags_set: Option<Outcome>,
    pub if_chain_order_differs: Option<Outcome>,
    pub if_udp_walk_differs: Option<Outcome>,
}

impl Decision {
    /// The results the kernel may return, the prediction first, then the
    /// alternatives it states.
    pub fn possible(&self) -> impl Iterator<Item = Outcome> + '_ {
        std::iter::once(self.result).chain(
            [
                self.if_unknown_flags_set,
                self.if_chain_order_differs,
                self.if_udp_walk_differs,
            ]
            .into_iter()
            .flatten(),
        )
    }
}

/// The would-be socket, in the trace schema's field names.
#[derive(Debug, Clone, Serialize)]
pub struct Wanted {
    pub proto: Proto,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub uid: u32,
}

/// UDP sockets sharing one address through SO_REUSEADDR under different
/// uids: `udp_lib_lport_inuse()` lets any SO_REUSEADDR socket join whatever
/// its uid, and for unicast `__udp4_lib_lookup()` / `__udp6_lib_lookup()`
/// deliver to one of them (the one bound last), not to all.
#[derive(Debug, Clone, Serialize)]
pub struct HijackRisk {
    pub laddr: IpAddr,
    pub lport: u16,
    /// The distinct uids of the sockets sharing the address.
    pub uids: Vec<u32>,
    /// The sharing holders' cookies.
    pub cookies: Vec<u64>,
    /// The requested socket would join them with a uid of its own.
    pub includes_request: bool,
}

/// The whole answer (`--json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub netns: u32,
    pub request: Wanted,
    /// Where the holders' SO_REUSEADDR/SO_REUSEPORT come from: `kernel`
    /// (socket iterators), or `sock_diag (iterators refused: ...)`.
    pub flags_source: String,
    pub holders: Vec<Holder>,
    pub bind: Decision,
    pub listen: Decision,
    pub probe: Option<ProbeResult>,
    pub hijack_risk: Vec<HijackRisk>,
    pub notes: Vec<String>,
    /// Set when the port is inside the namespace's ephemeral range
    /// (`ip_local_port_range`), where connect() picks source ports.
    pub ephemeral: Option<Ephemeral>,
}

/// A port inside the ephemeral range: `__inet_hash_connect()` may hand it
/// to any outgoing connection, and while one holds it a listener's bind()
/// fails (or succeeds on a connection's port only with SO_REUSEADDR on
/// both, never for listen()).
#[derive(Debug, Clone, Serialize)]
pub struct Ephemeral {
    pub range: [u16; 2],
    /// In `ip_local_reserved_ports`: connect() never picks it.
    pub reserved: bool,
    /// Outgoing connections using the port as their source port now.
    pub outgoing: Vec<Outgoing>,
}

/// A connection whose source port is the port asked about.
#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    pub state: TcpState,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cookie: u64,
}

/// Predicts `bind()` and `listen()` of the planned socket from the
/// sockets on its port.
pub fn predict(plan: &BindPlan, inv: Inventory) -> Explanation {
    let Inventory {
        mut holders,
        netns,
        unprivileged_port_start,
        flags_source,
        udp_walk,
        settings,
    } = inv;
    let sock = &plan.sock;
    // Only sockets of the same protocol share a port's bind table.
    let same: Vec<&Holder> = holders.iter().filter(|h| h.proto == sock.proto).collect();
    let mut port = Port::from_inventory(same.iter().map(|h| h.to_rule_sock()).collect());
    port.unprivileged_port_start = unprivileged_port_start;
    port.udp_walk = udp_walk;
    let (bind, listen) = port.predict(sock);
    let who: Vec<Who> = same
        .iter()
        .map(|h| Who {
            pid: h.pid,
            comm: h.comm.clone(),
        })
        .collect();
    let advice = advice::advise(&port, &who, sock, plan.comm.as_deref(), &bind, &listen);
    let advice: Vec<String> = advice.into_iter().map(|a| a.text).collect();
    let mut notes = Vec::new();
    if sock.proto == Proto::Tcp && sock.reuseport == Some(true) && !bind.is_ok() {
        notes.push(
            "the kernel's per-port SO_REUSEPORT cache (tb->fastreuseport) can let a SO_REUSEPORT bind through that the full check refuses; it depends on the order of earlier binds, which no inventory shows: --probe tries it"
                .to_owned(),
        );
    }
    if flags_source != FLAGS_KERNEL {
        notes.push(format!(
            "holders from sock_diag, which does not report SO_REUSEADDR/SO_REUSEPORT ({flags_source}): their flags are unknown, assumed unset; `if_unknown_flags_set` gives the result if they were set"
        ));
    }
    let hijack_risk = hijack_risks(&same, sock, bind.is_ok());
    for r in &hijack_risk {
        let uids: Vec<String> = r.uids.iter().map(u32::to_string).collect();
        notes.push(format!(
            "hijack risk: UDP {} is shared through SO_REUSEADDR by uids {}{}; udp_lib_lport_inuse() does not compare uids for SO_REUSEADDR, and __udp4_lib_lookup() gives unicast datagrams to one socket, the one bound last",
            fmt_addr(r.laddr, r.lport),
            uids.join(", "),
            if r.includes_request {
                " (counting the requested socket)"
            } else {
                ""
            }
        ));
    }
    let failed = !bind.is_ok();
    let mut bind = decision(bind, &same);
    let mut listen = decision(listen, &same);
    if failed {
        bind.advice = advice;
    } else {
        listen.advice = advice;
    }
    let ephemeral = settings.as_ref().and_then(|s| ephemeral(s, sock, &holders));
    if let Some(eph) = &ephemeral {
        let (note, advice) = ephemeral_note(eph, sock.port);
        notes.push(note);
        if let Some(a) = advice {
            // A sysctl: host-wide, so the last of the advice.
            if !eph.outgoing.is_empty() && !bind.advice.contains(&a) {
                bind.advice.push(a);
            } else {
                notes.push(a);
            }
        }
    }
    if plan.cgroup.is_some() || plan.container.is_some() {
        let before = holders.len();
        holders.retain(|h| {
            plan.cgroup
                .as_deref()
                .is_none_or(|c| h.cgroup.as_deref().is_some_and(|p| p.starts_with(c)))
                && plan
                    .container
                    .as_deref()
                    .is_none_or(|c| h.container.as_deref().is_some_and(|id| id.starts_with(c)))
        });
        let hidden = before - holders.len();
        if hidden > 0 {
            notes.push(format!(
                "{hidden} holder(s) outside --cgroup/--container are not listed; the verdict counts them"
            ));
        }
    }
    Explanation {
        netns,
        request: Wanted {
            proto: sock.proto,
            family: Family::of(sock.addr),
            laddr: sock.addr,
            lport: sock.port,
            reuseaddr: sock.reuseaddr == Some(true),
            reuseport: sock.reuseport == Some(true),
            v6only: sock.v6only,
            uid: sock.uid,
        },
        flags_source,
        bind,
        listen,
        holders,
        probe: None,
        hijack_risk,
        notes,
        ephemeral,
    }
}

fn decision(v: Verdict, holders: &[&Holder]) -> Decision {
    Decision {
        blockers: v
            .blockers
            .iter()
            .zip(v.why.iter())
            .filter_map(|(&i, why)| holders.get(i).map(|h| (h, why)))
            .map(|(h, why)| Blocker {
                cookie: h.cookie,
                laddr: h.laddr,
                lport: h.lport,
                raddr: h.raddr,
                rport: h.rport,
                state: h.state,
                pid: h.pid,
                comm: h.comm.clone(),
                why: why.clone(),
            })
            .collect(),
        result: v.result,
        rule: v.rule,
        advice: Vec::new(),
        if_unknown_flags_set: v.if_unknown_flags_set,
        if_chain_order_differs: v.if_chain_order_differs,
        if_udp_walk_differs: v.if_udp_walk_differs,
    }
}

/// UDP addresses shared through SO_REUSEADDR by more than one uid,
/// counting the requested socket when it would join.
fn hijack_risks(holders: &[&Holder], sock: &Sock, bind_ok: bool) -> Vec<HijackRisk> {
    if sock.proto != Proto::Udp {
        return Vec::new();
    }
    let mut groups: Vec<(IpAddr, i32, Vec<&Holder>)> = Vec::new();
    for h in holders {
        // Connected sockets match on the 4-tuple first: only unconnected
        // ones compete for the address's unicast traffic.
        if h.reuseaddr != Some(true) || h.uid.is_none() || h.state != TcpState::CLOSE {
            continue;
        }
        match groups
            .iter_mut()
            .find(|(a, dev, _)| *a == h.laddr && *dev == h.bound_dev_if)
        {
            Some((_, _, g)) => g.push(h),
            None => groups.push((h.laddr, h.bound_dev_if, vec![h])),
        }
    }
    groups
        .into_iter()
        .filter_map(|(laddr, _, g)| {
            let mut uids: Vec<u32> = g.iter().filter_map(|h| h.uid).collect();
            let includes_request = bind_ok && sock.reuseaddr == Some(true) && laddr == sock.addr;
            if includes_request {
                uids.push(sock.uid);
            }
            uids.sort_unstable();
            uids.dedup();
            (uids.len() > 1).then(|| HijackRisk {
                laddr,
                lport: sock.port,
                uids,
                cookies: g.iter().map(|h| h.cookie).collect(),
                includes_request,
            })
        })
        .collect()
}

/// The ephemeral-range facts of the port: its namespace's settings and the
/// connections of `holders` that use it as their source port. A socket
/// sharing the port with a listener may be an accepted one: only when no
/// listener is on the port are its connections outgoing for sure.
fn ephemeral(s: &Settings, sock: &Sock, holders: &[Holder]) -> Option<Ephemeral> {
    if !s.in_range(sock.port) {
        return None;
    }
    let ours = holders.iter().filter(|h| h.proto == sock.proto);
    let listener = ours.clone().any(|h| h.state == TcpState::LISTEN);
    let outgoing = if listener {
        Vec::new()
    } else {
        ours.filter(|h| h.state != TcpState::CLOSE && h.state != TcpState::LISTEN)
            .map(|h| Outgoing {
                state: h.state,
                laddr: h.laddr,
                raddr: h.raddr,
                rport: h.rport,
                pid: h.pid,
                comm: h.comm.clone(),
                cookie: h.cookie,
            })
            .collect()
    };
    Some(Ephemeral {
        range: [s.range.0, s.range.1],
        reserved: s.is_reserved(sock.port),
        outgoing,
    })
}

/// The note and advice for a port inside the ephemeral range.
fn ephemeral_note(e: &Ephemeral, port: u16) -> (String, Option<String>) {
    let [lo, hi] = e.range;
    let mut note = format!(
        "port {port} is inside the ephemeral range {lo}-{hi} (net.ipv4.ip_local_port_range){}",
        if e.reserved {
            ", but reserved (ip_local_reserved_ports): connect() does not pick it"
        } else {
            ": connect() may pick it as a source port at any time"
        }
    );
    for o in e.outgoing.iter().take(3) {
        note.push_str(&format!(
            "; held now as the source port of {} {} -> {} ({})",
            o.state,
            fmt_addr(o.laddr, port),
            fmt_addr(o.raddr, o.rport),
            super::words::owner(o.pid, o.comm.as_deref(), None)
        ));
    }
    if e.outgoing.len() > 3 {
        note.push_str(&format!(" and {} more", e.outgoing.len() - 3));
    }
    let advice = (!e.reserved).then(|| {
        format!(
            "keep connect() off the port: add it to net.ipv4.ip_local_reserved_ports (sysctl -w net.ipv4.ip_local_reserved_ports={port}), or move the range"
        )
    });
    (note, advice)
}
