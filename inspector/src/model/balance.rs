//! Why the connections of one port are split unevenly between its
//! listening sockets: the member table and the rules that name a cause.
//!
//! No I/O: `inspector balance` reads the kernel (two socket-iterator
//! snapshots around an observation, and the probes' `reuseport` and
//! `accept` records in between) into an [`Observation`]; [`analyse`] turns
//! it into a [`Balance`] of [`Member`]s and [`Cause`]s.
//!
//! What each number means, from the kernel:
//! - delivered: the connections the kernel queued on a member. For a
//!   SO_REUSEPORT member it is the `reuseport` records (the listener woken
//!   by `sk_data_ready` after `inet_csk_reqsk_queue_add()`), the choice of
//!   `reuseport_select_sock()`; a listener alone on its address gets every
//!   connection, so there it is what was accepted plus what the queue grew.
//! - accepted: `accept` records, tied to the member by the peer address of
//!   the delivery (a connection's 4-tuple is unique), and by address for a
//!   listener alone on it.
//! - queued / queue limit: `sk_ack_backlog` / `sk_max_ack_backlog` at the
//!   end (Recv-Q / Send-Q of `ss -l`).
//!
//! A UDP SO_REUSEPORT group (`balance --proto udp`) has no accepts, queues
//! or connections: its members are the sockets bound to the port and not
//! connected, delivered counts datagrams, flows the distinct peers among
//! them (the hash chooses per 4-tuple, so the split is judged on flows),
//! and overflows the datagrams the kernel dropped on a member while
//! observed (its receive buffer full: a worker that does not read).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use serde::Serialize;

use crate::{kernel::Proto, util::stats::Spread};

pub mod window;

/// A split is called uneven beyond what hashing explains only below this
/// p-value: a fair hash gives p < 0.001 once in a thousand observations.
pub const ALPHA: f64 = 0.001;
/// Below this p-value a split of new connections is suspect enough that
/// an uneven count of connections held is not blamed on long-lived load.
pub const SUSPECT: f64 = 0.01;
/// Fewer flows than this per member are "few": the exact test cannot tell
/// a skewed hash from chance unless the skew is large.
pub const FEW_FLOWS_PER_MEMBER: u64 = 30;
/// max/mean of the split from which it looks uneven to a reader.
pub const LOOKS_UNEVEN: f64 = 1.25;

/// A listening socket as a socket-iterator snapshot saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Inode of its file: the member's identity across snapshots and records.
    pub ino: u64,
    pub local: SocketAddr,
    pub reuseport: bool,
    pub queued: u32,
    pub queue_limit: u32,
    /// Handshakes the kernel dropped on it (`tcp_listendrop()` raising
    /// `sk_drops`, the `drops` of `ss -tlnm`): a full accept queue, mostly.
    pub drops: u32,
    /// Its group has a SO_ATTACH_REUSEPORT_[CE]BPF program
    /// (`sk_reuseport_cb->prog`).
    pub bpf_selector: bool,
    /// Its group has members with SO_INCOMING_CPU set
    /// (`sk_reuseport_cb->incoming_cpu`).
    pub incoming_cpu: bool,
    /// Processes holding its file (pid, comm), lowest pid first.
    pub holders: Vec<(u32, String)>,
}

/// One `reuseport` record: the kernel chose member `ino` for `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub ino: u64,
    pub peer: SocketAddr,
}

/// One `accept` record: task `pid`/`tid` took the connection from `peer`
/// to `local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub ts_ns: u64,
}

/// Everything one observation read.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub port: u16,
    /// TCP listeners, or a UDP group: deliveries are datagrams then, with
    /// no accepts, queues or connections.
    pub proto: Proto,
    /// Monotonic start and end of the observation.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Listeners on the port at the start and at the end.
    pub start: Vec<Listener>,
    pub end: Vec<Listener>,
    pub deliveries: Vec<Delivery>,
    pub accepts: Vec<Accept>,
    /// Connected sockets on the port at the end: (holder pid, inode).
    pub open: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Listening,
    /// Gone before the end of the observation.
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listening => "listening",
            Self::Closed => "closed",
        }
    }
}

/// Connections one task accepted from a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskCount {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub count: u64,
}

/// One listening socket of the port, with what it got and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Number in the table, from 1.
    pub id: usize,
    #[serde(skip)]
    pub ino: u64,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub address: SocketAddr,
    pub state: State,
    pub reuseport: bool,
    pub delivered: u64,
    /// Distinct peers among the deliveries: the hash chooses per 4-tuple,
    /// so a peer's datagrams, and the connections of a client that gets
    /// the same port again (a busy client reusing its ports), are one
    /// choice. For a plain listener, its deliveries.
    pub flows: u64,
    pub accepted: u64,
    pub accepted_by: Vec<TaskCount>,
    pub queued: u32,
    pub queue_limit: u32,
    /// Queue depth at the start (0 for a member that appeared since).
    pub queued_start: u32,
    /// Handshakes dropped on it while observed (its `sk_drops` at the end
    /// less at the start): connections the kernel chose it for and then
    /// could not queue.
    pub overflows: u32,
    /// Connected sockets held by the member's process at the end.
    pub open: u64,
    /// Nanoseconds from its last accept to the end of the observation;
    /// `None` when it accepted nothing while observed.
    pub last_accept_ago_ns: Option<u64>,
}

/// A stable name for each cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    SharedAcceptQueue,
    MemberNotAccepting,
    MemberNotReading,
    MemberClosed,
    BpfSelector,
    IncomingCpu,
    UnevenDelivery,
    LongLivedLoad,
    TooFewFlows,
    Uniform,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SharedAcceptQueue => "shared_accept_queue",
            Self::MemberNotAccepting => "member_not_accepting",
            Self::MemberNotReading => "member_not_reading",
            Self::MemberClosed => "member_closed",
            Self::BpfSelector => "bpf_selector",
            Self::IncomingCpu => "incoming_cpu",
            Self::UnevenDelivery => "uneven_delivery",
            Self::LongLivedLoad => "long_lived_load",
            Self::TooFewFlows => "too_few_flows",
            Self::Uniform => "uniform",
        }
    }
}

/// One cause, with its evidence and what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    pub code: Code,
    /// The member it is about ([`Member::id`]), `None` for the group.
    pub member: Option<usize>,
    pub detail: String,
    pub advice: &'static str,
}

/// The verdict on one port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    pub port: u16,
    /// `tcp`, or `udp` for a UDP SO_REUSEPORT group.
    pub proto: Proto,
    pub duration_s: f64,
    pub members: Vec<Member>,
    /// The split of deliveries over the members listening at the end.
    pub spread: Option<Spread>,
    /// Accepts on the port tied to no member (their delivery was not seen).
    pub unattributed_accepts: u64,
    /// A BPF program chooses the member, not the hash.
    pub bpf_selector: bool,
    /// Members with SO_INCOMING_CPU steer the choice to the receiving CPU.
    pub incoming_cpu: bool,
    pub causes: Vec<Cause>,
}

const ADVICE_SHARED: &str = "give each worker its own SO_REUSEPORT socket so the kernel hashes connections across them, or wait with epoll and EPOLLEXCLUSIVE; a blocking accept() wakes the longest waiter (prepare_to_wait_exclusive queues at the tail, __wake_up_common wakes from the head), but a worker back in accept() before the next connection takes it without sleeping, and waiters on one epoll instance wake last-in first-out (ep_poll queues itself at the head)";
const ADVICE_NOT_ACCEPTING: &str = "the kernel keeps hashing connections to this socket while its process does not accept: find why the worker is paused, blocked or overloaded (its stack in /proc/PID/stack, its CPU time); while it is stuck, close its socket so the group shrinks (with net.ipv4.tcp_migrate_req=1 its queue moves to the others)";
const ADVICE_NOT_READING: &str = "the kernel keeps hashing flows to this socket while its process does not read fast enough, and drops what its receive buffer cannot hold: find why the worker is slow, paused or blocked (its stack in /proc/PID/stack, its CPU time); a larger SO_RCVBUF (net.core.rmem_max) only absorbs bursts";
const ADVICE_CLOSED: &str = "a member that closes during a restart leaves the split to the others; its queued connections are reset unless net.ipv4.tcp_migrate_req=1";
const ADVICE_CLOSED_UDP: &str = "a UDP member that closes leaves its flows to the members left (the hash spreads over those); the datagrams still in its receive buffer are lost";
const ADVICE_UNEVEN: &str = "the kernel's choice is not the plain 4-tuple hash: look for a SO_ATTACH_REUSEPORT_CBPF/EBPF program on the group, or members that joined or left while observed";
const ADVICE_BPF: &str = "the split is the program's choice: read it (bpftool prog show; it was attached with SO_ATTACH_REUSEPORT_CBPF/EBPF on a member) or detach it to get the 4-tuple hash back";
const ADVICE_INCOMING_CPU: &str = "the kernel hands a connection to the member whose SO_INCOMING_CPU is the CPU that received it: spread the NIC's receive queues (RSS, IRQ affinity) over the workers' CPUs, or drop SO_INCOMING_CPU";
const ADVICE_LONG_LIVED: &str = "the kernel spreads new connections evenly but some processes keep theirs much longer: balance on requests (a proxy), cap connection lifetime or requests per connection";
const ADVICE_FEW: &str = "observe longer or under more load: with this few flows an uneven split is what a fair hash often gives";
const ADVICE_UNIFORM: &str =
    "nothing to fix: the kernel spreads connections as its hash should and every member accepts";

/// Accepts per (pid, tid) of one member: the task's name and its count.
type PerTask = BTreeMap<(u32, u32), (String, u64)>;

/// The member table and the causes.
pub fn analyse(obs: &Observation) -> Balance {
    let mut members = table(obs);
    let mut unattributed = 0;
    let peer_of: HashMap<SocketAddr, u64> =
        obs.deliveries.iter().map(|d| (d.peer, d.ino)).collect();
    let mut by_task: HashMap<u64, PerTask> = HashMap::new();
    let mut last: HashMap<u64, u64> = HashMap::new();
    for a in &obs.accepts {
        let Some(ino) = peer_of
            .get(&a.peer)
            .copied()
            .or_else(|| alone_on(&members, a.local))
        else {
            unattributed += 1;
            continue;
        };
        let e = by_task
            .entry(ino)
            .or_default()
            .entry((a.pid, a.tid))
            .or_insert_with(|| (a.comm.clone(), 0));
        e.1 += 1;
        let l = last.entry(ino).or_default();
        *l = (*l).max(a.ts_ns);
    }
    let mut delivered: HashMap<u64, u64> = HashMap::new();
    let mut peers: HashMap<u64, std::collections::HashSet<SocketAddr>> = HashMap::new();
    for d in &obs.deliveries {
        *delivered.entry(d.ino).or_default() += 1;
        peers.entry(d.ino).or_default().insert(d.peer);
    }
    let mut open: HashMap<u32, u64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for &(pid, ino) in &obs.open {
        if seen.insert((pid, ino)) {
            *open.entry(pid).or_default() += 1;
        }
    }
    for m in &mut members {
        m.accepted_by = by_task
            .remove(&m.ino)
            .unwrap_or_default()
            .into_iter()
            .map(|((pid, tid), (comm, count))| TaskCount {
                pid,
                tid,
                comm,
                count,
            })
            .collect();
        m.accepted = m.accepted_by.iter().map(|t| t.count).sum();
        m.delivered = if m.reuseport || obs.proto == Proto::Udp {
            delivered.get(&m.ino).copied().unwrap_or(0)
        } else {
            m.accepted + u64::from(m.queued.saturating_sub(m.queued_start))
        };
        m.flows = if m.reuseport || obs.proto == Proto::Udp {
            peers.get(&m.ino).map_or(0, |p| p.len() as u64)
        } else {
            m.delivered
        };
        m.open = m.pid.and_then(|p| open.get(&p).copied()).unwrap_or(0);
        m.last_accept_ago_ns = last.get(&m.ino).map(|&t| obs.end_ns.saturating_sub(t));
    }
    let duration_ns = obs.end_ns.saturating_sub(obs.start_ns);
    let mut b = Balance {
        port: obs.port,
        proto: obs.proto,
        duration_s: duration_ns as f64 / 1e9,
        spread: None,
        members,
        unattributed_accepts: unattributed,
        bpf_selector: obs.end.iter().any(|l| l.reuseport && l.bpf_selector),
        incoming_cpu: obs.end.iter().any(|l| l.reuseport && l.incoming_cpu),
        causes: Vec::new(),
    };
    causes(&mut b);
    b
}

/// The members: every listener of either snapshot, and every socket the
/// kernel delivered to that neither snapshot saw (born and gone while
/// observed).
fn table(obs: &Observation) -> Vec<Member> {
    let mut by_ino: BTreeMap<u64, (Option<&Listener>, Option<&Listener>)> = BTreeMap::new();
    for l in &obs.start {
        by_ino.entry(l.ino).or_default().0 = Some(l);
    }
    for l in &obs.end {
        by_ino.entry(l.ino).or_default().1 = Some(l);
    }
    let mut members: Vec<Member> = by_ino
        .into_iter()
        .filter_map(|(ino, (start, end))| {
            let l = end.or(start)?;
            let holder = l.holders.first();
            Some(Member {
                id: 0,
                ino,
                pid: holder.map(|h| h.0),
                comm: holder.map(|h| h.1.clone()),
                address: l.local,
                state: if end.is_some() {
                    State::Listening
                } else {
                    State::Closed
                },
                reuseport: l.reuseport,
                delivered: 0,
                flows: 0,
                accepted: 0,
                accepted_by: Vec::new(),
                queued: end.map_or(0, |e| e.queued),
                queue_limit: l.queue_limit,
                queued_start: start.map_or(0, |s| s.queued),
                overflows: match (start, end) {
                    (Some(s), Some(e)) => e.drops.saturating_sub(s.drops),
                    (None, Some(e)) => e.drops,
                    _ => 0,
                },
                open: 0,
                last_accept_ago_ns: None,
            })
        })
        .collect();
    let known: std::collections::HashSet<u64> = members.iter().map(|m| m.ino).collect();
    let mut unseen: Vec<u64> = obs
        .deliveries
        .iter()
        .map(|d| d.ino)
        .filter(|ino| !known.contains(ino))
        .collect();
    unseen.sort_unstable();
    unseen.dedup();
    for ino in unseen {
        let local = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), obs.port);
        members.push(Member {
            id: 0,
            ino,
            pid: None,
            comm: None,
            address: local,
            state: State::Closed,
            reuseport: true,
            delivered: 0,
            flows: 0,
            accepted: 0,
            accepted_by: Vec::new(),
            queued: 0,
            queue_limit: 0,
            queued_start: 0,
            overflows: 0,
            open: 0,
            last_accept_ago_ns: None,
        });
    }
    members.sort_by_key(|m| (m.state == State::Closed, m.pid, m.address, m.ino));
    for (i, m) in members.iter_mut().enumerate() {
        m.id = i + 1;
    }
    members
}

/// The member a connection to `local` went to when it is the only
/// non-SO_REUSEPORT listener that covers the address (no choice to see).
fn alone_on(members: &[Member], local: SocketAddr) -> Option<u64> {
    let mut it = members.iter().filter(|m| {
        !m.reuseport
            && m.address.port() == local.port()
            && (m.address.ip().is_unspecified() || m.address.ip() == local.ip())
    });
    let first = it.next()?;
    it.next().is_none().then_some(first.ino)
}

fn who(m: &Member) -> String {
    match (m.pid, m.comm.as_deref()) {
        (Some(p), Some(c)) => format!("pid {p} {c}"),
        (Some(p), None) => format!("pid {p}"),
        _ => "no process".into(),
    }
}

fn causes(b: &mut Balance) {
    let mut out = Vec::new();
    for m in &b.members {
        if m.accepted_by.len() > 1 {
            let split: Vec<String> = m
                .accepted_by
                .iter()
                .map(|t| format!("pid {}/tid {} {}: {}", t.pid, t.tid, t.comm, t.count))
                .collect();
            out.push(Cause {
                code: Code::SharedAcceptQueue,
                member: Some(m.id),
                detail: format!(
                    "one listening socket ({}) accepted by {} tasks: {}",
                    m.address,
                    m.accepted_by.len(),
                    split.join(", ")
                ),
                advice: ADVICE_SHARED,
            });
        }
        if m.state == State::Closed {
            let (got, advice) = if b.proto == Proto::Udp {
                (
                    format!("{} datagrams from {} flows", m.delivered, m.flows),
                    ADVICE_CLOSED_UDP,
                )
            } else {
                (
                    format!("{} deliveries and {} accepts", m.delivered, m.accepted),
                    ADVICE_CLOSED,
                )
            };
            out.push(Cause {
                code: Code::MemberClosed,
                member: Some(m.id),
                detail: format!(
                    "member {} ({}, {}) closed while observed after {got}; left out of the split",
                    m.id,
                    who(m),
                    m.address,
                ),
                advice,
            });
            continue;
        }
        if b.proto == Proto::Udp {
            if m.overflows > 0 {
                out.push(Cause {
                    code: Code::MemberNotReading,
                    member: Some(m.id),
                    detail: format!(
                        "member {} ({}, {}) got {} datagrams from {} flows and the kernel dropped {} more on it while observed: its receive buffer was full",
                        m.id,
                        who(m),
                        m.address,
                        m.delivered,
                        m.flows,
                        m.overflows
                    ),
                    advice: ADVICE_NOT_READING,
                });
            }
            continue;
        }
        let waiting = m.delivered.saturating_sub(m.accepted);
        let stuck_queue =
            m.queued > m.queued_start || (m.queue_limit > 0 && m.queued >= m.queue_limit);
        if waiting >= 3 && waiting * 2 >= m.delivered && stuck_queue {
            let last = match m.last_accept_ago_ns {
                Some(ns) => format!("last accept {:.1} s before the end", ns as f64 / 1e9),
                None => format!("no accept in the {:.1} s observed", b.duration_s),
            };
            let full = match (m.queue_limit > 0 && m.queued >= m.queue_limit, m.overflows) {
                (_, n) if n > 0 => format!(" (full: the kernel dropped {n} handshakes)"),
                (true, _) => " (full: the kernel drops new handshakes)".to_owned(),
                (false, _) => String::new(),
            };
            out.push(Cause {
                code: Code::MemberNotAccepting,
                member: Some(m.id),
                detail: format!(
                    "member {} ({}) got {} connections and accepted {}; accept queue {}/{}{}, {} at the start; {}",
                    m.id,
                    who(m),
                    m.delivered,
                    m.accepted,
                    m.queued,
                    m.queue_limit,
                    full,
                    m.queued_start,
                    last
                ),
                advice: ADVICE_NOT_ACCEPTING,
            });
        }
    }
    split_causes(b, &mut out);
    if out.is_empty() {
        let detail = match &b.spread {
            Some(s) if b.proto == Proto::Udp => format!(
                "{} flows over {} members, max/mean {:.2}, p = {:.2}: the split a fair hash gives, and no member dropped datagrams",
                s.total, s.members, s.imbalance, s.p_value
            ),
            Some(s) => format!(
                "{} flows over {} members, max/mean {:.2}, p = {:.2}: the split a fair hash gives, and every member accepts",
                s.total, s.members, s.imbalance, s.p_value
            ),
            None if b.members.is_empty() => format!(
                "no listening socket on port {} was seen in this namespace",
                b.port
            ),
            None => format!(
                "{} listening socket(s), {} connections: nothing uneven to explain",
                b.members.len(),
                b.members.iter().map(|m| m.delivered).sum::<u64>()
            ),
        };
        out.push(Cause {
            code: Code::Uniform,
            member: None,
            detail,
            advice: ADVICE_UNIFORM,
        });
    }
    b.causes = out;
}

/// The causes read from the split itself: over the SO_REUSEPORT members
/// listening at the end (a closed one is left out of the mean).
fn split_causes(b: &mut Balance, out: &mut Vec<Cause>) {
    let live: Vec<&Member> = b
        .members
        .iter()
        .filter(|m| m.reuseport && m.state == State::Listening)
        .collect();
    if live.len() < 2 {
        return;
    }
    // The hash chooses per flow: a UDP peer's datagrams all go one way.
    let counts: Vec<u64> = live.iter().map(|m| m.flows).collect();
    let spread = Spread::exact(&counts);
    b.spread = Some(spread);
    if spread.total == 0 {
        return;
    }
    // A UDP member that drops is short of the flows whose every datagram
    // it dropped (no delivery shows them): the split says nothing then,
    // and the drops are the cause already named.
    if b.proto == Proto::Udp && out.iter().any(|c| c.code == Code::MemberNotReading) {
        return;
    }
    let shares: Vec<String> = live
        .iter()
        .map(|m| format!("#{} {}", m.id, m.flows))
        .collect();
    // Connections from a port a client got again are one flow.
    let what = if b.proto == Proto::Udp || live.iter().any(|m| m.flows != m.delivered) {
        "flows"
    } else {
        "deliveries"
    };
    // Where something other than the hash chooses, a test against a fair
    // hash says nothing: name the chooser instead.
    let code = if b.bpf_selector {
        out.push(Cause {
            code: Code::BpfSelector,
            member: None,
            detail: format!(
                "a BPF program attached to the group chooses the member (sk_reuseport_cb->prog, run by reuseport_select_sock before any hash): {what} {}",
                shares.join(", ")
            ),
            advice: ADVICE_BPF,
        });
        None
    } else if b.incoming_cpu {
        out.push(Cause {
            code: Code::IncomingCpu,
            member: None,
            detail: format!(
                "members set SO_INCOMING_CPU: reuseport_select_sock_by_hash gives a connection to the member whose sk_incoming_cpu is the CPU that received it, and hashes only where none matches: {what} {}",
                shares.join(", ")
            ),
            advice: ADVICE_INCOMING_CPU,
        });
        None
    } else {
        split_code(&spread)
    };
    if code == Some(Code::UnevenDelivery) {
        out.push(Cause {
            code: Code::UnevenDelivery,
            member: None,
            detail: format!(
                "{what} {} over {} members (max/mean {:.2}): p = {:.1e} under a fair hash",
                shares.join(", "),
                live.len(),
                spread.imbalance,
                spread.p_value
            ),
            advice: ADVICE_UNEVEN,
        });
    } else if code == Some(Code::TooFewFlows) {
        out.push(Cause {
            code: Code::TooFewFlows,
            member: None,
            detail: format!(
                "{what} {} from {} flows over {} members (max/mean {:.2}): a fair hash splits at least this unevenly with p = {:.2}, so this is not evidence yet",
                shares.join(", "),
                spread.total,
                live.len(),
                spread.imbalance,
                spread.p_value
            ),
            advice: ADVICE_FEW,
        });
    }
    // Connections held say something only where every member takes its
    // own: a member not accepting holds none whatever the split.
    let stuck: Vec<usize> = out
        .iter()
        .filter(|c| matches!(c.code, Code::MemberNotAccepting | Code::MemberNotReading))
        .filter_map(|c| c.member)
        .collect();
    if spread.p_value >= SUSPECT && stuck.is_empty() {
        long_lived(&live, out);
    }
}

/// What a split of deliveries alone says: more uneven than a fair hash
/// gives ([`ALPHA`]), or uneven-looking but within chance for this few
/// flows, or nothing.
fn split_code(spread: &Spread) -> Option<Code> {
    if spread.total == 0 || spread.members < 2 {
        return None;
    }
    let few = spread.total < FEW_FLOWS_PER_MEMBER * spread.members as u64;
    let looks_uneven = spread.imbalance >= LOOKS_UNEVEN || spread.min == 0;
    if spread.p_value < ALPHA {
        Some(Code::UnevenDelivery)
    } else if looks_uneven && few {
        // With many flows a split within ALPHA of a fair hash is a fair
        // hash's: a fair split of 300 flows over 3 members looks as
        // uneven as 84/91/125 (p 0.008) about once in a hundred runs.
        Some(Code::TooFewFlows)
    } else {
        None
    }
}

/// The cause a view that sees only deliveries can name (the dashboard's
/// SO_REUSEPORT pane): `live` the deliveries of the members still
/// listening, `closed` how many left. Accepts, queues and connections
/// held need `inspector balance`.
pub fn deliveries_cause(live: &[u64], closed: usize) -> (Code, String) {
    // Exact where it matters (few flows) and is cheap; the chi-square
    // approximation holds beyond, and a view asks every frame.
    let approx = Spread::of(live);
    let spread = if approx.total < FEW_FLOWS_PER_MEMBER * live.len() as u64 {
        Spread::exact(live)
    } else {
        approx
    };
    let flows = format!(
        "{} flows over {} members, max/mean {:.2}, p {:.3}",
        spread.total, spread.members, spread.imbalance, spread.p_value
    );
    match split_code(&spread) {
        Some(Code::UnevenDelivery) => (
            Code::UnevenDelivery,
            format!("{flows}: more uneven than a fair hash gives"),
        ),
        Some(code) => (code, format!("{flows}: not evidence yet")),
        None if closed > 0 => (
            Code::MemberClosed,
            format!("{closed} member(s) closed, left out; {flows}"),
        ),
        None => (Code::Uniform, flows),
    }
}

/// Deliveries even, connections held uneven: only between members of
/// distinct processes, whose open connections are told apart.
fn long_lived(live: &[&Member], out: &mut Vec<Cause>) {
    let mut pids: Vec<u32> = live.iter().filter_map(|m| m.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    if pids.len() != live.len() {
        return;
    }
    let open: Vec<u64> = live.iter().map(|m| m.open).collect();
    let s = Spread::of(&open);
    if s.total < 10 || s.imbalance < 1.5 || s.p_value >= SUSPECT {
        return;
    }
    let shares: Vec<String> = live
        .iter()
        .map(|m| format!("#{} {}", m.id, m.open))
        .collect();
    out.push(Cause {
        code: Code::LongLivedLoad,
        member: None,
        detail: format!(
            "new connections are spread evenly, but the connections held are not: {} open (max/mean {:.2})",
            shares.join(", "),
            s.imbalance
        ),
        advice: ADVICE_LONG_LIVED,
    });
}

#[cfg(test)]
mod tests;
