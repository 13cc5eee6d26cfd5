//! The advice `explain` prints under a bind verdict (`advice:` lines):
//! what would change a refusal, and what a success implies.
//!
//! Advice knows who holds the port. A program of another user, or another
//! program of the same user, is found out (and stopped, if it should not
//! be there) before anything else; SO_REUSEPORT is offered only where the
//! holder may be another instance of the same service as the same user,
//! since the kernel then spreads connections across both. Items are
//! ranked by how safe they are to follow ([`Safety`]); the kernel's rules
//! themselves live in [`super::rules`], which advice only asks what-if
//! questions.

use std::collections::BTreeMap;

use super::{
    rules::{Outcome, Port, Proto, Sock, SockState, Verdict, inet_rcv_saddr_equal},
    words::{fmt_addr, within},
};
use crate::kernel::Errno;

/// Who holds one socket of the port, as far as the advice cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// How safe a piece of advice is to follow; advice is printed safest
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Safety {
    /// Nothing to change: the port frees itself.
    Wait,
    /// Find out what holds the port before changing anything.
    Identify,
    /// Change only the new socket: another address or port, its options.
    OwnSocket,
    /// Share the port with its holder, or change the holder: only for
    /// cooperating instances of one service.
    Share,
    /// Host-wide settings (sysctls): they change every program's sockets.
    Host,
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub safety: Safety,
    pub text: String,
}

fn item(safety: Safety, text: impl Into<String>) -> Advice {
    Advice {
        safety,
        text: text.into(),
    }
}

/// The advice for a prediction on `port` (whose sockets `who` names, in
/// the same order) of the new socket `sk`, wanted by the program `comm`
/// when known; safest first, without repeats.
pub fn advise(
    port: &Port,
    who: &[Who],
    sk: &Sock,
    comm: Option<&str>,
    bind: &Verdict,
    listen: &Verdict,
) -> Vec<Advice> {
    let failing = if !bind.is_ok() {
        Some(bind)
    } else if !listen.is_ok() && sk.proto == Proto::Tcp {
        Some(listen)
    } else {
        None
    };
    let mut advice = Vec::new();
    match failing {
        Some(v) => {
            let blockers: Vec<usize> = v
                .blockers
                .iter()
                .copied()
                .filter(|&i| i < port.socks.len())
                .collect();
            let only_timewait = !blockers.is_empty()
                && blockers
                    .iter()
                    .all(|&i| port.socks[i].state == SockState::TimeWait);
            // The smallest change of the new socket's options that works,
            // checked against the rules; the TIME_WAIT advice does not
            // repeat it.
            let fix = if v.result == Outcome::Err(Errno::EADDRINUSE) {
                what_if(port, who, sk, comm)
            } else {
                None
            };
            let reuseaddr_fixes = fix.as_ref().is_some_and(|(fix, _)| *fix == Fix::ReuseAddr);
            advice.extend(time_wait_advice(
                port,
                &blockers,
                sk,
                only_timewait,
                reuseaddr_fixes,
            ));
            let mut seen_owner = Vec::new();
            for &i in &blockers {
                let h = &port.socks[i];
                if h.state == SockState::TimeWait {
                    continue;
                }
                let w = who.get(i).cloned().unwrap_or_default();
                if !seen_owner.contains(&(w.clone(), h.uid, h.state)) {
                    advice.extend(holder_advice(sk, comm, h, &w));
                    seen_owner.push((w, h.uid, h.state));
                }
                advice.extend(flag_advice(sk, h));
            }
            advice.extend(fix.map(|(_, a)| a));
            if v.result == Outcome::Err(Errno::EACCES) {
                advice.push(item(
                    Safety::OwnSocket,
                    format!(
                        "bind as root, grant CAP_NET_BIND_SERVICE, or use a port >= {} (net.ipv4.ip_unprivileged_port_start)",
                        port.unprivileged_port_start
                    ),
                ));
            }
        }
        None if sk.proto == Proto::Tcp => advice.extend(later_listens(port, sk)),
        None => {
            if sk.reuse()
                && port
                    .socks
                    .iter()
                    .any(|h| h.reuse() && inet_rcv_saddr_equal(sk, h, false))
            {
                advice.push(item(
                    Safety::Share,
                    "SO_REUSEADDR on both UDP sockets: unicast datagrams go to the most recently bound one only, not to both",
                ));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    advice.retain(|a| seen.insert(a.text.clone()));
    // Stable: within a rank, the order of the blockers.
    advice.sort_by_key(|a| a.safety);
    advice
}

/// Advice about one holder that is not a timewait socket: who it is,
/// before what could be changed about it.
fn holder_advice(sk: &Sock, comm: Option<&str>, h: &Sock, w: &Who) -> Vec<Advice> {
    let at = fmt_addr(h.addr, h.port);
    let what = match h.state {
        SockState::Listen => "listens on",
        SockState::Bound => "is bound to",
        _ => "is connected from",
    };
    let Some(pid) = w.pid else {
        return vec![item(
            Safety::Identify,
            format!(
                "no process in this namespace holds {at} now (a socket passed to another namespace, or closed since): find it with `ss -anpe 'sport = :{}'`",
                h.port
            ),
        )];
    };
    let name = w.comm.as_deref().unwrap_or("?");
    let other_user = h.uid != sk.uid;
    let other_program = comm.is_some_and(|c| c != name);
    let mut out = Vec::new();
    if other_user {
        out.push(item(
            Safety::Identify,
            format!(
                "pid {pid} {name} {what} {at} as uid {}, another user than the new socket's (uid {}): find out what it is (`ps -o pid,user,args -p {pid}`) and stop it if it should not be there, or pick another port{}",
                h.uid,
                sk.uid,
                if h.state == SockState::Listen {
                    "; no socket option shares a listening port with another user (SO_REUSEPORT needs the same uid)"
                } else {
                    ""
                }
            ),
        ));
        return out;
    }
    if other_program {
        out.push(item(
            Safety::Identify,
            format!(
                "pid {pid} {name} {what} {at}, another program than {}: find out why it has the port (`ps -o pid,args -p {pid}`) and stop it, or pick another port; SO_REUSEPORT would split the port's connections between the two programs",
                comm.unwrap_or("yours")
            ),
        ));
        return out;
    }
    out.push(item(
        Safety::Identify,
        format!(
            "pid {pid} {name} (uid {}) {what} {at}: if it is a leftover instance, stop it first (`ps -o pid,args -p {pid}`); otherwise pick another address or port",
            h.uid
        ),
    ));
    if h.proto == Proto::Tcp && h.state == SockState::Listen {
        out.push(item(
            Safety::Share,
            format!(
                "only if pid {pid} {name} is another instance of the same service, meant to run beside this one: set SO_REUSEPORT on every instance (all as uid {}) and the kernel spreads connections across them; SO_REUSEADDR never lets two TCP sockets listen on one address",
                h.uid
            ),
        ));
    }
    out
}

/// What the holder's own options do to the new socket.
fn flag_advice(sk: &Sock, h: &Sock) -> Vec<Advice> {
    let at = fmt_addr(h.addr, h.port);
    let mut out = Vec::new();
    if h.state != SockState::Listen && h.reuseaddr == Some(false) && h.proto == Proto::Tcp {
        out.push(item(
            Safety::Share,
            format!(
                "{at} has no SO_REUSEADDR: sharing needs it on both sockets (and the holder not listening)"
            ),
        ));
    }
    if h.is_v6() && h.is_wildcard() && !h.v6only && !sk.is_v6() {
        out.push(item(
            Safety::Share,
            format!(
                "{at} is dual-stack (IPV6_V6ONLY=0) and claims IPv4 too; with IPV6_V6ONLY=1 it would not"
            ),
        ));
    }
    out
}

/// The timewait blockers, rolled up by address and flags: how many, when
/// they go, and whether the new socket's SO_REUSEADDR gets past them.
fn time_wait_advice(
    port: &Port,
    blockers: &[usize],
    sk: &Sock,
    only: bool,
    reuseaddr_fixes: bool,
) -> Vec<Advice> {
    // (address, tw_reuse, tw_reuseport) -> (count, soonest, latest expiry)
    type Group = (usize, Option<u32>, Option<u32>);
    let mut groups: BTreeMap<(String, Option<bool>, Option<bool>), Group> = BTreeMap::new();
    for &i in blockers {
        let h = &port.socks[i];
        if h.state != SockState::TimeWait || h.proto != Proto::Tcp {
            continue;
        }
        let g = groups
            .entry((fmt_addr(h.addr, h.port), h.reuseaddr, h.reuseport))
            .or_insert((0, None, None));
        g.0 += 1;
        if let Some(ms) = h.expires_ms {
            g.1 = Some(g.1.map_or(ms, |m| m.min(ms)));
            g.2 = Some(g.2.map_or(ms, |m| m.max(ms)));
        }
    }
    let mut out = Vec::new();
    for ((at, reuseaddr, reuseport), (n, first, last)) in groups {
        let these = if n == 1 {
            format!("the TIME_WAIT socket on {at}")
        } else {
            format!("{n} TIME_WAIT sockets on {at}")
        };
        let when = match (first, last) {
            (Some(a), Some(b)) => format!("free {}", within(a, b)),
            _ => "free when their timers expire (60 s after the close at most)".to_owned(),
        };
        if only {
            out.push(item(
                Safety::Wait,
                format!(
                    "{these}: {when}; nothing to stop, the kernel removes them (TCP_TIMEWAIT_LEN)"
                ),
            ));
        }
        match reuseaddr {
            Some(false) if reuseport != Some(true) => out.push(item(
                Safety::OwnSocket,
                format!(
                    "{these} came from a socket without SO_REUSEADDR (tw_reuse=0): SO_REUSEADDR on the new socket does not get past {}; set SO_REUSEADDR on the service's listening socket so that its next restart can bind",
                    if n == 1 { "it" } else { "them" }
                ),
            )),
            Some(true) if !sk.reuse() && !reuseaddr_fixes => out.push(item(
                Safety::OwnSocket,
                format!(
                    "{these} {} SO_REUSEADDR: set SO_REUSEADDR on the new socket (it still never lets two sockets listen on one address)",
                    if n == 1 { "has" } else { "have" }
                ),
            )),
            None => out.push(item(
                Safety::OwnSocket,
                format!(
                    "sock_diag does not report a TIME_WAIT socket's SO_REUSEADDR: if the closed socket of {these} had it (accepted sockets inherit the listener's), SO_REUSEADDR on the new socket is enough; otherwise wait until they are {when}"
                ),
            )),
            _ => {}
        }
        if reuseaddr.is_none() {
            out.extend(inherited_hint(port, &at));
        }
    }
    out
}

/// A listener whose address covers timewait sockets of unknown flags:
/// if their connections were ones it accepted, they have the listener's
/// flags (`inet_csk_clone_lock()` copies the socket, `tcp_time_wait()`
/// copies `sk_reuse` to `tw_reuse`).
fn inherited_hint(port: &Port, tw_at: &str) -> Option<Advice> {
    let tw = port
        .socks
        .iter()
        .find(|s| s.state == SockState::TimeWait && fmt_addr(s.addr, s.port) == tw_at)?;
    let l = port.socks.iter().find(|l| {
        l.state == SockState::Listen
            && l.proto == Proto::Tcp
            && l.reuseaddr.is_some()
            && (l.addr == tw.addr || inet_rcv_saddr_equal(tw, l, true))
    })?;
    Some(item(
        Safety::OwnSocket,
        format!(
            "the listener {} has SO_REUSEADDR={} SO_REUSEPORT={}: TIME_WAIT sockets of connections it accepted have the same",
            fmt_addr(l.addr, l.port),
            u8::from(l.reuse()),
            u8::from(l.rport())
        ),
    ))
}

/// A change of the new socket's own options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fix {
    ReuseAddr,
    ReusePort,
    Both,
    V6Only,
}

impl Fix {
    fn name(self) -> &'static str {
        match self {
            Self::ReuseAddr => "SO_REUSEADDR",
            Self::ReusePort => "SO_REUSEPORT",
            Self::Both => "SO_REUSEADDR and SO_REUSEPORT",
            Self::V6Only => "IPV6_V6ONLY=1",
        }
    }
}

/// The smallest change of the new socket's own options that makes both
/// calls succeed (or at least the bind), and the change.
/// SO_REUSEPORT is offered only when the group it would join is not known
/// to be another program's.
fn what_if(port: &Port, who: &[Who], sk: &Sock, comm: Option<&str>) -> Option<(Fix, Advice)> {
    let mut tries: Vec<(Fix, Sock)> = Vec::new();
    let mut t = sk.clone();
    if !sk.reuse() {
        t.reuseaddr = Some(true);
        tries.push((Fix::ReuseAddr, t.clone()));
    }
    let mut t = sk.clone();
    if !sk.rport() {
        t.reuseport = Some(true);
        tries.push((Fix::ReusePort, t.clone()));
        if !sk.reuse() {
            t.reuseaddr = Some(true);
            tries.push((Fix::Both, t));
        }
    }
    if sk.is_v6() && sk.is_wildcard() && !sk.v6only {
        let mut t = sk.clone();
        t.v6only = true;
        tries.push((Fix::V6Only, t));
    }
    for (fix, t) in tries {
        let what = fix.name();
        let (b, l) = port.clone().predict_known(&t);
        let listen_ok = l.is_ok() || t.proto == Proto::Udp;
        let sharing = t.rport() && !sk.rport();
        let members: Vec<&Who> = port
            .socks
            .iter()
            .enumerate()
            .filter(|(_, s)| sharing && s.rport() && s.state != SockState::TimeWait)
            .filter_map(|(i, _)| who.get(i))
            .collect();
        if members
            .iter()
            .any(|w| comm.is_some_and(|c| w.comm.as_deref().is_some_and(|n| n != c)))
        {
            continue;
        }
        let group: Vec<String> = members
            .iter()
            .filter_map(|w| Some(format!("pid {} {}", w.pid?, w.comm.as_deref()?)))
            .collect();
        let (safety, caveat) = if sharing {
            (
                Safety::Share,
                format!(
                    ": it joins the SO_REUSEPORT group{}; only for another instance of the same service as the same uid (the kernel spreads connections across the group)",
                    if group.is_empty() {
                        String::new()
                    } else {
                        format!(" of {}", group.join(", "))
                    }
                ),
            )
        } else {
            (Safety::OwnSocket, String::new())
        };
        if b.is_ok() && listen_ok {
            return Some((
                fix,
                item(
                    safety,
                    format!(
                        "with {what} on the new socket, bind() {} succeed{caveat}",
                        if t.proto == Proto::Tcp {
                            "and listen() would"
                        } else {
                            "would"
                        }
                    ),
                ),
            ));
        }
        if b.is_ok() && t.proto == Proto::Tcp {
            return Some((
                fix,
                item(
                    safety,
                    format!(
                        "with {what} on the new socket bind() would succeed, but listen() would still fail ({}){caveat}",
                        l.result
                    ),
                ),
            ));
        }
    }
    None
}

/// Bound, not listening sockets whose own listen() fails once the new
/// socket listens.
fn later_listens(port: &Port, sk: &Sock) -> Vec<Advice> {
    let mut after = port.clone();
    let (b, Some(idx)) = after.bind(sk) else {
        return Vec::new();
    };
    if !b.is_ok() || !after.listen(idx).is_ok() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, h) in after.socks.iter().enumerate() {
        if i == idx || h.state != SockState::Bound || h.proto != Proto::Tcp {
            continue;
        }
        let mut probe = after.clone();
        if !probe.listen(i).is_ok() {
            out.push(item(
                Safety::Identify,
                format!(
                    "{} is bound but not listening: its own listen() will fail with EADDRINUSE once this socket listens",
                    fmt_addr(h.addr, h.port)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn tcp(addr: &str) -> Sock {
        Sock::new(Proto::Tcp, addr.parse::<IpAddr>().expect("ip"), 7000)
    }

    fn ra(mut s: Sock) -> Sock {
        s.reuseaddr = Some(true);
        s
    }

    fn texts(port: &Port, who: &[Who], sk: &Sock, comm: Option<&str>) -> Vec<String> {
        let (b, l) = port.predict(sk);
        advise(port, who, sk, comm, &b, &l)
            .into_iter()
            .map(|a| a.text)
            .collect()
    }

    fn listening(mut s: Sock, uid: u32) -> Sock {
        s.state = SockState::Listen;
        s.uid = uid;
        s
    }

    fn stray(pid: u32, comm: &str) -> Who {
        Who {
            pid: Some(pid),
            comm: Some(comm.into()),
        }
    }

    #[test]
    fn time_wait_without_reuseaddr_blocks_and_is_rolled_up() {
        // inet_bind_conflict: tw_reuse=0 on the timewait sockets.
        let socks = (0..50u32)
            .map(|i| {
                let mut t = tcp("127.0.0.1");
                t.state = SockState::TimeWait;
                t.expires_ms = Some(12_000 + i * 900);
                t
            })
            .collect();
        let p = Port::from_inventory(socks);
        let a = texts(&p, &[], &ra(tcp("127.0.0.1")), None);
        assert_eq!(a.len(), 2, "{a:#?}");
        assert!(
            a[0].starts_with("50 TIME_WAIT sockets on 127.0.0.1:7000: free in 12-57 s"),
            "{a:#?}"
        );
        assert!(a[1].contains("does not get past them"), "{a:#?}");
    }

    #[test]
    fn unknown_time_wait_flags_point_at_the_listener() {
        let l = ra(listening(tcp("0.0.0.0"), 0));
        let mut t = tcp("127.0.0.1");
        t.state = SockState::TimeWait;
        t.reuseaddr = None;
        t.reuseport = None;
        let p = Port::from_inventory(vec![l, t]);
        let a = texts(&p, &[], &tcp("127.0.0.1"), None);
        assert!(
            a.iter()
                .any(|a| a.contains("SO_REUSEADDR=1 SO_REUSEPORT=0")),
            "{a:#?}"
        );
    }

    #[test]
    fn a_stray_of_another_user_is_found_first_and_never_shared_with() {
        let p = Port::from_inventory(vec![listening(tcp("0.0.0.0"), 65534)]);
        let a = texts(&p, &[stray(4242, "python3")], &tcp("0.0.0.0"), None);
        assert!(
            a[0].contains("pid 4242 python3 listens on 0.0.0.0:7000 as uid 65534"),
            "{a:#?}"
        );
        assert!(a[0].contains("ps -o pid,user,args -p 4242"), "{a:#?}");
        assert!(!a.iter().any(|a| a.contains("set SO_REUSEPORT")), "{a:#?}");
    }

    #[test]
    fn another_program_of_the_same_user_is_not_offered_reuseport() {
        let mut l = listening(tcp("0.0.0.0"), 0);
        l.reuseport = Some(true);
        let p = Port::from_inventory(vec![l]);
        let who = [stray(4242, "python3")];
        let a = texts(&p, &who, &tcp("0.0.0.0"), Some("nginx"));
        assert!(a[0].contains("another program than nginx"), "{a:#?}");
        assert!(!a.iter().any(|a| a.contains("with SO_REUSEPORT")), "{a:#?}");
        // The same program: another instance may share it, said last.
        let a = texts(&p, &who, &tcp("0.0.0.0"), Some("python3"));
        assert!(a[0].contains("leftover instance"), "{a:#?}");
        let last = a.last().expect("advice");
        assert!(
            last.contains("with SO_REUSEPORT on the new socket"),
            "{a:#?}"
        );
        assert!(last.contains("group of pid 4242 python3"), "{a:#?}");
    }

    #[test]
    fn what_if_suggests_the_missing_option() {
        let mut p = Port::new();
        let (v, _) = p.bind(&ra(tcp("127.0.0.1")));
        assert!(v.is_ok());
        let a = texts(&p, &[], &tcp("127.0.0.1"), None);
        assert!(a.iter().any(|a| a.contains("with SO_REUSEADDR")), "{a:#?}");
    }

    #[test]
    fn advice_is_ranked_safest_first() {
        let mut tw = tcp("127.0.0.1");
        tw.state = SockState::TimeWait;
        tw.reuseaddr = Some(true);
        tw.expires_ms = Some(30_000);
        let p = Port::from_inventory(vec![tw]);
        let (b, l) = p.predict(&tcp("127.0.0.1"));
        let a = advise(&p, &[], &tcp("127.0.0.1"), None, &b, &l);
        let ranks: Vec<Safety> = a.iter().map(|a| a.safety).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        assert_eq!(ranks, sorted);
        assert_eq!(ranks.first(), Some(&Safety::Wait), "{a:#?}");
    }
}
