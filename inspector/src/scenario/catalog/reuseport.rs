//! Who receives what: UDP delivery to SO_REUSEADDR and multicast
//! receivers, SO_REUSEPORT distribution for UDP and TCP, its uid rule, port
//! hijacking between wildcard and specific binds, and rolling restarts of a
//! SO_REUSEPORT group.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::Duration,
};

use serde_json::json;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{Res, io, show};
use crate::{
    names::errno_name,
    scenario::{
        Outcome, ScenarioError, Verdict,
        ctx::{Ctx, Proto, Sock, accept_n, drain_udp, send_udp, settle, sockaddr},
        foreign::{NOBODY, bind_as_nobody},
        stats::Spread,
    },
};

/// Sends `per_source` datagrams from each of `sources` sockets on
/// 127.0.0.1 to `to`; returns the source ports.
fn udp_burst(to: &str, sources: usize, per_source: usize) -> Result<Vec<u16>, ScenarioError> {
    (0..sources)
        .map(|_| send_udp("127.0.0.1:0", to, per_source))
        .collect()
}

fn counts_by_socket(socks: &[Sock]) -> (Vec<u64>, HashMap<u16, Vec<String>>) {
    settle();
    let mut counts = Vec::new();
    let mut by_source: HashMap<u16, Vec<String>> = HashMap::new();
    for s in socks {
        let got = drain_udp(s);
        counts.push(got.len() as u64);
        for from in got {
            by_source
                .entry(from.port())
                .or_default()
                .push(s.label.clone());
        }
    }
    (counts, by_source)
}

pub(super) fn udp_reuseaddr_unicast(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut socks = Vec::new();
    for i in 0..3 {
        let s = ctx.udp(&format!("u{i}"))?;
        ctx.reuseaddr(&s)?;
        ctx.bind(&s, "127.0.0.1:8009")?;
        socks.push(s);
    }
    udp_burst("127.0.0.1:8009", 20, 5)?;
    let (first, _) = counts_by_socket(&socks);
    let receiver = first.iter().position(|&c| c > 0);
    for (s, &c) in socks.iter().zip(&first) {
        ctx.delivered(s, c, false);
    }
    // Close the socket that got the traffic and send again.
    let mut after = Vec::new();
    let mut closed = None;
    if let Some(i) = receiver {
        let gone = socks.remove(i);
        closed = Some(gone.label.clone());
        drop(gone);
        udp_burst("127.0.0.1:8009", 20, 5)?;
        after = counts_by_socket(&socks).0;
    }
    let receivers_first = first.iter().filter(|&&c| c > 0).count();
    let receivers_after = after.iter().filter(|&&c| c > 0).count();
    // The claim: every socket bound to the port gets the data.
    let delivered_to_all = receivers_first == first.len();
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[delivered_to_all]),
        summary: format!(
            "100 datagrams from 20 sources: per socket {first:?} ({receivers_first} receiving); \
             after closing {}: per remaining socket {after:?}",
            closed.as_deref().unwrap_or("-")
        ),
        details: json!({
            "per_socket_first": first,
            "closed": closed,
            "per_socket_after": after,
            "receivers_after": receivers_after,
        }),
        explanation: "Unicast UDP goes to exactly one socket. Without SO_REUSEPORT, \
            udp4_lib_lookup2() scores the sockets bound to the port and keeps the first best \
            one, the most recently bound of equal scores: one socket gets every datagram, \
            and the next takes over only when it closes. Nothing is duplicated."
            .into(),
    })
}

fn set_multicast_on_lo() -> Result<(), ScenarioError> {
    let sock = io(Socket::new(Domain::IPV4, Type::DGRAM, None))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd as _;
    // SAFETY: valid socket and ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_MULTICAST as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

pub(super) fn udp_multicast(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    set_multicast_on_lo()?;
    ctx.note("lo: multicast on; group 239.1.2.3 joined on 127.0.0.1 by each receiver");
    let group = std::net::Ipv4Addr::new(239, 1, 2, 3);
    let lo = std::net::Ipv4Addr::LOCALHOST;
    let mut socks = Vec::new();
    for i in 0..3 {
        let s = ctx.udp(&format!("m{i}"))?;
        ctx.reuseaddr(&s)?;
        ctx.bind(&s, "0.0.0.0:8010")?;
        io(s.sock.join_multicast_v4(&group, &lo))?;
        socks.push(s);
    }
    let sender = io(Socket::new(Domain::IPV4, Type::DGRAM, None))?;
    io(sender.set_multicast_if_v4(&lo))?;
    io(sender.set_multicast_loop_v4(true))?;
    let to: SockAddr = SocketAddr::from((group, 8010)).into();
    const SENT: u64 = 30;
    for _ in 0..SENT {
        io(sender.send_to(b"inspector", &to))?;
    }
    let (counts, _) = counts_by_socket(&socks);
    for (s, &c) in socks.iter().zip(&counts) {
        ctx.delivered(s, c, false);
    }
    let every_copy = counts.iter().all(|&c| c == SENT);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[every_copy]),
        summary: format!("{SENT} datagrams to 239.1.2.3:8010: received per socket {counts:?}"),
        details: json!({ "sent": SENT, "per_socket": counts }),
        explanation: "__udp4_lib_mcast_deliver() clones a multicast or broadcast datagram to \
            every socket bound to the port that matches it (and has joined the group): \
            SO_REUSEADDR sharing means each receiver gets its own copy, unlike unicast."
            .into(),
    })
}

pub(super) fn udp_reuseport(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut socks = Vec::new();
    for i in 0..3 {
        let s = ctx.udp(&format!("w{i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, "127.0.0.1:8011")?;
        socks.push(s);
    }
    const SOURCES: usize = 90;
    const PER_SOURCE: usize = 4;
    udp_burst("127.0.0.1:8011", SOURCES, PER_SOURCE)?;
    let (counts, by_source) = counts_by_socket(&socks);
    for (s, &c) in socks.iter().zip(&counts) {
        ctx.delivered(s, c, true);
    }
    let sticky = by_source
        .values()
        .filter(|v| v.iter().all(|l| *l == v[0]))
        .count();
    let spread = Spread::of(&counts);
    let all_sticky = sticky == by_source.len();
    // "Even" as a statistician would accept it from a uniform choice.
    let even = spread.p_value > 0.001 && counts.iter().all(|&c| c > 0);
    let no_duplicates = spread.total == (SOURCES * PER_SOURCE) as u64;
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[all_sticky, even, no_duplicates]),
        summary: format!(
            "{} datagrams from {SOURCES} sources: per socket {counts:?}, max/mean {:.2}, \
             chi-square p {:.3}; {sticky}/{} sources always reached the same socket",
            SOURCES * PER_SOURCE,
            spread.imbalance,
            spread.p_value,
            by_source.len()
        ),
        details: json!({ "per_socket": counts, "spread": spread, "sticky_sources": sticky, "sources": by_source.len() }),
        explanation: "reuseport_select_sock() picks a member by the flow hash of the 4-tuple \
            (udp_ehashfn()), so one source always lands on the same socket and the split \
            follows the hash, not a round-robin: even only on average."
            .into(),
    })
}

pub(super) fn tcp_reuseport(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut listeners = Vec::new();
    for i in 0..3 {
        let s = ctx.tcp(&format!("l{i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, "127.0.0.1:8012")?;
        ctx.listen(&s, 512);
        listeners.push(s);
    }
    // A worker that forgot SO_REUSEPORT cannot join the group.
    let late = ctx.tcp("late worker without SO_REUSEPORT")?;
    let late_bind = ctx.bind(&late, "127.0.0.1:8012")?;
    drop(late);
    const CONNECTIONS: usize = 150;
    let to: SockAddr = sockaddr("127.0.0.1:8012")?.into();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.connect(&to))?;
        clients.push(c);
    }
    let mut counts: Vec<u64> = listeners
        .iter()
        .map(|l| accept_n(l, CONNECTIONS, Duration::from_millis(300)).len() as u64)
        .collect();
    drop(clients);
    // The same client address and source port, again and again: closed
    // with RST (SO_LINGER 0) so no TIME_WAIT blocks the next one.
    const FIXED: usize = 20;
    let mut fixed = vec![0u64; listeners.len()];
    for _ in 0..FIXED {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.set_reuse_address(true))?;
        io(c.bind(&sockaddr("127.0.0.1:40999")?.into()))?;
        io(c.connect(&to))?;
        for (i, l) in listeners.iter().enumerate() {
            let got = accept_n(l, 1, Duration::from_millis(5));
            for s in got {
                fixed[i] += 1;
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        }
        io(c.set_linger(Some(Duration::ZERO)))?;
    }
    for (i, l) in listeners.iter().enumerate() {
        counts[i] += fixed[i];
        ctx.delivered(l, counts[i], true);
    }
    let varied: Vec<u64> = counts.iter().zip(&fixed).map(|(c, f)| c - f).collect();
    let spread = Spread::of(&varied);
    let fixed_members = fixed.iter().filter(|&&c| c > 0).count();
    // The claim: one client IP reconnecting from new ports keeps reaching
    // the same listener.
    let same_listener = varied.iter().filter(|&&c| c > 0).count() == 1;
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[same_listener]),
        summary: format!(
            "{CONNECTIONS} connections from changing source ports: per listener {varied:?}, \
             max/mean {:.2}, chi-square p {:.3}; {FIXED} from fixed source port 40999: {fixed:?}; \
             a 4th worker without SO_REUSEPORT: {}",
            spread.imbalance,
            spread.p_value,
            show(&late_bind)
        ),
        details: json!({
            "per_listener": varied,
            "spread": spread,
            "fixed_source_port": fixed,
            "fixed_port_listeners": fixed_members,
            "late_joiner_without_reuseport": late_bind,
        }),
        explanation: "For each SYN, reuseport_select_sock() maps the 4-tuple hash \
            (inet_ehashfn()) onto the group. The source port is in the hash: one client IP \
            reconnecting from new ports is spread over all listeners, statistically (not \
            round-robin); only a fixed 4-tuple always lands on the same listener. There is no \
            per-client affinity."
            .into(),
    })
}

pub(super) fn reuseport_other_uid(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut results = BTreeMap::new();
    for (proto, port) in [(Proto::Tcp, 8013u16), (Proto::Udp, 8014)] {
        let owner = ctx.socket(&format!("{proto:?} owner (uid 0)"), proto, false)?;
        ctx.reuseport(&owner)?;
        ctx.bind(&owner, &format!("127.0.0.1:{port}"))?;
        if proto == Proto::Tcp {
            ctx.listen(&owner, 8);
        }
        let addr = sockaddr(&format!("127.0.0.1:{port}"))?;
        let other = io(bind_as_nobody(proto, addr, true, false))?;
        let errno = other.errno.map(|e| errno_name(e).into_owned());
        ctx.calls.push(super::Call {
            socket: format!("{proto:?} intruder (uid {NOBODY}, pid {})", other.pid),
            proto,
            op: "bind",
            addr: addr.ip().to_string(),
            port,
            errno: errno.clone(),
        });
        results.insert(format!("{proto:?}").to_lowercase(), errno);
        drop(other);
        ctx.hold(owner);
    }
    let tcp = results.get("tcp").cloned().flatten();
    let udp = results.get("udp").cloned().flatten();
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[tcp.is_some(), udp.is_some()]),
        summary: format!(
            "SO_REUSEPORT bind by uid {NOBODY} next to uid 0: tcp {}, udp {}",
            show(&tcp),
            show(&udp)
        ),
        details: json!(results),
        explanation: "inet_csk_bind_conflict() and udp_lib_lport_inuse() share a port between \
            SO_REUSEPORT sockets only when uid_eq(sock_i_uid()) holds (the socket owners' \
            uids match) or, for TCP, the holder is TIME_WAIT; a process of another user gets \
            EADDRINUSE."
            .into(),
    })
}

pub(super) fn port_hijack(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    // TCP: the victim listens on the wildcard, without and with SO_REUSEADDR.
    let victim = ctx.tcp("tcp victim 0.0.0.0")?;
    ctx.bind(&victim, "0.0.0.0:8015")?;
    ctx.listen(&victim, 8);
    let thief = ctx.tcp("tcp thief 127.0.0.1")?;
    ctx.reuseaddr(&thief)?;
    let tcp_plain = ctx.bind(&thief, "127.0.0.1:8015")?;
    let victim2 = ctx.tcp("tcp victim 0.0.0.0 (SO_REUSEADDR)")?;
    ctx.reuseaddr(&victim2)?;
    ctx.bind(&victim2, "0.0.0.0:8016")?;
    ctx.listen(&victim2, 8);
    let thief2 = ctx.tcp("tcp thief 127.0.0.1 (SO_REUSEADDR)")?;
    ctx.reuseaddr(&thief2)?;
    let tcp_reuse = ctx.bind(&thief2, "127.0.0.1:8016")?;
    // UDP: both with SO_REUSEADDR, the thief on the specific address.
    let uvictim = ctx.udp("udp victim 0.0.0.0")?;
    ctx.reuseaddr(&uvictim)?;
    ctx.bind(&uvictim, "0.0.0.0:8017")?;
    let uthief = ctx.udp("udp thief 127.0.0.1")?;
    ctx.reuseaddr(&uthief)?;
    let udp_bind = ctx.bind(&uthief, "127.0.0.1:8017")?;
    udp_burst("127.0.0.1:8017", 5, 2)?;
    udp_burst("127.0.0.2:8017", 5, 2)?;
    settle();
    let per_dest = |s: &Sock| -> (u64, u64) {
        let mut to_1 = 0;
        let mut to_2 = 0;
        let _ = s.sock.set_nonblocking(true);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        // recvmsg with IP_PKTINFO would name the destination; the
        // thief is bound to 127.0.0.1 only, so it can only get those.
        while s.sock.recv_from(&mut buf).is_ok() {
            if s.label.contains("thief") {
                to_1 += 1;
            } else {
                to_2 += 1;
            }
        }
        (to_1, to_2)
    };
    let thief_got = per_dest(&uthief).0;
    let victim_got = per_dest(&uvictim).1;
    ctx.delivered(&uthief, thief_got, false);
    ctx.delivered(&uvictim, victim_got, false);
    // The claim: both parties bind, and traffic is split between them.
    let tcp_coexist = tcp_plain.is_none() || tcp_reuse.is_none();
    let udp_split = udp_bind.is_none() && thief_got > 0 && thief_got < 10;
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[tcp_coexist, udp_split]),
        summary: format!(
            "TCP specific bind next to a wildcard listener: {} (victim without SO_REUSEADDR), \
             {} (victim with it); UDP with SO_REUSEADDR on both: bind {}, the specific socket \
             got {thief_got}/10 datagrams sent to 127.0.0.1, the wildcard got {victim_got}/10 sent to 127.0.0.2",
            show(&tcp_plain),
            show(&tcp_reuse),
            show(&udp_bind)
        ),
        details: json!({
            "tcp_thief_bind_victim_plain": tcp_plain,
            "tcp_thief_bind_victim_reuseaddr": tcp_reuse,
            "udp_thief_bind": udp_bind,
            "udp_thief_received_of_10": thief_got,
            "udp_victim_received_of_10": victim_got,
        }),
        explanation: "TCP: a listening wildcard socket conflicts with any specific bind on its \
            port (inet_bind_conflict(), LISTEN holder), SO_REUSEADDR or not: no hijack. UDP: \
            udp_lib_lport_inuse() lets two sk_reuse sockets share a port regardless of uid, and \
            udp4_lib_lookup2() scores an exact local address above the wildcard, so the \
            specific socket takes the traffic for its address. The risk is real for UDP \
            services that set SO_REUSEADDR; SO_REUSEPORT requires the same uid."
            .into(),
    })
}

/// Clients queued on two SO_REUSEPORT listeners; the first is closed with
/// its queue unaccepted. Returns (queued on the closed one, accepted by the
/// survivor, clients reset).
fn restart_round(ctx: &mut Ctx, migrate: &str) -> Result<serde_json::Value, ScenarioError> {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_migrate_req", migrate)?;
    let old = ctx.tcp(&format!("old (tcp_migrate_req={migrate})"))?;
    let new = ctx.tcp(&format!("new (tcp_migrate_req={migrate})"))?;
    for s in [&old, &new] {
        ctx.reuseport(s)?;
        ctx.bind(s, "127.0.0.1:8020")?;
        ctx.listen(s, 128);
    }
    const CLIENTS: usize = 40;
    let to: SockAddr = sockaddr("127.0.0.1:8020")?.into();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.connect(&to))?;
        clients.push(c);
    }
    settle();
    let (old_label, old_ino) = (old.label.clone(), old.ino);
    drop(old); // the old server exits without accepting its queue
    settle();
    let accepted = accept_n(&new, CLIENTS, Duration::from_millis(300)).len();
    let mut reset = 0u64;
    for c in &clients {
        let _ = c.set_nonblocking(true);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8];
        if let Err(e) = c.recv(&mut buf)
            && e.raw_os_error() == Some(libc::ECONNRESET)
        {
            reset += 1;
        }
    }
    if migrate == "0" {
        // Without migration, the clients reset are exactly those the kernel
        // queued to the old listener, and the rest went to the new one.
        ctx.deliveries.push(super::ctx::Delivery {
            socket: old_label,
            ino: old_ino,
            count: reset,
            checked: true,
        });
        ctx.delivered(&new, accepted as u64, true);
    }
    ctx.hold(new);
    Ok(json!({ "clients": CLIENTS, "accepted_by_new": accepted, "reset": reset }))
}

pub(super) fn rolling_restart(ctx: &mut Ctx) -> Res {
    let off = restart_round(ctx, "0")?;
    let on = restart_round(ctx, "1")?;
    let reset_off = off["reset"].as_u64().unwrap_or(0);
    let reset_on = on["reset"].as_u64().unwrap_or(0);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[reset_off == 0, reset_on == 0]),
        summary: format!(
            "40 clients queued on 2 listeners, the old one closed unaccepted: \
             tcp_migrate_req=0: {reset_off} reset, {} accepted by the new one; \
             tcp_migrate_req=1: {reset_on} reset, {} accepted",
            off["accepted_by_new"], on["accepted_by_new"]
        ),
        details: json!({ "tcp_migrate_req=0": off, "tcp_migrate_req=1": on }),
        explanation: "Closing a listener runs inet_csk_listen_stop(): connections in its accept \
            queue are reset, because the hash chose that listener when the SYN came. With \
            net.ipv4.tcp_migrate_req=1, reuseport_migrate_sock() moves them to another member \
            of the group instead. Without it, a restart by SO_REUSEPORT alone drops clients."
            .into(),
    })
}
