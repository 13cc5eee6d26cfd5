//! Turns raw kernel events into attributed trace records.
//!
//! Two jobs need memory across events:
//! - Attribution. Events raised in softirq or timer context carry whatever
//!   task the CPU was running. The kernel side already attributes sockets it
//!   saw in their owner's syscalls; here an unaccepted connection is given to
//!   the owner of its listener, and a TIME_WAIT socket (owned by nobody) keeps
//!   the owner its connection had, found by network namespace and 4-tuple.
//! - The TIME_WAIT lifecycle. The kernel shows timer operations on
//!   `inet_timewait_sock`s: arm, detach, expire. Expiry is "detach, then
//!   handler", a re-arm is "detach, then arm", a kill or reuse is a detach
//!   alone. A detach is therefore held until the next operation on the same
//!   socket or until [`Tracker::flush`] finds it older than [`CANCEL_GRACE_NS`].
//!
//! Memory is bounded without forgetting what still matters: owners and
//! connections are evicted least recently used first, timewait sockets age
//! out after [`TW_LIFETIME_NS`] even when their exit event was lost, and
//! listeners stay as long as their socket is open. Every eviction is
//! counted in [`TrackerStats`].

mod timewait;

use std::{collections::VecDeque, net::IpAddr, num::NonZeroUsize};

use self::timewait::{Cancel, NEVER, Tw, exit_record};
pub use self::timewait::{RECENT_TW, RecentTw, TW_LIFETIME_NS};

use inspector_common::{Event, EventKind, flag, kind};

use crate::{
    kernel::TcpState,
    model::record::{
        ExitReason, Name, Names, Owner, OwnerSource, Record, RecordType, addr, decode_bind,
        decode_state,
    },
    util::dense::{DenseMap, Lru},
    util::fasthash::{FastMap, KeyedState},
};

/// How long a detached timewait timer waits for its "expire" or "re-arm"
/// follow-up before it counts as killed or reused. The follow-up comes
/// from the same CPU within microseconds; 100 ms is generous.
pub const CANCEL_GRACE_NS: u64 = 100_000_000;

/// Bound on remembered owners and connections, so memory stays flat on
/// busy hosts; past it the least recently used go first.
const MAX_REMEMBERED: NonZeroUsize = NonZeroUsize::new(131_072).expect("nonzero");

/// Bound on timewait sockets followed at once (the kernel's own default
/// `tcp_max_tw_buckets` on a small host is of this order); past it the
/// oldest go first. 7/8 of 2^17: the most a hash table of 2^17 buckets
/// holds before it doubles (hashbrown's load factor).
pub const MAX_TIME_WAIT: usize = 114_688;

/// How long an age queue of `live` entries may grow with stale ones
/// (entries whose socket left or was re-armed) before it is compacted: a
/// quarter more, so that at 100,000 live entries the queue stays within
/// 2^17 slots (a `VecDeque` doubles past that); one compaction pass per
/// `live / 4` pushes keeps the cost per push constant.
pub(crate) fn stale_bound(live: usize) -> usize {
    live + live / 4 + 1024
}

/// What the tracker let go of to keep its memory bounded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrackerStats {
    /// Socket owners evicted (least recently used) past [`MAX_REMEMBERED`].
    pub owners_evicted: u64,
    /// Connection owners evicted past [`MAX_REMEMBERED`]: a later
    /// TIME_WAIT of theirs shows no last owner.
    pub connections_evicted: u64,
    /// Timewait sockets evicted (oldest first) past [`MAX_TIME_WAIT`]:
    /// their exit is not reported.
    pub tw_evicted: u64,
    /// Timewait sockets forgotten [`TW_LIFETIME_NS`] after their last arm
    /// with no exit seen: their exit event was lost.
    pub tw_aged_out: u64,
}

/// Connection identity: network namespace plus 4-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub netns: u32,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
}

impl Tuple {
    fn of(r: &Record) -> Self {
        Self {
            netns: r.netns,
            laddr: r.laddr,
            lport: r.lport,
            raddr: r.raddr,
            rport: r.rport,
        }
    }

    fn of_event(ev: &Event) -> Self {
        Self {
            netns: ev.netns,
            laddr: addr(ev.family, &ev.laddr),
            lport: ev.lport,
            raddr: addr(ev.family, &ev.raddr),
            rport: ev.rport,
        }
    }
}

/// An owner as the tracker keeps it, per socket and per connection: the
/// name is shared between all entries that carry it ([`Names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    pid: u32,
    uid: u32,
    cgroup: u64,
    comm: Name,
}

impl Held {
    fn name(&self, r: &mut Record, source: OwnerSource) {
        r.set_owner(self.pid, &self.comm, self.cgroup, source);
    }
}

/// A listening socket and its owner.
#[derive(Debug)]
struct Listener {
    sock: u64,
    owner: Held,
}

#[derive(Debug)]
pub struct Tracker {
    /// Socket id -> owner, from events that named the owner.
    owners: Lru<u64, Held>,
    /// Listening sockets by (netns, port), several with SO_REUSEPORT; the
    /// newest is listed last. A listener leaves only when it closes.
    listeners: FastMap<(u32, u16), Vec<Listener>>,
    /// Last owner of each connection, by 4-tuple.
    connections: Lru<Tuple, Held>,
    /// The process names the owners above share.
    names: Names,
    /// Timewait sockets by kernel address.
    tw: DenseMap<u64, Tw>,
    /// (arm time, socket) in arrival order, oldest first, for aging out and
    /// evicting timewait sockets; entries whose socket was re-armed or left
    /// are skipped when met.
    tw_age: VecDeque<(u64, u64)>,
    /// The detached ones (awaiting their follow-up) by 4-tuple, so state
    /// events and flushes find them without scanning every timewait socket.
    detached: FastMap<Tuple, u64>,
    stats: TrackerStats,
    /// Leave out a full socket's change into CLOSE as its timewait socket
    /// takes over: its `tw_enter`, just before, reports the same end
    /// ([`Tracker::fold_timewait_handover`]).
    fold_handover: bool,
    recent_tw: RecentTw,
    /// The keyed hasher of every map here, seeded once per tracker from a
    /// per-process random seed: their keys are addresses and ports a
    /// remote peer chooses. Kept so the tests can check the spread.
    #[cfg_attr(not(test), expect(dead_code, reason = "the maps hold clones"))]
    keyed: KeyedState,
}

impl Default for Tracker {
    fn default() -> Self {
        let keyed = KeyedState::default();
        Self {
            owners: Lru::with_hasher(MAX_REMEMBERED, keyed.clone()),
            listeners: FastMap::with_hasher(keyed.clone()),
            connections: Lru::with_hasher(MAX_REMEMBERED, keyed.clone()),
            names: Names::default(),
            tw: DenseMap::with_hasher(keyed.clone()),
            tw_age: VecDeque::new(),
            detached: FastMap::with_hasher(keyed.clone()),
            stats: TrackerStats::default(),
            fold_handover: false,
            recent_tw: RecentTw::default(),
            keyed,
        }
    }
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// `trace`'s default (without `--states`): a connection that enters
    /// TIME_WAIT is reported once, by its `tw_enter`, and not also by its
    /// full socket's `x -> CLOSE` that follows. Matched by cookie; a close
    /// that matches none (no cookie, or more than [`RECENT_TW`] entries
    /// between them) is reported as before.
    pub fn fold_timewait_handover(&mut self, on: bool) {
        self.fold_handover = on;
    }

    /// What was evicted or aged out so far.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// Number of timewait sockets currently known (any substate).
    pub fn time_wait_count(&self) -> usize {
        self.tw.len()
    }

    /// The last owner the probes saw for the connection `tuple`: who held a
    /// timewait socket's connection before it closed.
    pub fn connection_owner(&self, tuple: &Tuple) -> Option<Owner> {
        self.connections.peek(tuple).map(|o| Owner {
            pid: o.pid,
            comm: o.comm.to_string(),
            uid: o.uid,
            cgroup: o.cgroup,
        })
    }

    /// Applies one kernel event, appending the records it produces to `out`.
    pub fn apply(&mut self, ev: &Event, out: &mut Vec<Record>) {
        // Decoding refused unknown kinds (and counted them): every kind
        // reaching here has its case.
        let Some(kind) = EventKind::from_raw(ev.kind) else {
            return;
        };
        match kind {
            EventKind::Bind | EventKind::Connect | EventKind::Accept => self.on_syscall(ev, out),
            EventKind::State => self.on_state(ev, out),
            EventKind::Reuseport => {
                let mut r = Record::from_event(ev, RecordType::Reuseport);
                r.group = Some(format!("{:x}", ev.aux));
                self.attribute(ev, &mut r);
                out.push(r);
            }
            EventKind::TwArm => self.on_tw_arm(ev, out),
            EventKind::TwCancel => self.on_tw_cancel(ev),
            EventKind::TwExpire => {
                if let Some(mut tw) = self.remove_tw(ev.sock) {
                    tw.substate = TcpState::from(ev.new_state);
                    out.push(exit_record(ev.sock, &tw, ev.ts_ns, ExitReason::Expired));
                }
            }
        }
    }

    /// Resolves detached timewait timers older than the grace period:
    /// reused when the detach happened inside a connect(), killed otherwise.
    /// Also forgets timewait sockets whose exit never came (see
    /// [`TW_LIFETIME_NS`]).
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<Record>) {
        while let Some(&(at, sock)) = self.tw_age.front() {
            if now_ns.saturating_sub(at) < TW_LIFETIME_NS {
                break;
            }
            self.tw_age.pop_front();
            // A pending detach is resolved below, with its own time.
            if self
                .tw
                .get(&sock)
                .is_some_and(|t| t.armed_ns == at && t.cancel_ns == NEVER)
            {
                self.remove_tw(sock);
                self.stats.tw_aged_out += 1;
            }
        }
        let due: Vec<u64> = self
            .detached
            .values()
            .filter(|sock| {
                self.tw
                    .get(sock)
                    .and_then(Tw::cancel)
                    .is_some_and(|c| now_ns.saturating_sub(c.at_ns) >= CANCEL_GRACE_NS)
            })
            .copied()
            .collect();
        for key in due {
            if let Some(mut tw) = self.remove_tw(key)
                && let Some(c) = tw.cancel()
            {
                tw.substate = c.substate;
                out.push(exit_record(key, &tw, c.at_ns, c.reason()));
            }
        }
        self.trim();
    }

    /// Gives back the memory of a burst once it is over: a hash table keeps
    /// its largest size otherwise. Only when far below it, so that steady
    /// traffic never reallocates.
    fn trim(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V>(m: &mut FastMap<K, V>) {
            if m.capacity() > 4096 && m.len() < m.capacity() / 8 {
                m.shrink_to(m.len() * 2);
            }
        }
        if self.tw.capacity() > 4096 && self.tw.len() < self.tw.capacity() / 8 {
            self.tw.shrink_to(self.tw.len() * 2);
        }
        shrink(&mut self.detached);
        shrink(&mut self.listeners);
        if self.tw_age.capacity() > 4096 && self.tw_age.len() < self.tw_age.capacity() / 8 {
            self.tw_age.shrink_to(self.tw_age.len() * 2);
        }
    }

    /// Follows a new timewait socket, making room past [`MAX_TIME_WAIT`]
    /// by evicting the oldest.
    fn insert_tw(&mut self, sock: u64, tw: Tw) {
        while self.tw.len() >= MAX_TIME_WAIT {
            let Some((at, old)) = self.tw_age.pop_front() else {
                break;
            };
            if self.tw.get(&old).is_some_and(|t| t.armed_ns == at) {
                self.remove_tw(old);
                self.stats.tw_evicted += 1;
            }
        }
        self.note_armed(sock, tw.armed_ns);
        self.tw.insert(sock, tw);
    }

    /// Queues a timewait socket's arm time for aging; drops the stale
    /// entries when they outnumber the live ones.
    fn note_armed(&mut self, sock: u64, at: u64) {
        self.tw_age.push_back((at, sock));
        if self.tw_age.len() > stale_bound(self.tw.len()) {
            let tw = &self.tw;
            self.tw_age
                .retain(|(at, s)| tw.get(s).is_some_and(|t| t.armed_ns == *at) || *s == sock);
        }
    }

    /// Forgets a timewait socket, and its detach if one is pending.
    fn remove_tw(&mut self, sock: u64) -> Option<Tw> {
        let tw = self.tw.remove(&sock)?;
        let tuple = tw.tuple();
        if self.detached.get(&tuple) == Some(&sock) {
            self.detached.remove(&tuple);
        }
        Some(tw)
    }

    /// The event's owner, remembered for its socket. Most events repeat
    /// what is already known: those allocate nothing here.
    fn remember(&mut self, ev: &Event) -> Held {
        let name = comm_of(ev);
        let same = |o: &Held| {
            o.pid == ev.pid && o.uid == ev.uid && o.cgroup == ev.cgroup && *o.comm == *name
        };
        if let Some(o) = self.owners.get(&ev.sock)
            && same(o)
        {
            return o.clone();
        }
        if !self.owners.contains(&ev.sock) && self.owners.len() >= self.owners.cap().get() {
            self.stats.owners_evicted += 1;
        }
        let o = Held {
            pid: ev.pid,
            uid: ev.uid,
            cgroup: ev.cgroup,
            comm: self.names.get(&name),
        };
        self.owners.push(ev.sock, o.clone());
        o
    }

    /// Remembers the owner of connection `tuple` (from its record `r`),
    /// unless it is already: pid, name, uid and cgroup, which its TIME_WAIT
    /// records carry on.
    fn remember_connection(&mut self, tuple: Tuple, r: &Record, uid: u32) {
        let Some(pid) = r.pid else { return };
        let cgroup = r.cgroup_id.unwrap_or(0);
        if self
            .connections
            .get(&tuple)
            .is_some_and(|o| o.pid == pid && o.cgroup == cgroup)
        {
            return;
        }
        let owner = Held {
            pid,
            uid,
            cgroup,
            comm: self.names.get(r.comm.as_deref().unwrap_or_default()),
        };
        if let Some((old, _)) = self.connections.push(tuple, owner)
            && old != tuple
        {
            self.stats.connections_evicted += 1;
        }
    }

    fn on_syscall(&mut self, ev: &Event, out: &mut Vec<Record>) {
        let kind = match ev.kind {
            kind::BIND => RecordType::Bind,
            kind::CONNECT => RecordType::Connect,
            _ => RecordType::Accept,
        };
        let mut r = if kind == RecordType::Accept {
            Record::from_event(ev, kind)
        } else {
            decode_bind(ev, kind)
        };
        self.remember(ev).name(&mut r, OwnerSource::Syscall);
        // The connection's owner for its TIME_WAIT records: known here
        // even where its later state changes are not reported.
        let connected = match kind {
            RecordType::Connect => ev.errno == 0 || ev.errno == libc::EINPROGRESS,
            RecordType::Accept => true,
            _ => false,
        };
        if connected {
            let tuple = Tuple::of(&r);
            self.remember_connection(tuple, &r, ev.uid);
            // Where state changes are not reported, the connection's own
            // accept() or connect() is where it is seen taking over.
            self.take_over(tuple, out);
        }
        out.push(r);
    }

    /// A new connection on the 4-tuple of a just-detached timewait socket:
    /// the kernel reused the timewait slot (a SYN arriving in TIME_WAIT,
    /// tcp_timewait_state_process() -> TCP_TW_SYN, or a connect() taking
    /// it over, tcp_twsk_unique()). Its exit is reported now: the new
    /// connection may close into a timewait socket at the same address,
    /// whose arm would otherwise pass for a re-arm.
    fn take_over(&mut self, tuple: Tuple, out: &mut Vec<Record>) {
        if let Some(&sock) = self.detached.get(&tuple)
            && let Some(mut tw) = self.remove_tw(sock)
            && let Some(c) = tw.cancel()
        {
            tw.substate = c.substate;
            out.push(exit_record(sock, &tw, c.at_ns, ExitReason::Reused));
        }
    }

    fn on_state(&mut self, ev: &Event, out: &mut Vec<Record>) {
        if self.fold_handover
            && self.recent_tw.handover(
                TcpState::from(ev.old_state),
                TcpState::from(ev.new_state),
                ev.cookie,
            )
        {
            // The socket is gone all the same: nothing may inherit its owner.
            self.owners.pop(&ev.sock);
            return;
        }
        let mut r = decode_state(ev);
        self.attribute(ev, &mut r);
        let tuple = Tuple::of(&r);
        let (old, new) = (TcpState::from(ev.old_state), TcpState::from(ev.new_state));
        if new == TcpState::LISTEN {
            if let Some(pid) = r.pid {
                let owner = Held {
                    pid,
                    uid: ev.uid,
                    cgroup: r.cgroup_id.unwrap_or(0),
                    comm: self.names.get(r.comm.as_deref().unwrap_or_default()),
                };
                let list = self.listeners.entry((ev.netns, ev.lport)).or_default();
                list.retain(|l| l.sock != ev.sock);
                list.push(Listener {
                    sock: ev.sock,
                    owner,
                });
            }
        } else if old == TcpState::LISTEN && new == TcpState::CLOSE {
            // The listener itself closing. Not any `LISTEN -> x`: a child
            // socket is cloned from its listener with the listener's state
            // and its first change, inet_csk_clone_lock() ->
            // inet_sk_set_state(newsk, TCP_SYN_RECV), reads LISTEN -> SYN_RECV.
            self.forget_listener(ev.netns, ev.lport, ev.sock);
        } else if r.pid.is_some() {
            self.remember_connection(tuple, &r, ev.uid);
        }
        if new == TcpState::CLOSE {
            self.owners.pop(&ev.sock);
        }
        if new != TcpState::CLOSE {
            self.take_over(tuple, out);
        }
        out.push(r);
    }

    fn forget_listener(&mut self, netns: u32, port: u16, sock: u64) {
        if let Some(list) = self.listeners.get_mut(&(netns, port)) {
            list.retain(|l| l.sock != sock);
            if list.is_empty() {
                self.listeners.remove(&(netns, port));
            }
        }
    }

    /// Sets `pid`/`comm` from the best source: the kernel's remembered
    /// owner, ours, or the listener's for a connection not yet accepted.
    fn attribute(&mut self, ev: &Event, r: &mut Record) {
        if ev.flags & (flag::OWNER_KNOWN | flag::SYSCALL) != 0 {
            let source = if ev.flags & flag::SYSCALL != 0 {
                OwnerSource::Syscall
            } else {
                OwnerSource::Remembered
            };
            self.remember(ev).name(r, source);
        } else if let Some(owner) = self.owners.get(&ev.sock) {
            owner.name(r, OwnerSource::Remembered);
        } else if let Some(l) = self
            .listeners
            .get(&(ev.netns, ev.lport))
            .and_then(|list| list.last())
            && ev.kind == kind::STATE
        {
            l.owner.name(r, OwnerSource::Listener);
        }
    }

    /// A timewait timer armed: a new timewait socket (entry), or a re-arm of
    /// a known one, which may carry its FIN_WAIT2 -> TIME_WAIT move.
    fn on_tw_arm(&mut self, ev: &Event, out: &mut Vec<Record>) {
        let tuple = Tuple::of_event(ev);
        // Where the kernel tells an entry from a re-arm (`flag::TW_ENTRY`),
        // a new timewait socket on a 4-tuple whose last one was detached
        // means a new connection took that one over in between.
        let entry = ev.flags & flag::TW_ENTRY != 0;
        if entry {
            self.take_over(tuple, out);
        }
        // The kernel reuses a freed timewait socket's memory: the same
        // address with another connection (or, where the kernel says so,
        // any new entry) is a new socket, and the old one is gone (its exit
        // may still wait for its grace period).
        if self
            .tw
            .get(&ev.sock)
            .is_some_and(|tw| entry || tw.tuple() != tuple)
            && let Some(mut old) = self.remove_tw(ev.sock)
        {
            let (at, reason) = match old.cancel() {
                Some(c) => {
                    old.substate = c.substate;
                    (c.at_ns, c.reason())
                }
                None => (ev.ts_ns, ExitReason::Killed),
            };
            out.push(exit_record(ev.sock, &old, at, reason));
        }
        let substate = TcpState::from(ev.new_state);
        if let Some(tw) = self.tw.get_mut(&ev.sock) {
            // Re-armed: the detach before it was not an exit.
            tw.set_cancel(None);
            tw.armed_ns = ev.ts_ns;
            if self.detached.get(&tuple) == Some(&ev.sock) {
                self.detached.remove(&tuple);
            }
            if tw.substate != substate {
                let mut r = tw.record(ev.sock, RecordType::State, ev.ts_ns);
                r.old_state = Some(tw.substate);
                r.new_state = Some(substate);
                tw.substate = substate;
                out.push(r);
            }
            self.note_armed(ev.sock, ev.ts_ns);
            return;
        }
        let mut tw = Tw::of(ev, substate);
        tw.entered_ns = ev.ts_ns;
        if ev.flags & flag::OWNER_KNOWN != 0 {
            // The kernel named the connection's owner with the entry (where
            // successful calls are quiet): the timewait socket's last one.
            tw.last_pid = ev.pid;
            tw.last_comm = Some(self.names.get(&comm_of(ev)));
            tw.uid = ev.uid;
            tw.cgroup = ev.cgroup;
            tw.tid = 0;
            tw.flags &= flag::REUSEADDR | flag::REUSEPORT | flag::V6ONLY;
        } else if let Some(last) = self.connections.get(&tuple) {
            tw.last_pid = last.pid;
            tw.last_comm = Some(last.comm.clone());
            tw.uid = last.uid;
            // A timewait socket has no `sk_cgrp_data`: the connection's
            // last owner's cgroup stands in (docs/trace-schema.md).
            tw.cgroup = last.cgroup;
        }
        let mut r = tw.record(ev.sock, RecordType::TwEnter, ev.ts_ns);
        r.new_state = Some(substate);
        out.push(r);
        self.insert_tw(ev.sock, tw);
        self.recent_tw.note(ev.cookie);
    }

    fn on_tw_cancel(&mut self, ev: &Event) {
        let cancel = Cancel {
            at_ns: ev.ts_ns,
            in_connect: ev.flags & flag::IN_CONNECT != 0,
            substate: TcpState::from(ev.new_state),
        };
        if let Some(tw) = self.tw.get_mut(&ev.sock) {
            tw.set_cancel(Some(cancel));
            self.detached.insert(tw.tuple(), ev.sock);
            return;
        }
        // A timewait socket created before tracing started: its exit is
        // still worth reporting, without a duration.
        let mut tw = Tw::of(ev, cancel.substate);
        tw.set_cancel(Some(cancel));
        self.detached.insert(tw.tuple(), ev.sock);
        self.insert_tw(ev.sock, tw);
    }
}

/// The task name an event carries, up to its NUL.
fn comm_of(ev: &Event) -> std::borrow::Cow<'_, str> {
    let end = ev
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ev.comm.len());
    String::from_utf8_lossy(&ev.comm[..end])
}

#[cfg(test)]
mod tests;
