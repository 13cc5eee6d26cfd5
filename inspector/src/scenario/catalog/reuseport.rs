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
    kernel::Errno,
    scenario::{
        Outcome, ScenarioError, Verdict,
        ctx::{Ctx, Proto, Sock, accept_n, drain_udp, send_udp, settle, sockaddr},
        foreign::{Foreign, NOBODY, Options, bind_as_nobody, bind_as_nobody_with},
    },
    util::stats::Spread,
};

/// Sends `per_source` datagrams from each of `sources` sockets on
/// 127.0.0.1 to `to`; returns the source ports.
fn udp_burst(to: &str, sources: usize, per_source: usize) -> Result<Vec<u16>, ScenarioError> {
    (0..sources)
        .map(|_| send_udp("127.0.0.1:0", to, per_source))
        .collect()
}

/// Like [`udp_burst`], but the source sockets stay open (returned) so no
/// two flows share a source port while the datagrams are counted.
fn udp_flows(to: &str, flows: usize, per_flow: usize) -> Result<Vec<Socket>, ScenarioError> {
    let to: SockAddr = sockaddr(to)?.into();
    let from: SockAddr = sockaddr("127.0.0.1:0")?.into();
    (0..flows)
        .map(|_| {
            let s = io(Socket::new(Domain::IPV4, Type::DGRAM, None))?;
            io(s.bind(&from))?;
            for _ in 0..per_flow {
                io(s.send_to(b"inspector", &to))?;
            }
            Ok(s)
        })
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
    crate::kernel::netns::set_link_flags("lo", libc::IFF_MULTICAST)?;
    Ok(())
}

/// IP_MULTICAST_ALL on a socket (socket2 has no setter for it).
fn set_multicast_all(s: &Sock, on: bool) -> Result<(), ScenarioError> {
    use std::os::fd::AsFd as _;
    crate::kernel::sys::set_int_option(
        s.sock.as_fd(),
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_ALL,
        on.into(),
    )?;
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
    // Two more on the port that never join: IP_MULTICAST_ALL left at its
    // default (1), and set to 0.
    let mut bystanders = Vec::new();
    for all in [true, false] {
        let s = ctx.udp(&format!("not joined, IP_MULTICAST_ALL={}", u8::from(all)))?;
        ctx.reuseaddr(&s)?;
        if !all {
            set_multicast_all(&s, false)?;
            ctx.note(format!("{}: IP_MULTICAST_ALL=0", s.label));
        }
        ctx.bind(&s, "0.0.0.0:8010")?;
        bystanders.push(s);
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
    let (not_joined, _) = counts_by_socket(&bystanders);
    for (s, &c) in bystanders.iter().zip(&not_joined) {
        ctx.delivered(s, c, false);
    }
    let every_copy = counts.iter().all(|&c| c == SENT);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[every_copy]),
        summary: format!(
            "{SENT} datagrams to 239.1.2.3:8010: received per joined socket {counts:?}; \
             sockets on the port that never joined: {} with IP_MULTICAST_ALL=1 (default), {} \
             with 0",
            not_joined.first().copied().unwrap_or(0),
            not_joined.get(1).copied().unwrap_or(0)
        ),
        details: json!({
            "sent": SENT,
            "per_socket": counts,
            "not_joined_multicast_all_1": not_joined.first(),
            "not_joined_multicast_all_0": not_joined.get(1),
        }),
        explanation: "__udp4_lib_mcast_deliver() clones a multicast or broadcast datagram to \
            every socket on the port that __udp_is_mcast_sock() accepts: port and bound \
            address match, then ip_mc_sf_allow(). A socket that never joined the group passes \
            too while IP_MULTICAST_ALL is 1, the default (inet->mc_all: any group joined on \
            the host counts); only IP_MULTICAST_ALL=0 limits it to its own memberships. \
            SO_REUSEADDR sharing means each receiver gets its own copy, unlike unicast."
            .into(),
    })
}

/// Significance level of the evenness test of scenarios 10 and 11.
///
/// The unit is the flow (one source socket, one 4-tuple): the reuseport
/// hash decides once per flow, so the flow counts of a fair split are
/// multinomial(FLOWS, 1/3 each) and the exact p-value of
/// [`Spread::exact`](crate::util::stats::Spread) rejects a fair split with
/// probability at most ALPHA (a discrete test never exceeds its level;
/// `util::stats::pass_probability` computes it). With ALPHA = 1e-4 a fair split
/// passes in >= 99.99% of runs, so 20 runs agree with probability >= 99.8%.
/// The other parts are deterministic (stickiness, no duplicates).
pub(crate) const ALPHA: f64 = 1e-4;

/// Flows (source sockets) of scenario 10: with 300 flows over 3 sockets the
/// test still flags a real skew at ALPHA, e.g. one socket taking half the
/// flows ([150, 75, 75]: chi-square 37.5, p < 1e-8).
pub(crate) const UDP_FLOWS: usize = 300;

pub(super) fn udp_reuseport(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut socks = Vec::new();
    for i in 0..3 {
        let s = ctx.udp(&format!("w{i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, "127.0.0.1:8011")?;
        socks.push(s);
    }
    const PER_SOURCE: usize = 4;
    // In batches, drained between them: 1200 datagrams at once would
    // overflow the receive buffers (rmem_default) and lose some.
    const BATCH: usize = 25;
    let mut sources = Vec::new();
    let mut datagrams = vec![0u64; socks.len()];
    let mut by_source: HashMap<u16, Vec<String>> = HashMap::new();
    while sources.len() < UDP_FLOWS {
        sources.extend(udp_flows("127.0.0.1:8011", BATCH, PER_SOURCE)?);
        let (counts, seen) = counts_by_socket(&socks);
        for (d, c) in datagrams.iter_mut().zip(counts) {
            *d += c;
        }
        for (port, labels) in seen {
            by_source.entry(port).or_default().extend(labels);
        }
    }
    for (s, &c) in socks.iter().zip(&datagrams) {
        ctx.delivered(s, c, true);
    }
    let sticky = by_source
        .values()
        .filter(|v| v.iter().all(|l| *l == v[0]))
        .count();
    // Each flow counts once, for the socket that got its first datagram.
    let flows: Vec<u64> = socks
        .iter()
        .map(|s| {
            by_source
                .values()
                .filter(|v| v.first() == Some(&s.label))
                .count() as u64
        })
        .collect();
    let spread = Spread::exact(&flows);
    let all_sticky = sticky == by_source.len();
    let even = spread.p_value > ALPHA;
    let total: u64 = datagrams.iter().sum();
    let flow_count = sources.len();
    let no_duplicates = total == (flow_count * PER_SOURCE) as u64;
    drop(sources);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[all_sticky, even, no_duplicates]),
        summary: format!(
            "{total} datagrams from {} flows ({PER_SOURCE} each): flows per socket {flows:?} \
             (exact p {:.3}, even at alpha {ALPHA}), datagrams per socket {datagrams:?}; \
             {sticky}/{} flows always reached the same socket",
            flow_count,
            spread.p_value,
            by_source.len()
        ),
        details: json!({
            "flows": flow_count,
            "datagrams_per_flow": PER_SOURCE,
            "per_socket_flows": flows,
            "per_socket_datagrams": datagrams,
            "spread": spread,
            "alpha": ALPHA,
            "sticky_sources": sticky,
            "sources": by_source.len(),
            "datagrams": total,
        }),
        explanation: "reuseport_select_sock() picks a member by the flow hash of the 4-tuple \
            (udp_ehashfn()), so one source always lands on the same socket and the split \
            follows the hash, not a round-robin: even only on average, over flows."
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
    // Each connection from a new source port is a flow of its own. The
    // claim (affinity) would hold only if all of them reached one
    // listener: under a fair hash that has probability 3 * 3^-150, so the
    // verdict is stable; the evenness p-value is shown per flow.
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
    let spread = Spread::exact(&varied);
    let fixed_members = fixed.iter().filter(|&&c| c > 0).count();
    // The claim: one client IP reconnecting from new ports keeps reaching
    // the same listener.
    let same_listener = varied.iter().filter(|&&c| c > 0).count() == 1;
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[same_listener]),
        summary: format!(
            "{CONNECTIONS} connections (flows) from changing source ports: per listener \
             {varied:?}, max/mean {:.2}, exact p {:.3}; {FIXED} from fixed source port 40999: {fixed:?}; \
             a 4th worker without SO_REUSEPORT: {}",
            spread.imbalance,
            spread.p_value,
            show(&late_bind)
        ),
        details: json!({
            "flows": CONNECTIONS,
            "per_listener": varied,
            "spread": spread,
            "even_at_alpha": spread.p_value > ALPHA,
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
        let errno = other.errno.map(Errno::from);
        ctx.calls.push(super::Call {
            socket: format!("{proto:?} intruder (uid {NOBODY}, pid {})", other.pid),
            proto,
            op: "bind",
            addr: addr.ip().to_string(),
            port,
            errno,
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

/// Binds a socket as uid 65534 with SO_REUSEADDR (and listens, for TCP),
/// logging the bind as the driver's own.
fn foreign_reuseaddr(
    ctx: &mut Ctx,
    label: &str,
    proto: Proto,
    addr: &str,
) -> Result<(Foreign, Option<Errno>), ScenarioError> {
    let a = sockaddr(addr)?;
    ctx.note(format!("{label}: uid {NOBODY}, SO_REUSEADDR=1"));
    let opts = Options {
        reuseaddr: true,
        listen: proto == Proto::Tcp,
        count: proto == Proto::Udp,
        ..Options::default()
    };
    let child = io(bind_as_nobody_with(proto, a, opts))?;
    let errno = child.errno.map(Errno::from);
    ctx.calls.push(super::Call {
        socket: format!("{label} (uid {NOBODY}, pid {})", child.pid),
        proto,
        op: "bind",
        addr: a.ip().to_string(),
        port: a.port(),
        errno,
    });
    Ok((child, errno))
}

/// What a uid 65534 UDP socket received, logged as a delivery.
fn foreign_received(ctx: &mut Ctx, label: &str, child: Foreign) -> Result<u64, ScenarioError> {
    let n = io(child.release_and_count())?;
    ctx.deliveries.push(super::ctx::Delivery {
        socket: format!("{label} (uid {NOBODY})"),
        ino: 0,
        count: n,
        checked: false,
    });
    Ok(n)
}

pub(super) fn port_hijack(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    // As the document draws it: the attacker (uid 65534) starts first on
    // the wildcard with SO_REUSEADDR; the legitimate server (uid 0) then
    // binds its specific address with SO_REUSEADDR. 127.0.0.1 stands for
    // the document's 192.168.1.100.
    let (tcp_attacker, tcp_attacker_bind) = foreign_reuseaddr(
        ctx,
        "tcp attacker 0.0.0.0 (listening)",
        Proto::Tcp,
        "0.0.0.0:8015",
    )?;
    let server = ctx.tcp("tcp server 127.0.0.1 (uid 0)")?;
    ctx.reuseaddr(&server)?;
    let mut tcp_server = ctx.bind(&server, "127.0.0.1:8015")?;
    if tcp_server.is_none() {
        tcp_server = ctx.listen(&server, 8);
    }
    drop(server);
    drop(tcp_attacker);
    const SENT: usize = 10;
    let (udp_attacker, udp_attacker_bind) =
        foreign_reuseaddr(ctx, "udp attacker 0.0.0.0", Proto::Udp, "0.0.0.0:8017")?;
    let userver = ctx.udp("udp server 127.0.0.1 (uid 0)")?;
    ctx.reuseaddr(&userver)?;
    let udp_server_bind = ctx.bind(&userver, "127.0.0.1:8017")?;
    // The requests: datagrams to the server's address.
    udp_burst("127.0.0.1:8017", SENT, 1)?;
    let (got, _) = counts_by_socket(std::slice::from_ref(&userver));
    let udp_server_got = got.first().copied().unwrap_or(0);
    ctx.delivered(&userver, udp_server_got, false);
    let udp_attacker_got = foreign_received(ctx, "udp attacker 0.0.0.0", udp_attacker)?;
    drop(userver);

    // The hijack the kernel does allow: the same specific address, both
    // SO_REUSEADDR, the intruder of another uid binding second.
    let owner = ctx.udp("udp owner 127.0.0.1 (uid 0)")?;
    ctx.reuseaddr(&owner)?;
    ctx.bind(&owner, "127.0.0.1:8023")?;
    let (intruder, intruder_bind) =
        foreign_reuseaddr(ctx, "udp intruder 127.0.0.1", Proto::Udp, "127.0.0.1:8023")?;
    udp_burst("127.0.0.1:8023", SENT, 1)?;
    let (got, _) = counts_by_socket(std::slice::from_ref(&owner));
    let owner_got = got.first().copied().unwrap_or(0);
    ctx.delivered(&owner, owner_got, false);
    let intruder_got = foreign_received(ctx, "udp intruder 127.0.0.1", intruder)?;

    // The claim, per protocol: both parties bind, and the requests sent to
    // the server's address reach both ("some ... some").
    let tcp_both = tcp_attacker_bind.is_none() && tcp_server.is_none();
    let udp_split = udp_attacker_bind.is_none()
        && udp_server_bind.is_none()
        && udp_server_got > 0
        && udp_attacker_got > 0;
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[tcp_both, udp_split]),
        summary: format!(
            "attacker uid {NOBODY} on 0.0.0.0, server uid 0 on 127.0.0.1, both SO_REUSEADDR: \
             TCP server bind/listen {} (attacker listening); UDP server bind {}, of {SENT} \
             datagrams to the server's address the server got {udp_server_got}, the attacker \
             {udp_attacker_got}. Same-address UDP hijack: uid {NOBODY} bound 127.0.0.1 next to \
             uid 0: {}, then received {intruder_got}/{SENT}, the owner {owner_got}",
            show(&tcp_server),
            show(&udp_server_bind),
            show(&intruder_bind)
        ),
        details: json!({
            "tcp": {
                "attacker_bind": tcp_attacker_bind,
                "server_bind": tcp_server,
            },
            "udp": {
                "attacker_bind": udp_attacker_bind,
                "server_bind": udp_server_bind,
                "sent_to_server_address": SENT,
                "server_received": udp_server_got,
                "attacker_received": udp_attacker_got,
            },
            "hijack": {
                "owner_uid": 0,
                "intruder_uid": NOBODY,
                "intruder_bind": intruder_bind,
                "sent": SENT,
                "owner_received": owner_got,
                "intruder_received": intruder_got,
            },
        }),
        explanation: "TCP: the attacker's wildcard socket is listening, and \
            inet_bind_conflict() refuses any bind overlapping a LISTEN holder, SO_REUSEADDR or \
            not (on 6.x a specific bind meets the wildcard holders in \
            inet_bhash2_addr_any_conflict()): the server cannot start. UDP: \
            udp_lib_lport_inuse() lets two sk_reuse sockets share a port with no uid check, \
            but __udp4_lib_lookup() looks up the exact destination address in hash2 first \
            (udp4_lib_lookup2()) and falls back to the wildcard only when nothing is bound \
            there: the server gets all of its traffic, the wildcard only what is sent to \
            addresses nobody bound. The real hijack is the same address: a second sk_reuse \
            socket of any uid joins the port, and udp4_lib_lookup2() keeps the first of \
            equal scores in the hash2 chain, where the latest bind is added at the head: \
            it takes every unicast datagram."
            .into(),
    })
}

/// Clients queued on two SO_REUSEPORT listeners; the first is closed with
/// its queue unaccepted. Returns (queued on the closed one, accepted by the
/// survivor, clients reset).
fn restart_round(ctx: &mut Ctx, migrate: Option<&str>) -> Result<serde_json::Value, ScenarioError> {
    ctx.fresh_netns()?;
    let migrate = match migrate {
        Some(v) => {
            ctx.sysctl("net/ipv4/tcp_migrate_req", v)?;
            v.to_owned()
        }
        // The fresh namespace's own default.
        None => ctx.read_sysctl("net/ipv4/tcp_migrate_req")?,
    };
    let migrate = migrate.as_str();
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
    // New connections after the close: all must reach the survivor.
    const AFTER: usize = 10;
    let mut late = Vec::new();
    for _ in 0..AFTER {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        if c.connect(&to).is_ok() {
            late.push(c);
        }
    }
    let connected_after = late.len();
    let accepted_after = accept_n(&new, AFTER, Duration::from_millis(300)).len();
    drop(late);
    if migrate == "0" {
        // Without migration, the clients reset are exactly those the kernel
        // queued to the old listener, and the rest went to the new one.
        ctx.deliveries.push(super::ctx::Delivery {
            socket: old_label,
            ino: old_ino,
            count: reset,
            checked: true,
        });
        ctx.delivered(&new, (accepted + accepted_after) as u64, true);
    }
    ctx.hold(new);
    Ok(json!({
        "tcp_migrate_req": migrate,
        "clients": CLIENTS,
        "accepted_by_new": accepted,
        "reset": reset,
        "new_after_close": AFTER,
        "new_connected": connected_after,
        "new_accepted_by_survivor": accepted_after,
    }))
}

pub(super) fn rolling_restart(ctx: &mut Ctx) -> Res {
    // The verdict is the kernel's defaults; the sysctl that changes it is a
    // second, labelled run.
    let default = restart_round(ctx, None)?;
    let on = restart_round(ctx, Some("1"))?;
    let parts = |r: &serde_json::Value| {
        [
            r["reset"].as_u64() == Some(0),
            r["new_accepted_by_survivor"] == r["new_after_close"],
        ]
    };
    let verdict = Verdict::of(&parts(&default));
    let with_migrate = Verdict::of(&parts(&on));
    let advice = (with_migrate != verdict).then(|| {
        format!(
            "{} by default (tcp_migrate_req={}); {} with tcp_migrate_req=1",
            verdict.as_str(),
            default["tcp_migrate_req"].as_str().unwrap_or("?"),
            with_migrate.as_str()
        )
    });
    Ok(Outcome {
        reason: None,
        advice,
        verdict,
        summary: format!(
            "40 clients queued on 2 listeners, the old one closed unaccepted: defaults \
             (tcp_migrate_req={}): {} reset, {} accepted by the survivor; {}/{} new connections \
             after the close reached the survivor. With tcp_migrate_req=1: {} reset, {} accepted",
            default["tcp_migrate_req"].as_str().unwrap_or("?"),
            default["reset"],
            default["accepted_by_new"],
            default["new_accepted_by_survivor"],
            default["new_after_close"],
            on["reset"],
            on["accepted_by_new"]
        ),
        details: json!({ "default": default, "tcp_migrate_req=1": on }),
        explanation: "Closing a listener runs inet_csk_listen_stop(): connections in its accept \
            queue are reset, because the hash chose that listener when the SYN came. New SYNs \
            after the close go to the remaining members (reuseport_detach_sock() shrank the \
            group). With net.ipv4.tcp_migrate_req=1 (default 0), reuseport_migrate_sock() \
            moves the queued ones to another member instead. With defaults, a restart by \
            SO_REUSEPORT alone drops the clients queued on the old listener."
            .into(),
    })
}
