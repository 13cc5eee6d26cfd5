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

use std::{collections::VecDeque, net::IpAddr, num::NonZeroUsize};

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

/// Timewait entries remembered for [`Tracker::fold_timewait_handover`].
pub const RECENT_TW: usize = 64;

/// Cookies of the timewait sockets that entered last (a timewait socket
/// keeps its connection's cookie, `inet_twsk_alloc()`), in a ring: the full
/// socket's CLOSE follows its `tw_enter` within a few events
/// (`tcp_time_wait()` arms the timer, then `tcp_done()`). The tracker
/// folds live events with it, `trace --replay` recorded records.
#[derive(Debug)]
pub struct RecentTw {
    cookies: [u64; RECENT_TW],
    next: usize,
}

impl Default for RecentTw {
    fn default() -> Self {
        Self {
            cookies: [0; RECENT_TW],
            next: 0,
        }
    }
}

impl RecentTw {
    /// A timewait socket entered with `cookie` (0: none known).
    pub fn note(&mut self, cookie: u64) {
        if cookie != 0 {
            self.cookies[self.next % RECENT_TW] = cookie;
            self.next = self.next.wrapping_add(1);
        }
    }

    /// True, once, for a full socket's change `old -> new` into CLOSE when
    /// a timewait socket entered with its `cookie` lately: that socket's
    /// handover, which the `tw_enter` reported.
    pub fn handover(&mut self, old: TcpState, new: TcpState, cookie: u64) -> bool {
        if new != TcpState::CLOSE || old == TcpState::LISTEN || cookie == 0 {
            return false;
        }
        match self.cookies.iter().position(|&c| c == cookie) {
            Some(i) => {
                self.cookies[i] = 0;
                true
            }
            None => false,
        }
    }

    /// Whether record `r`, as `trace` without `--states` reads records in
    /// order, is left out: the CLOSE of a full socket whose `tw_enter` came
    /// just before.
    pub fn fold(&mut self, r: &Record) -> bool {
        match r.kind {
            RecordType::TwEnter => {
                self.note(r.cookie.unwrap_or(0));
                false
            }
            RecordType::State => match (r.old_state, r.new_state) {
                (Some(old), Some(new)) => self.handover(old, new, r.cookie.unwrap_or(0)),
                _ => false,
            },
            _ => false,
        }
    }
}

/// How long after its last arm a timewait socket is forgotten when no
/// exit event came (lost to a full ring buffer): `TCP_TIMEWAIT_LEN` (60 s,
/// the longest a timewait timer is armed for in `tcp_time_wait()` but for an
/// RTO above it) plus 60 s for timer-wheel slack and such an RTO.
pub const TW_LIFETIME_NS: u64 = 120_000_000_000;

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

/// "No value" in a [`Tw`] time field. Event times are CLOCK_MONOTONIC
/// nanoseconds (`bpf_ktime_get_ns()`), which reach `u64::MAX` only after
/// 584 years of uptime.
const NEVER: u64 = u64::MAX;

/// "No uid" in [`Tw::uid`]: `(uid_t)-1`, `INVALID_UID`, which no task has
/// (`uid_valid()`); events carry it for an unknown owner.
const NO_UID: u32 = u32::MAX;

/// A timewait socket as followed: the fields of the event that met it that
/// its records carry, and its last owner. Records are built from it only
/// when one is emitted; up to [`MAX_TIME_WAIT`] of these are alive at once,
/// so optional fields use sentinels ([`NEVER`], [`NO_UID`]) rather than
/// `Option`s and the pending detach is packed: 120 bytes an entry.
#[derive(Debug)]
struct Tw {
    /// When the timewait socket took over, if tracing saw that ([`NEVER`]
    /// if not).
    entered_ns: u64,
    /// Its last timer arm (or the detach, for one met only then): it ages
    /// out [`TW_LIFETIME_NS`] after.
    armed_ns: u64,
    /// A detach waiting for its follow-up: its time ([`NEVER`]: none
    /// pending), the rest in `cancel_bits`.
    cancel_ns: u64,
    cookie: u64,
    ino: u64,
    /// cgroup v2 id: the connection's last owner's, else the event's (0:
    /// none).
    cgroup: u64,
    /// The connection's last owner; `last_pid` is meaningful only with it.
    last_comm: Option<Name>,
    laddr: [u8; 16],
    raddr: [u8; 16],
    /// [`NO_UID`]: unknown.
    uid: u32,
    netns: u32,
    tid: u32,
    bound_dev_if: i32,
    last_pid: u32,
    lport: u16,
    rport: u16,
    family: u8,
    proto: u8,
    flags: u8,
    /// `tw_substate`: TIME_WAIT, or FIN_WAIT2 while the peer's FIN is due.
    substate: TcpState,
    /// The pending detach's substate and whether it came inside a
    /// connect() ([`Cancel::pack`]); meaningful only with `cancel_ns`.
    cancel_bits: u16,
}

impl Tw {
    fn of(ev: &Event, substate: TcpState) -> Self {
        Self {
            entered_ns: NEVER,
            armed_ns: ev.ts_ns,
            cancel_ns: NEVER,
            cookie: ev.cookie,
            ino: ev.ino,
            cgroup: ev.cgroup,
            last_comm: None,
            laddr: ev.laddr,
            raddr: ev.raddr,
            uid: ev.uid,
            netns: ev.netns,
            tid: ev.tid,
            bound_dev_if: ev.bound_dev_if,
            last_pid: 0,
            lport: ev.lport,
            rport: ev.rport,
            family: ev.family,
            proto: ev.proto,
            flags: ev.flags,
            substate,
            cancel_bits: 0,
        }
    }

    /// The pending detach, if any.
    fn cancel(&self) -> Option<Cancel> {
        (self.cancel_ns != NEVER).then(|| Cancel::unpack(self.cancel_ns, self.cancel_bits))
    }

    fn set_cancel(&mut self, cancel: Option<Cancel>) {
        match cancel {
            Some(c) => (self.cancel_ns, self.cancel_bits) = c.pack(),
            None => (self.cancel_ns, self.cancel_bits) = (NEVER, 0),
        }
    }

    fn tuple(&self) -> Tuple {
        Tuple {
            netns: self.netns,
            laddr: addr(self.family, &self.laddr),
            lport: self.lport,
            raddr: addr(self.family, &self.raddr),
            rport: self.rport,
        }
    }

    /// Its record of `kind` at `ts_ns`: what decoding the event that met
    /// it gave, with its last owner.
    fn record(&self, sock: u64, kind: RecordType, ts_ns: u64) -> Record {
        let mut ev = Event::zeroed();
        ev.ts_ns = ts_ns;
        ev.sock = sock;
        ev.cookie = self.cookie;
        ev.ino = self.ino;
        ev.cgroup = self.cgroup;
        ev.family = self.family;
        ev.proto = self.proto;
        ev.flags = self.flags;
        ev.tid = self.tid;
        ev.netns = self.netns;
        ev.bound_dev_if = self.bound_dev_if;
        ev.lport = self.lport;
        ev.rport = self.rport;
        ev.laddr = self.laddr;
        ev.raddr = self.raddr;
        let mut r = Record::from_event(&ev, kind);
        r.uid = (self.uid != NO_UID).then_some(self.uid);
        if let Some(comm) = &self.last_comm {
            r.last_pid = Some(self.last_pid);
            r.last_comm = Some(comm.to_string());
        }
        r
    }
}

#[derive(Debug, Clone, Copy)]
struct Cancel {
    at_ns: u64,
    /// Inside a connect(): the slot is being reused.
    in_connect: bool,
    /// The substate when detached: the final one, if no re-arm follows.
    substate: TcpState,
}

impl Cancel {
    /// Set in the packed bits: the detach came inside a connect().
    const IN_CONNECT: u16 = 1 << 8;

    /// A detach with no follow-up: inside a connect() the slot went to
    /// the new connection, otherwise the timewait socket was killed.
    fn reason(self) -> ExitReason {
        if self.in_connect {
            ExitReason::Reused
        } else {
            ExitReason::Killed
        }
    }

    /// Its time, and its substate (low byte) with [`Cancel::IN_CONNECT`].
    fn pack(self) -> (u64, u16) {
        let bits =
            u16::from(self.substate.raw()) | if self.in_connect { Self::IN_CONNECT } else { 0 };
        (self.at_ns, bits)
    }

    fn unpack(at_ns: u64, bits: u16) -> Self {
        Self {
            at_ns,
            in_connect: bits & Self::IN_CONNECT != 0,
            substate: TcpState::from(bits.to_le_bytes()[0]),
        }
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
        let end = ev
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(ev.comm.len());
        let name = String::from_utf8_lossy(&ev.comm[..end]);
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
            self.remember_connection(Tuple::of(&r), &r, ev.uid);
        }
        out.push(r);
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
        // A new socket on the 4-tuple of a just-detached timewait socket:
        // the kernel reused the timewait slot (e.g. a SYN arriving in
        // TIME_WAIT, tcp_timewait_state_process() -> TCP_TW_SYN).
        if new != TcpState::CLOSE
            && let Some(&sock) = self.detached.get(&tuple)
            && let Some(mut tw) = self.remove_tw(sock)
            && let Some(c) = tw.cancel()
        {
            tw.substate = c.substate;
            out.push(exit_record(sock, &tw, c.at_ns, ExitReason::Reused));
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
        // The kernel reuses a freed timewait socket's memory: the same
        // address with another connection is a new socket, and the old one
        // is gone (its exit may still wait for its grace period).
        let tuple = Tuple::of_event(ev);
        if self.tw.get(&ev.sock).is_some_and(|tw| tw.tuple() != tuple)
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
        if let Some(last) = self.connections.get(&tuple) {
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

/// The tw_exit record for timewait socket `sock`; `old_state` is its
/// substate when it went.
fn exit_record(sock: u64, tw: &Tw, at_ns: u64, reason: ExitReason) -> Record {
    let mut r = tw.record(sock, RecordType::TwExit, at_ns);
    r.old_state = Some(tw.substate);
    r.reason = Some(reason);
    r.duration_ns = (tw.entered_ns != NEVER).then(|| at_ns.saturating_sub(tw.entered_ns));
    r
}

#[cfg(test)]
mod tests {
    use inspector_common::phase;

    use super::*;
    use crate::fixture::EventBuilder;

    /// A TCP event on 127.0.0.1:8080 <-> 127.0.0.1:40000.
    fn ev(kind: u8, sock: u64, ts_ns: u64) -> Event {
        EventBuilder::new(kind)
            .sock(sock)
            .at(ts_ns)
            .ports(8080, 40000)
            .build()
    }

    fn owned(e: Event, pid: u32, name: &[u8], flags: u8) -> Event {
        let name = std::str::from_utf8(name).unwrap_or_default();
        EventBuilder::from(e).owner(pid, name).flags(flags).build()
    }

    /// A timewait socket (id 0xdead) on the same tuple.
    fn tw(kind: u8, substate: TcpState, ts_ns: u64) -> Event {
        EventBuilder::time_wait(kind, substate)
            .sock(0xdead)
            .at(ts_ns)
            .ports(8080, 40000)
            .build()
    }

    /// A connection's end in TIME_WAIT as the probes see it: the timewait
    /// socket armed with the connection's cookie, then the full socket's
    /// `FIN_WAIT2 -> CLOSE` (tcp_time_wait(), then tcp_done()).
    fn handover(cookie: u64, close_cookie: u64) -> [Event; 2] {
        let arm = EventBuilder::from(tw(kind::TW_ARM, TcpState::TIME_WAIT, 10))
            .cookie(cookie)
            .build();
        let close = EventBuilder::state(TcpState::FIN_WAIT2, TcpState::CLOSE)
            .sock(7)
            .at(11)
            .ports(8080, 40000)
            .cookie(close_cookie)
            .owner(42, "server")
            .flags(flag::OWNER_KNOWN)
            .build();
        [arm, close]
    }

    #[test]
    fn a_connection_entering_time_wait_is_reported_once_by_default() {
        let mut t = Tracker::new();
        t.fold_timewait_handover(true);
        let out = apply(&mut t, &handover(99, 99));
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].kind, RecordType::TwEnter);
        // The full socket is gone: its address reused by a new socket
        // does not inherit its owner.
        assert!(t.owners.peek(&7).is_none());
        // A close of another connection (another cookie), or one without
        // a cookie, is reported.
        for other in [100, 0] {
            let mut t = Tracker::new();
            t.fold_timewait_handover(true);
            let out = apply(&mut t, &handover(99, other));
            assert_eq!(out.len(), 2, "cookie {other}: {out:#?}");
        }
        // With every state change asked for (--states), both.
        let mut t = Tracker::new();
        let out = apply(&mut t, &handover(99, 99));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].new_state, Some(TcpState::CLOSE));
    }

    fn apply(t: &mut Tracker, events: &[Event]) -> Vec<Record> {
        let mut out = Vec::new();
        for e in events {
            t.apply(e, &mut out);
        }
        out
    }

    #[test]
    fn softirq_state_changes_get_the_listener_owner_not_the_cpu_task() {
        let mut t = Tracker::new();
        let mut listen = owned(ev(kind::STATE, 1, 1), 42, b"server", flag::OWNER_KNOWN);
        listen.rport = 0;
        listen.old_state = TcpState::CLOSE.raw();
        listen.new_state = TcpState::LISTEN.raw();
        // A handshake completing in softirq: the CPU ran pid 7, the kernel
        // side found no owner for the new request socket.
        let mut syn = owned(ev(kind::STATE, 2, 2), 7, b"bystander", 0);
        syn.pid = 0;
        syn.comm = [0; 16];
        syn.old_state = TcpState::SYN_RECV.raw();
        syn.new_state = TcpState::ESTABLISHED.raw();
        let out = apply(&mut t, &[listen, syn]);
        assert_eq!(out[1].pid, Some(42));
        assert_eq!(out[1].comm.as_deref(), Some("server"));
        assert_eq!(out[1].owner, OwnerSource::Listener);
    }

    /// A listener on 8080 (sock 1, pid 42) and `n` connections the kernel
    /// completed in softirq that nobody accepted yet, as the probes see
    /// them: each child cloned from the listener (`LISTEN -> SYN_RECV`,
    /// inet_csk_clone_lock()), then established.
    fn unaccepted(n: u16) -> Vec<Event> {
        let mut listen = owned(ev(kind::STATE, 1, 1), 42, b"server", flag::OWNER_KNOWN);
        listen.rport = 0;
        listen.old_state = TcpState::CLOSE.raw();
        listen.new_state = TcpState::LISTEN.raw();
        let mut events = vec![listen];
        for i in 0..n {
            for (from, to) in [
                (TcpState::LISTEN, TcpState::SYN_RECV),
                (TcpState::SYN_RECV, TcpState::ESTABLISHED),
            ] {
                let mut e = owned(ev(kind::STATE, 100 + u64::from(i), 2), 7, b"bystander", 0);
                (e.pid, e.comm, e.rport) = (0, [0; 16], 40000 + i);
                (e.old_state, e.new_state) = (from.raw(), to.raw());
                events.push(e);
            }
        }
        events
    }

    #[test]
    fn every_unaccepted_connection_keeps_the_listener_owner() {
        let mut t = Tracker::new();
        let out = apply(&mut t, &unaccepted(3));
        assert_eq!(out.len(), 7);
        for r in &out[1..] {
            assert_eq!((r.pid, r.owner), (Some(42), OwnerSource::Listener), "{r:?}");
        }
        // The listener closing ends its attribution, not a child.
        let mut close = ev(kind::STATE, 1, 3);
        (close.rport, close.old_state, close.new_state) =
            (0, TcpState::LISTEN.raw(), TcpState::CLOSE.raw());
        let mut late = unaccepted(1).remove(1);
        late.sock = 999;
        let out = apply(&mut t, &[close, late]);
        assert_eq!(out[1].pid, None);
    }

    #[test]
    fn a_reuseport_listener_closing_leaves_the_others_owner() {
        let mut t = Tracker::new();
        let mut events = unaccepted(0);
        let mut second = owned(ev(kind::STATE, 2, 1), 43, b"server2", flag::OWNER_KNOWN);
        (second.rport, second.old_state, second.new_state) =
            (0, TcpState::CLOSE.raw(), TcpState::LISTEN.raw());
        let mut close = ev(kind::STATE, 2, 3);
        (close.rport, close.old_state, close.new_state) =
            (0, TcpState::LISTEN.raw(), TcpState::CLOSE.raw());
        events.extend([second, close]);
        events.extend(unaccepted(1).into_iter().skip(1));
        let out = apply(&mut t, &events);
        assert_eq!(out[3].pid, Some(42), "{:?}", out[3]);
    }

    /// The unkeyed fold the maps used to hash with, to build keys an
    /// attacker could have prepared for it.
    #[derive(Default)]
    struct OldFold(u64);

    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    impl std::hash::Hasher for OldFold {
        fn write(&mut self, bytes: &[u8]) {
            for c in bytes.chunks(8) {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                self.write_u64(u64::from_le_bytes(w));
            }
        }
        fn write_u64(&mut self, w: u64) {
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        fn write_u8(&mut self, i: u8) {
            self.write_u64(u64::from(i));
        }
        fn write_u16(&mut self, i: u16) {
            self.write_u64(u64::from(i));
        }
        fn write_u32(&mut self, i: u32) {
            self.write_u64(u64::from(i));
        }
        fn write_usize(&mut self, i: usize) {
            self.write_u64(i as u64);
        }
        fn finish(&self) -> u64 {
            self.0 ^ (self.0 >> 29)
        }
    }

    fn old_hash(t: &Tuple) -> u64 {
        std::hash::BuildHasher::hash_one(&std::hash::BuildHasherDefault::<OldFold>::default(), t)
    }

    /// `n` remote (IPv6 address, port) pairs whose tuples all share one
    /// hash under the old fold: the address's last 8 bytes undo what the
    /// first 8 and the port put in.
    fn colliding(n: u32) -> Vec<Tuple> {
        let k_inv = (0..6).fold(K, |inv: u64, _| {
            inv.wrapping_mul(2u64.wrapping_sub(K.wrapping_mul(inv)))
        });
        let tuple = |hi: u64, lo: u64, rport: u16| Tuple {
            netns: 4026531840,
            laddr: "2001:db8::1".parse().expect("address"),
            lport: 443,
            raddr: IpAddr::V6(std::net::Ipv6Addr::from(
                (u128::from(hi.swap_bytes()) << 64) | u128::from(lo.swap_bytes()),
            )),
            rport,
        };
        // Any state before the port fold works; this one is all ones.
        let target = u64::MAX;
        (0..n)
            .map(|i| {
                let (hi, rport) = (
                    0x2001_0db8_0000_0000 | u64::from(i),
                    1024 + (i % 60000) as u16,
                );
                // Walk the final hash back to the state before the last
                // address word (finish, then the port fold, then that word).
                let y = old_hash(&tuple(hi, 0, rport));
                let x = y ^ (y >> 29) ^ (y >> 58);
                let before_port = (x.wrapping_mul(k_inv) ^ u64::from(rport)).rotate_right(5);
                let rotated = before_port.wrapping_mul(k_inv);
                // Choose the word so the state before the port is the one
                // that, folded with this port, gives a common value.
                let want = (target ^ u64::from(rport)).rotate_right(5);
                tuple(hi, rotated ^ want.wrapping_mul(k_inv), rport)
            })
            .collect()
    }

    #[test]
    fn tuples_colliding_under_the_old_hash_spread_under_the_keyed_one() {
        let keys = colliding(20_000);
        let old: std::collections::HashSet<u64> = keys.iter().map(old_hash).collect();
        assert_eq!(old.len(), 1, "the keys are a hash flood for the old fold");
        // Through the tracker: every connection is remembered and its
        // TIME_WAIT finds its owner.
        let mut t = Tracker::new();
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (IpAddr::V6(l), IpAddr::V6(r)) = (k.laddr, k.raddr) else {
                unreachable!("built as IPv6")
            };
            let mut e = EventBuilder::new(kind::CONNECT)
                .ports(k.lport, k.rport)
                .netns(k.netns)
                .sock(i as u64)
                .owner(1000 + i as u32, "client")
                .flags(flag::SYSCALL)
                .build();
            (e.family, e.laddr, e.raddr) = (inspector_common::AF_INET6, l.octets(), r.octets());
            t.apply(&e, &mut out);
            out.clear();
        }
        assert_eq!(t.connections.len(), keys.len());
        for k in &keys {
            assert!(t.connections.contains(k));
        }
        // Under the tracker's keyed hash they fill a 2^16-bucket table
        // like random keys do (about 17,200 distinct buckets expected).
        let buckets: std::collections::HashSet<u64> = keys
            .iter()
            .map(|k| std::hash::BuildHasher::hash_one(&t.keyed, k) & 0xffff)
            .collect();
        assert!(buckets.len() > 15_000, "{} buckets", buckets.len());
    }

    #[test]
    fn a_socket_keeps_its_owner_after_its_syscall() {
        let mut t = Tracker::new();
        let mut bind = owned(ev(kind::BIND, 5, 1), 42, b"server", flag::SYSCALL);
        bind.phase = phase::BIND;
        let mut later = ev(kind::STATE, 5, 2);
        later.old_state = TcpState::ESTABLISHED.raw();
        later.new_state = TcpState::FIN_WAIT2.raw();
        let out = apply(&mut t, &[bind, later]);
        assert_eq!(
            (out[1].pid, out[1].owner),
            (Some(42), OwnerSource::Remembered)
        );
    }

    #[test]
    fn time_wait_keeps_the_last_owner_and_expires() {
        let mut t = Tracker::new();
        let connect = owned(ev(kind::CONNECT, 9, 1), 42, b"client", flag::SYSCALL);
        let out = apply(
            &mut t,
            &[
                connect,
                tw(kind::TW_ARM, TcpState::TIME_WAIT, 10),
                tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 60_000_000_010),
                tw(kind::TW_EXPIRE, TcpState::TIME_WAIT, 60_000_000_011),
            ],
        );
        let kinds: Vec<_> = out.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [RecordType::Connect, RecordType::TwEnter, RecordType::TwExit]
        );
        let (enter, exit) = (&out[1], &out[2]);
        assert_eq!((enter.pid, enter.last_pid), (None, Some(42)));
        assert_eq!(enter.new_state, Some(TcpState::TIME_WAIT));
        assert_eq!(exit.reason, Some(ExitReason::Expired));
        assert_eq!(exit.duration_ns, Some(60_000_000_001));
        assert_eq!(t.time_wait_count(), 0);
    }

    #[test]
    fn a_detach_alone_is_a_kill_or_inside_connect_a_reuse() {
        for (flags, reason) in [
            (0, ExitReason::Killed),
            (flag::IN_CONNECT, ExitReason::Reused),
        ] {
            let mut t = Tracker::new();
            let mut cancel = tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 1_000);
            cancel.flags = flags;
            let mut out = apply(&mut t, &[tw(kind::TW_ARM, TcpState::TIME_WAIT, 10), cancel]);
            assert_eq!(out.len(), 1, "the exit waits for a possible follow-up");
            t.flush(1_000 + CANCEL_GRACE_NS - 1, &mut out);
            assert_eq!(out.len(), 1);
            t.flush(1_000 + CANCEL_GRACE_NS, &mut out);
            assert_eq!(out[1].reason, Some(reason));
            assert_eq!(out[1].ts_ns, 1_000, "the exit time is the detach");
        }
    }

    #[test]
    fn a_rearm_is_not_an_exit_and_reports_the_substate_move() {
        let mut t = Tracker::new();
        let out = apply(
            &mut t,
            &[
                tw(kind::TW_ARM, TcpState::FIN_WAIT2, 10),
                tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 20),
                tw(kind::TW_ARM, TcpState::TIME_WAIT, 21),
            ],
        );
        let mut out = out;
        // Long past the detach's grace, well within the socket's lifetime.
        t.flush(21 + 10 * CANCEL_GRACE_NS, &mut out);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(out[0].new_state, Some(TcpState::FIN_WAIT2));
        assert_eq!(out[1].kind, RecordType::State);
        assert_eq!(
            (out[1].old_state, out[1].new_state),
            (Some(TcpState::FIN_WAIT2), Some(TcpState::TIME_WAIT))
        );
        assert_eq!(t.time_wait_count(), 1);
    }

    #[test]
    fn a_timewait_socket_whose_exit_was_lost_ages_out_counted() {
        let mut t = Tracker::new();
        let mut out = apply(&mut t, &[tw(kind::TW_ARM, TcpState::TIME_WAIT, 10)]);
        t.flush(10 + TW_LIFETIME_NS - 1, &mut out);
        assert_eq!(t.time_wait_count(), 1);
        t.flush(10 + TW_LIFETIME_NS, &mut out);
        assert_eq!(t.time_wait_count(), 0);
        assert_eq!(out.len(), 1, "no exit is made up: {out:#?}");
        assert_eq!(t.stats().tw_aged_out, 1);
        // A re-arm restarts the clock.
        let mut out = apply(
            &mut t,
            &[
                tw(kind::TW_ARM, TcpState::FIN_WAIT2, 0),
                tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 50),
                tw(kind::TW_ARM, TcpState::TIME_WAIT, 51),
            ],
        );
        t.flush(TW_LIFETIME_NS + 1, &mut out);
        assert_eq!(t.time_wait_count(), 1);
        t.flush(51 + TW_LIFETIME_NS, &mut out);
        assert_eq!((t.time_wait_count(), t.stats().tw_aged_out), (0, 2));
    }

    #[test]
    fn memory_is_bounded_by_evicting_the_oldest_counted() {
        let mut t = Tracker::new();
        let mut out = Vec::new();
        let n = MAX_TIME_WAIT as u64 + 10;
        for i in 0..n {
            let mut e = tw(kind::TW_ARM, TcpState::TIME_WAIT, i);
            e.sock = i;
            e.rport = (i % 60_000) as u16;
            e.lport = (i / 60_000) as u16;
            t.apply(&e, &mut out);
            out.clear();
        }
        assert_eq!(t.time_wait_count(), MAX_TIME_WAIT);
        assert_eq!(t.stats().tw_evicted, 10);
        assert!(!t.tw.contains_key(&9) && t.tw.contains_key(&10));
        assert!(t.tw_age.len() <= 2 * MAX_TIME_WAIT + 1024);
        // Connections: the least recently used go, one by one.
        let cap = MAX_REMEMBERED.get() as u64;
        for i in 0..cap + 5 {
            let mut c = owned(ev(kind::CONNECT, i, i), 42, b"client", flag::SYSCALL);
            c.rport = (i % 60_000) as u16;
            c.lport = (i / 60_000) as u16;
            t.apply(&c, &mut out);
            out.clear();
        }
        assert_eq!(t.connections.len() as u64, cap);
        assert_eq!(t.stats().connections_evicted, 5);
        assert_eq!(t.owners.len() as u64, cap);
        assert_eq!(t.stats().owners_evicted, 5);
    }

    /// Up to [`MAX_TIME_WAIT`] of these are alive at once: their size is
    /// part of the memory bound (README, "Memory").
    #[test]
    fn timewait_entries_stay_small() {
        assert!(std::mem::size_of::<Tw>() <= 120);
        assert!(std::mem::size_of::<Held>() <= 24);
    }

    #[test]
    fn a_pending_detach_packs_and_unpacks() {
        for in_connect in [false, true] {
            for raw in [
                0,
                TcpState::TIME_WAIT.raw(),
                TcpState::FIN_WAIT2.raw(),
                u8::MAX,
            ] {
                let c = Cancel {
                    at_ns: 5,
                    in_connect,
                    substate: TcpState::from(raw),
                };
                let mut tw = Tw::of(
                    &tw(kind::TW_ARM, TcpState::TIME_WAIT, 1),
                    TcpState::TIME_WAIT,
                );
                assert!(tw.cancel().is_none());
                tw.set_cancel(Some(c));
                let back = tw.cancel().expect("pending");
                assert_eq!(
                    (back.at_ns, back.in_connect, back.substate),
                    (5, in_connect, c.substate)
                );
                tw.set_cancel(None);
                assert!(tw.cancel().is_none());
            }
        }
    }

    #[test]
    fn a_reused_timewait_address_with_another_tuple_is_a_new_socket() {
        let mut t = Tracker::new();
        let mut other = tw(kind::TW_ARM, TcpState::TIME_WAIT, 50);
        other.rport = 40001;
        let out = apply(
            &mut t,
            &[
                tw(kind::TW_ARM, TcpState::TIME_WAIT, 10),
                tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 20),
                other,
            ],
        );
        let kinds: Vec<_> = out.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [RecordType::TwEnter, RecordType::TwExit, RecordType::TwEnter]
        );
        assert_eq!(
            (out[1].reason, out[1].rport),
            (Some(ExitReason::Killed), 40000)
        );
        assert_eq!(out[2].rport, 40001);
    }

    #[test]
    fn a_new_connection_on_the_tuple_of_a_detached_timewait_socket_is_a_reuse() {
        let mut t = Tracker::new();
        let mut syn = ev(kind::STATE, 77, 30);
        syn.old_state = TcpState::LISTEN.raw();
        syn.new_state = TcpState::SYN_RECV.raw();
        let out = apply(
            &mut t,
            &[
                tw(kind::TW_ARM, TcpState::TIME_WAIT, 10),
                tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 29),
                syn,
            ],
        );
        assert_eq!(out[1].kind, RecordType::TwExit);
        assert_eq!(out[1].reason, Some(ExitReason::Reused));
    }
}
