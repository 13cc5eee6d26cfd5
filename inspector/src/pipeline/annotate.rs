//! Every failed bind or listen in `trace` and the dashboard carries its
//! explanation, computed right after the failure by the same predictor and
//! inventory as `inspector explain`, from the holders that existed when it
//! failed. So does a TCP connect() that found no local port
//! (EADDRNOTAVAIL), from `inspector explain --connect`'s model, under the
//! same rate limit.
//!
//! The inventory is read after the failure, so it can hold sockets created
//! since. The kernel's tables say nothing about when a socket was created;
//! the event stream does. Rule: a holder is left out when the records read
//! with the failure show it created after the failure's `ts_ns`:
//! - its cookie on a successful bind (any phase, autobind included) or an
//!   accept timestamped after the failure;
//! - for a timewait socket, its 4-tuple entering TIME_WAIT (`tw_enter`)
//!   after the failure.
//!
//! The second rule holds even when the full socket existed at the failure
//! (a connection accepted before it and closed server-first after it): the
//! timewait socket keeps the full socket's cookie (`inet_twsk_alloc()`
//! copies `sk_cookie`), but it entered the port's bucket only at
//! `inet_twsk_hashdance_schedule()`, after the failure, and what blocked
//! the bind then was the full socket in another state. Its FIN_WAIT2
//! entry counts: `tcp_time_wait()` makes the timewait socket there and the
//! later move to TIME_WAIT is a re-arm of the same one.
//!
//! Sockets created between the last read of the ring buffer and the
//! inventory (the time of one snapshot, milliseconds) are not in those
//! records and cannot be left out.
//!
//! A successful UDP bind with SO_REUSEADDR is checked too: when another
//! uid's unconnected socket already holds the same address with
//! SO_REUSEADDR, the bind is a hijack (`udp_lib_lport_inuse()` compares no
//! uids for SO_REUSEADDR, and `__udp4_lib_lookup()` hands every unicast
//! datagram to one socket, the one bound last); its `explanation` says so.
//! Only sockets bound before it count: in the port's UDP hash chain they
//! come after it (newest first), whenever the record is read.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use crate::{
    explain::{
        self, ConnectPlan, Destination, Request,
        inventory::{Holder, Source},
        text,
        words::{fmt_addr, owner, unmap},
    },
    kernel::{Errno, Phase, Proto, TcpState},
    model::record::{Record, RecordType},
    model::tracker::{Tracker, Tuple},
};

/// At most this many explanations per second: each one reads the port's
/// sockets from the kernel, and a failure storm must not stall intake.
const PER_SECOND: u32 = 20;

/// How long an explanation answers the same failure again: a failure
/// storm usually repeats one request, and each answer costs a snapshot of
/// the kernel's tables on the ring buffer reader's path.
const REUSE: Duration = Duration::from_secs(1);

/// What makes two failures the same question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    netns: u32,
    pid: Option<u32>,
    proto: Option<Proto>,
    addr: Option<IpAddr>,
    port: Option<u16>,
    phase: Option<Phase>,
    flags: (bool, bool, bool),
    uid: Option<u32>,
}

impl Key {
    fn of(r: &Record) -> Self {
        Self {
            netns: r.netns,
            pid: r.pid,
            proto: r.proto,
            addr: r.req_addr,
            port: r.req_port,
            phase: r.phase,
            flags: (r.reuseaddr, r.reuseport, r.v6only),
            uid: r.uid,
        }
    }
}

/// An answer kept for [`REUSE`]: when, for the failure at `ts_ns`.
#[derive(Debug)]
struct Cached {
    at: Instant,
    ts_ns: u64,
    why: Option<String>,
}

#[derive(Debug)]
pub struct Annotator {
    window: Instant,
    used: u32,
    /// Failures left unexplained by the rate limit.
    pub skipped: u64,
    /// Answers of the last [`REUSE`] period, by question.
    recent: HashMap<Key, Cached>,
    /// The socket iterators, loaded with the annotator: loading them at the
    /// first failure would answer late, from a changed port.
    source: Option<Source>,
}

impl Default for Annotator {
    fn default() -> Self {
        Self {
            window: Instant::now(),
            used: 0,
            skipped: 0,
            recent: HashMap::new(),
            source: Some(Source::open()),
        }
    }
}

/// When the records show sockets created: by cookie and, for timewait
/// sockets, by 4-tuple.
#[derive(Debug, Default)]
struct Created {
    cookies: HashMap<u64, u64>,
    timewait: HashMap<Tuple, u64>,
}

impl Created {
    fn of(records: &[Record]) -> Self {
        let mut c = Self::default();
        for r in records {
            let created = match r.kind {
                RecordType::Bind => r.errno.is_none(),
                RecordType::Accept => true,
                _ => false,
            };
            if created && let Some(cookie) = r.cookie {
                c.cookies.entry(cookie).or_insert(r.ts_ns);
            }
            if r.kind == RecordType::TwEnter {
                c.timewait.entry(tuple(r)).or_insert(r.ts_ns);
            }
        }
        c
    }
}

fn tuple(r: &Record) -> Tuple {
    Tuple {
        netns: r.netns,
        laddr: r.laddr,
        lport: r.lport,
        raddr: r.raddr,
        rport: r.rport,
    }
}

impl Annotator {
    /// Fills `explanation` on the EADDRINUSE decisions of `records`, the
    /// records read together; `tracker` (the one that produced them) names
    /// the last owners of TIME_WAIT holders.
    pub fn annotate(&mut self, records: &mut [Record], tracker: Option<&Tracker>) {
        let shared = records.iter().any(is_shared_udp_bind);
        let failed = records.iter().any(is_explained_failure);
        if !shared && !failed {
            return;
        }
        let created = Created::of(records);
        for r in records.iter_mut().filter(|r| is_shared_udp_bind(r)) {
            if self.window.elapsed() >= Duration::from_secs(1) {
                self.window = Instant::now();
                self.used = 0;
            }
            if self.used >= PER_SECOND {
                self.skipped += 1;
                continue;
            }
            self.used += 1;
            r.explanation = hijack_note(r, &mut self.source, &created);
        }
        if !failed {
            return;
        }
        for r in records.iter_mut() {
            if !is_explained_failure(r) {
                continue;
            }
            let key = Key::of(r);
            if let Some(c) = self.recent.get(&key)
                && c.at.elapsed() < REUSE
            {
                r.explanation = c.why.as_ref().map(|why| {
                    format!(
                        "{why} (same as the failure at {:.3} s)",
                        c.ts_ns as f64 / 1e9
                    )
                });
                continue;
            }
            if self.window.elapsed() >= Duration::from_secs(1) {
                self.window = Instant::now();
                self.used = 0;
                self.recent.retain(|_, c| c.at.elapsed() < REUSE);
            }
            if self.used >= PER_SECOND {
                self.skipped += 1;
                continue;
            }
            self.used += 1;
            r.explanation = if r.kind == RecordType::Connect {
                explain_connect_at(r, &mut self.source, &created, tracker)
            } else {
                explain_at(r, &mut self.source, &created, tracker)
            };
            self.recent.insert(
                key,
                Cached {
                    at: Instant::now(),
                    ts_ns: r.ts_ns,
                    why: r.explanation.clone(),
                },
            );
        }
    }
}

/// The failures that carry an explanation: a bind()/listen() refused
/// with EADDRINUSE, and a TCP connect() that found no local port:
/// EADDRNOTAVAIL from `__inet_hash_connect()`, for an unbound socket (no
/// free port in the range) or a bound one (`__inet_check_established()`
/// found its 4-tuple taken). EADDRINUSE is taken too, should a kernel
/// answer a connect() with it.
fn is_explained_failure(r: &Record) -> bool {
    match r.kind {
        RecordType::Bind => r.errno == Some(Errno::EADDRINUSE),
        RecordType::Connect => {
            r.proto != Some(Proto::Udp)
                && (r.errno == Some(Errno::EADDRNOTAVAIL) || r.errno == Some(Errno::EADDRINUSE))
        }
        _ => false,
    }
}

/// Whether the holder existed at the failure at `ts` (see the module
/// comment), naming a TIME_WAIT holder's last owner on the way.
fn existed_at(
    h: &mut Holder,
    ts: u64,
    netns: u32,
    created: &Created,
    tracker: Option<&Tracker>,
) -> bool {
    if created.cookies.get(&h.cookie).is_some_and(|&at| at > ts) {
        return false;
    }
    if h.timewait {
        let t = Tuple {
            netns,
            laddr: h.laddr,
            lport: h.lport,
            raddr: h.raddr,
            rport: h.rport,
        };
        if created.timewait.get(&t).is_some_and(|&at| at > ts) {
            return false;
        }
        if let Some(o) = tracker.and_then(|tr| tr.connection_owner(&t)) {
            h.last_pid = Some(o.pid);
            h.last_comm = Some(o.comm.clone());
        }
    }
    true
}

/// A failed connect(): the ephemeral range toward its destination, from
/// the calling thread's namespace, without sockets created after it. A
/// socket bound before connect() (its port still set in the record) used
/// that one port: the answer names what holds its 4-tuple.
fn explain_connect_at(
    r: &Record,
    source: &mut Option<Source>,
    created: &Created,
    tracker: Option<&Tracker>,
) -> Option<String> {
    let destination = Destination {
        addr: unmap(r.req_addr?),
        port: r.req_port?,
    };
    let (held, netns) = thread_netns(r)?;
    let source = source.get_or_insert_with(Source::open);
    let (ts, ns) = (r.ts_ns, r.netns);
    if r.lport != 0 {
        let mut inv = source.collect(Some(&netns), r.lport).ok()?;
        drop(held);
        if inv.netns != ns {
            return None;
        }
        inv.holders
            .retain_mut(|h| h.proto == Proto::Tcp && existed_at(h, ts, ns, created, tracker));
        let taken: Vec<String> = inv
            .holders
            .iter()
            .filter(|h| h.rport == destination.port && h.raddr == destination.addr)
            .take(3)
            .map(|h| {
                format!(
                    "{} {} -> {} ({})",
                    h.state,
                    fmt_addr(h.laddr, h.lport),
                    fmt_addr(h.raddr, h.rport),
                    owner(
                        h.pid,
                        h.comm.as_deref(),
                        h.last_pid.zip(h.last_comm.as_deref())
                    )
                )
            })
            .collect();
        let mut line = format!(
            "__inet_hash_connect: the socket was bound to port {} before connect(), so only that port was tried, and __inet_check_established() found its 4-tuple toward {destination} taken",
            r.lport
        );
        if !taken.is_empty() {
            line.push_str(&format!("; held by {}", taken.join(", ")));
        }
        line.push_str("; bind() to port 0 with IP_BIND_ADDRESS_NO_PORT (or not at all) to let connect() pick the port per 4-tuple");
        return Some(line);
    }
    let plan = ConnectPlan {
        destination,
        netns: Some(netns),
    };
    let e =
        explain::explain_connect_with(&plan, source, |h| existed_at(h, ts, ns, created, tracker))
            .ok()?;
    drop(held);
    if e.netns != ns {
        return None;
    }
    Some(if e.verdict.is_ok() {
        format!(
            "{} free port(s) toward {destination} now: the ports were released since",
            e.free
        )
    } else {
        text::summary_line(&e)
    })
}

/// A successful UDP bind() with SO_REUSEADDR: the one kind of success
/// that can take another user's traffic.
fn is_shared_udp_bind(r: &Record) -> bool {
    r.kind == RecordType::Bind
        && r.proto == Some(Proto::Udp)
        && r.errno.is_none()
        && r.reuseaddr
        && r.phase == Some(Phase::Bind)
        && r.req_port.is_some_and(|p| p != 0)
}

/// The hijack this UDP bind makes, if another uid's unconnected socket
/// shares its address through SO_REUSEADDR.
fn hijack_note(r: &Record, source: &mut Option<Source>, created: &Created) -> Option<String> {
    let uid = r.uid?;
    let (held, netns) = thread_netns(r)?;
    let source = source.get_or_insert_with(Source::open);
    let inv = source.collect(Some(&netns), r.lport).ok()?;
    drop(held);
    if inv.netns != r.netns {
        return None;
    }
    // The UDP holders come in the order of the port's primary hash chain
    // (`udp_chain_order`), and udp_lib_get_port() adds every socket at its
    // head (`sk_add_node_rcu()`): those ahead of this record's own socket
    // were bound after it, and did not share the address when it bound.
    // Its cookie may be unset at bind time (the kernel makes one on first
    // request); its inode is always there.
    let own = inv.holders.iter().position(|h| {
        h.proto == Proto::Udp && (r.cookie == Some(h.cookie) || (r.ino.is_some() && h.ino == r.ino))
    });
    let others: Vec<String> = inv
        .holders
        .iter()
        .enumerate()
        .filter(|&(i, _)| own.is_none_or(|o| i > o))
        .map(|(_, h)| h)
        .filter(|h| {
            h.proto == Proto::Udp
                && h.state == TcpState::CLOSE
                && h.laddr == r.laddr
                && h.bound_dev_if == r.bound_dev_if
                && h.reuseaddr == Some(true)
                && h.uid.is_some_and(|u| u != uid)
                && r.cookie != Some(h.cookie)
                && created
                    .cookies
                    .get(&h.cookie)
                    .is_none_or(|&at| at <= r.ts_ns)
        })
        .map(|h| {
            let owner = match (h.pid, &h.comm) {
                (Some(p), Some(c)) => format!(", pid {p} {c}"),
                _ => String::new(),
            };
            format!("uid {}{owner}", h.uid.unwrap_or_default())
        })
        .collect();
    if others.is_empty() {
        return None;
    }
    Some(format!(
        "hijack risk: UDP {} is now shared through SO_REUSEADDR with {}; \
         udp_lib_lport_inuse() compares no uids for SO_REUSEADDR, and __udp4_lib_lookup() \
         gives every unicast datagram to the socket bound last (this one, uid {uid})",
        fmt_addr(r.laddr, r.lport),
        others.join(", ")
    ))
}

/// The record's network namespace, held open, and a path to it through
/// this process's descriptor. The calling thread's, if it is still there
/// and still in that namespace; otherwise any way into the namespace by
/// its inode (this process's own, a `/run/netns` name, another process
/// inside it, a thread or descriptor of this process's): a service that exits right after its failed bind, the
/// crash loop that is the incident itself, leaves its namespace behind.
fn thread_netns(r: &Record) -> Option<(std::fs::File, std::path::PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let same = |f: &std::fs::File| f.metadata().is_ok_and(|m| m.ino() == u64::from(r.netns));
    let thread = r
        .pid
        .zip(r.tid)
        .and_then(|(pid, tid)| std::fs::File::open(format!("/proc/{pid}/task/{tid}/ns/net")).ok())
        .filter(same);
    let held = match thread {
        Some(f) => f,
        None => std::fs::File::open(crate::kernel::netns::netns_path_any(r.netns)?)
            .ok()
            .filter(same)?,
    };
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
    Some((held, path))
}

/// [`explain_failure`] with holders created after the failure left out.
fn explain_at(
    r: &Record,
    source: &mut Option<Source>,
    created: &Created,
    tracker: Option<&Tracker>,
) -> Option<String> {
    let ts = r.ts_ns;
    let netns = r.netns;
    explain_failure_with(r, source, |h| existed_at(h, ts, netns, created, tracker))
}

/// One line: the rule that refused the call and the socket(s) that hold
/// the port, from the failing process's namespace as it is now.
pub fn explain_failure(r: &Record) -> Option<String> {
    explain_failure_with(r, &mut None, |_| true)
}

fn explain_failure_with(
    r: &Record,
    source: &mut Option<Source>,
    keep: impl FnMut(&mut Holder) -> bool,
) -> Option<String> {
    let (held, netns) = thread_netns(r)?;
    let req = Request {
        port: u32::from(r.req_port?),
        tcp: r.proto == Some(Proto::Tcp),
        udp: r.proto == Some(Proto::Udp),
        addr: r.req_addr,
        netns: Some(netns),
        reuseaddr: r.reuseaddr,
        reuseport: r.reuseport,
        v6only: r.v6only,
        uid: r.uid,
        // The failing program: advice tells another program holding the
        // port from another instance of this one.
        comm: r.comm.clone(),
        ..Request::default()
    };
    // Loaded only now, after the failing thread's namespace was named: the
    // first load takes a while, and the thread may be gone by then.
    let source = source.get_or_insert_with(Source::open);
    let e = explain::explain_with(&req, source, keep).ok()?;
    drop(held);
    // The namespace may have changed hands since; only a same-namespace
    // answer explains this record.
    if e.netns != r.netns {
        return None;
    }
    Some(text::failure_line(&e, r.phase == Some(Phase::Listen)))
}
