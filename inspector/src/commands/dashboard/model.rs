//! What the dashboard shows, kept from the record stream: recent decisions,
//! live sockets per port, TIME_WAIT, and SO_REUSEPORT groups. No terminal
//! here; memory is bounded however many records arrive: past
//! [`MAX_SOCKETS`] the oldest sockets (never a live listener) and TIME_WAIT
//! entries go, one at a time and counted in [`Model::evicted`]; a TIME_WAIT
//! entry whose exit never came ages out (counted in [`Model::tw_aged_out`]);
//! a closed socket leaves its SO_REUSEPORT group, a member with no delivery
//! for [`MEMBER_IDLE_NS`] too (UDP sockets close without a state event),
//! and groups and members past [`MAX_GROUPS`] and [`MAX_MEMBERS`] go, the
//! longest idle first (counted in [`Model::members_evicted`]).

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    num::NonZeroU64,
};

use crate::model::ephemeral::Ephemeral;
use crate::{
    kernel::{Phase, Proto, TcpState},
    model::record::{Name, Names, Record, RecordType},
    model::tracker::TW_LIFETIME_NS,
    util::dense::DenseMap,
    util::fasthash::FastMap,
};

/// Recent bind/listen/connect decisions kept for the list.
pub const RECENT: usize = 2000;
/// Seconds of history in the TIME_WAIT sparklines.
pub const HISTORY_SECS: usize = 60;
/// Live sockets, and TIME_WAIT sockets, tracked at most; beyond it the
/// oldest are forgotten (live listeners never).
pub const MAX_SOCKETS: usize = 100_000;
/// TCP_TIMEWAIT_LEN: how long a timewait socket lives.
pub const TIME_WAIT_NS: u64 = 60_000_000_000;
/// SO_REUSEPORT groups shown at most; past it the longest idle goes.
pub const MAX_GROUPS: usize = 1024;
/// Members of one group kept at most; past it the longest idle goes.
pub const MAX_MEMBERS: usize = 256;
/// A member with no delivery for this long is forgotten: a UDP socket
/// leaves its group (`reuseport_detach_sock()` on close) without any event
/// the probes see.
pub const MEMBER_IDLE_NS: u64 = 600_000_000_000;

/// A process as the per-socket tables keep it: the name is shared
/// ([`Names`]).
pub type SharedOwner = (u32, Name);

/// A live socket's state as the dashboard names it, in one byte (a
/// `&'static str` is 16, in each of up to [`MAX_SOCKETS`] entries): a TCP
/// state by its number (include/net/tcp_states.h), or one of the names the
/// dashboard gives sockets the kernel keeps in a state of another meaning
/// (a UDP socket is TCP_CLOSE when only bound, TCP_ESTABLISHED when
/// connected; a TCP one only bound is TCP_CLOSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockState(u8);

impl SockState {
    /// Above every TCP state number (the kernel's end at
    /// TCP_BOUND_INACTIVE, 13), so that no TCP state has these.
    pub const BOUND: Self = Self(0xfe);
    pub const CONNECTED: Self = Self(0xfd);
    /// A TCP state this build has no name for.
    pub const UNKNOWN: Self = Self(0xff);
    pub const LISTEN: Self = Self(TcpState::LISTEN.raw());
    pub const SYN_SENT: Self = Self(TcpState::SYN_SENT.raw());
    pub const ESTABLISHED: Self = Self(TcpState::ESTABLISHED.raw());

    /// A TCP state; one without a name is [`SockState::UNKNOWN`].
    pub fn tcp(state: TcpState) -> Self {
        match state.name() {
            Some(_) => Self(state.raw()),
            None => Self::UNKNOWN,
        }
    }

    /// The state named `name` ([`SockState::name`]'s inverse); a name it
    /// does not know is [`SockState::UNKNOWN`].
    pub fn of(name: &str) -> Self {
        match name {
            "BOUND" => Self::BOUND,
            "CONNECTED" => Self::CONNECTED,
            _ => TcpState::parse(name).map_or(Self::UNKNOWN, Self::tcp),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::BOUND => "BOUND",
            Self::CONNECTED => "CONNECTED",
            Self(n) => TcpState::from(n).name().unwrap_or("?"),
        }
    }
}

/// A port as the kernel's tables key it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub proto: Option<Proto>,
    pub port: u16,
    pub netns: u32,
}

#[derive(Debug, Clone)]
pub struct LiveSock {
    pub key: PortKey,
    pub state: SockState,
    pub owner: Option<SharedOwner>,
    pub since_ns: u64,
    /// Local address and options, for the detail view's holders table.
    pub addr: Option<SockAddr>,
    /// The socket's cookie, when a record or the kernel's table gave it:
    /// what matches it against a kernel snapshot. Never 0: the kernel's
    /// cookies count from 1 (sock_gen_cookie()), and a record's 0 is none.
    pub cookie: Option<NonZeroU64>,
    /// Found in the kernel's table at start, not seen being made.
    pub pre: bool,
}

/// A socket's local address and the options that decide conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
}

impl SockAddr {
    fn of(r: &Record) -> Self {
        Self {
            ip: r.laddr,
            port: r.lport,
            reuseaddr: r.reuseaddr,
            reuseport: r.reuseport,
            v6only: r.v6only,
        }
    }
}

/// One socket on a port, live or in TIME_WAIT, as the detail view lists it.
#[derive(Debug, Clone)]
pub struct Holder {
    pub state: &'static str,
    pub addr: Option<SockAddr>,
    pub netns: u32,
    /// The owner of a live socket, or the last owner of a TIME_WAIT one.
    pub owner: Option<(u32, String)>,
    pub time_wait: bool,
    /// Time left before a TIME_WAIT socket expires.
    pub left_ns: Option<u64>,
    /// Found in the kernel's table at start.
    pub pre: bool,
}

#[derive(Debug, Clone)]
pub struct TimeWait {
    pub key: PortKey,
    pub entered_ns: u64,
    pub last_owner: Option<SharedOwner>,
    /// Its 4-tuple's local side and the flags copied from the closed socket.
    pub addr: Option<SockAddr>,
    /// Found in the kernel's table at start, not seen entering.
    pub pre: bool,
}

/// One member of a SO_REUSEPORT group.
#[derive(Debug, Clone)]
pub struct Member {
    pub sock_id: String,
    pub sock: u64,
    pub ino: Option<u64>,
    pub owner: Option<(u32, String)>,
    /// Its container (or cgroup) in short ([`Record::cgroup_tag`]).
    pub cgroup: Option<String>,
    pub deliveries: u64,
    /// Deliveries per second (kernel seconds), oldest first, the last
    /// [`HISTORY_SECS`] seconds.
    pub per_sec: VecDeque<(u64, u64)>,
    /// Its socket closed: the member stays, marked, as the record of what
    /// the group got, until it has been idle for [`MEMBER_IDLE_NS`].
    pub closed: bool,
}

impl Member {
    /// The kernel second of its last delivery.
    fn last_sec(&self) -> u64 {
        self.per_sec.back().map_or(0, |&(s, _)| s)
    }

    fn count_second(&mut self, ts_ns: u64) {
        let sec = ts_ns / 1_000_000_000;
        match self.per_sec.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.per_sec.push_back((sec, 1)),
        }
        while self
            .per_sec
            .front()
            .is_some_and(|(s, _)| sec.saturating_sub(*s) >= HISTORY_SECS as u64)
        {
            self.per_sec.pop_front();
        }
    }
}

/// A SO_REUSEPORT group, named by its address and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub proto: Option<Proto>,
    pub addr: IpAddr,
    pub port: u16,
    pub netns: u32,
}

/// Per-port aggregates, kept up to date as sockets come and go, so a frame
/// never walks every socket.
#[derive(Debug, Default, Clone)]
struct PortAgg {
    states: BTreeMap<&'static str, u64>,
    owners: Vec<(u32, String)>,
    /// TIME_WAIT entry times -> how many entered then.
    tw: BTreeMap<u64, u32>,
    tw_count: u64,
    last_owner: Option<(u32, String)>,
    /// Sockets here found in the kernel's table at start.
    pre: u32,
}

impl PortAgg {
    fn is_empty(&self) -> bool {
        self.states.is_empty() && self.tw_count == 0
    }
}

#[derive(Debug, Default)]
pub struct Model {
    ports: FastMap<PortKey, PortAgg>,
    pub decisions: VecDeque<Record>,
    pub failures: u64,
    pub sockets: DenseMap<u64, LiveSock>,
    pub time_wait: DenseMap<u64, TimeWait>,
    pub groups: BTreeMap<GroupKey, Vec<Member>>,
    /// The group each reuseport member is in, to drop it when it closes.
    member_of: FastMap<u64, GroupKey>,
    /// Sockets in the order they were first tracked, oldest first (entries
    /// of sockets gone since are skipped when met).
    sock_age: VecDeque<u64>,
    /// (entry time, socket) of TIME_WAIT sockets, oldest first.
    tw_age: VecDeque<(u64, u64)>,
    /// Sockets and TIME_WAIT entries forgotten to stay within
    /// [`MAX_SOCKETS`].
    pub evicted: u64,
    /// TIME_WAIT entries forgotten [`TW_LIFETIME_NS`] after entry with no
    /// exit seen (the exit event was lost).
    pub tw_aged_out: u64,
    /// SO_REUSEPORT members forgotten: idle for [`MEMBER_IDLE_NS`], or
    /// past [`MAX_MEMBERS`] or [`MAX_GROUPS`].
    pub members_evicted: u64,
    /// Process names shared by the socket tables.
    names: Names,
    /// TIME_WAIT entries and exits per second, newest last.
    pub tw_entries: VecDeque<u64>,
    pub tw_exits: VecDeque<u64>,
    /// The second the last bucket counts.
    bucket_sec: u64,
    /// Records applied, and at the last rate sample.
    pub records: u64,
    rate_mark: (u64, u64),
    pub rate: f64,
    /// The dashboard's clock for ages and time left (CLOCK_MONOTONIC, the
    /// kernel's record clock): the newest record, or the frame's clock
    /// ([`Model::set_clock`]) when later.
    pub now_ns: u64,
    /// Sockets seeded from the kernel's table, by cookie: a record naming
    /// the cookie moves the entry to the record's socket key.
    pre_cookies: FastMap<u64, u64>,
    /// Sockets dropped because the kernel's table no longer had them (no
    /// close event exists for them).
    pub reconciled: u64,
    /// Local ports in use per destination (pane 5).
    pub ephemeral: Ephemeral,
}

/// A socket of the kernel's table at start, to seed the model with.
#[derive(Debug, Clone)]
pub struct SeedSock {
    pub proto: Proto,
    pub netns: u32,
    pub addr: SockAddr,
    pub cookie: u64,
    pub owner: Option<(u32, String)>,
    /// `LISTEN`, `BOUND`, `CONNECTED` or `TIME_WAIT` (a name
    /// [`SockState::of`] knows; another shows as `?`).
    pub state: &'static str,
    /// Time left on a TIME_WAIT socket's timer.
    pub tw_left_ns: Option<u64>,
}

/// The open sockets of one namespace, from a kernel snapshot taken at
/// `taken_ns` (CLOCK_MONOTONIC, before the walk started).
#[derive(Debug, Clone, Default)]
pub struct KernelFiles {
    pub netns: u32,
    pub taken_ns: u64,
    pub cookies: std::collections::BTreeSet<u64>,
    /// (protocol, local port) of every open socket.
    pub ports: std::collections::BTreeSet<(Proto, u16)>,
}

/// A socket whose close sends no event: see [`Model::silent_namespaces`].
fn is_silent(s: &LiveSock) -> bool {
    s.pre || s.key.proto != Some(Proto::Tcp) || s.state == SockState::BOUND
}

fn owner(r: &Record) -> Option<(u32, String)> {
    r.pid.map(|p| (p, r.comm.clone().unwrap_or_default()))
}

fn unshared(o: &SharedOwner) -> (u32, String) {
    (o.0, o.1.to_string())
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets what was shown; the namespaces' port ranges stay (they are
    /// read rarely).
    pub fn clear(&mut self) {
        let ranges = self.ephemeral.take_ranges();
        *self = Self::default();
        self.ephemeral.put_ranges(ranges);
    }

    /// Advances the clock ages and time left are measured against, and
    /// ages out what is past its lifetime.
    pub fn set_clock(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
            self.bound();
            self.ephemeral.bound(now_ns);
        }
    }

    /// Sockets that may close without any event: UDP ones, TCP ones only
    /// bound (the kernel changes no state when they close, __tcp_close()),
    /// and those seeded from the table. Per namespace, for
    /// [`Model::reconcile`].
    pub fn silent_namespaces(&self) -> std::collections::BTreeSet<u32> {
        self.sockets
            .values()
            .filter(|s| is_silent(s))
            .map(|s| s.key.netns)
            .collect()
    }

    /// Drops the silent sockets of `files.netns` the kernel no longer has.
    /// Only sockets tracked before the snapshot started are judged: a
    /// socket made during the walk may be missing from it.
    pub fn reconcile(&mut self, files: &KernelFiles) {
        let gone: Vec<u64> = self
            .sockets
            .iter()
            .filter(|(_, s)| {
                s.key.netns == files.netns && is_silent(s) && s.since_ns < files.taken_ns
            })
            .filter(|(_, s)| match (s.cookie, s.key.proto) {
                (Some(c), _) => !files.cookies.contains(&c.get()),
                (None, Some(p)) => !files.ports.contains(&(p, s.key.port)),
                (None, None) => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for sock in gone {
            self.untrack(sock);
            self.leave_group(sock);
            self.reconciled += 1;
        }
    }

    /// Seeds the model with sockets that existed before the dashboard
    /// started, marked `pre`.
    pub fn seed(&mut self, socks: &[SeedSock]) {
        for s in socks {
            let key = PortKey {
                proto: Some(s.proto),
                port: s.addr.port,
                netns: s.netns,
            };
            // Cookies count up from 1 and kernel addresses are far above
            // them: the cookie is a key no live socket has.
            let sock = s.cookie;
            self.pre_cookies.insert(s.cookie, sock);
            if let Some(left) = s.tw_left_ns {
                // As if it entered TCP_TIMEWAIT_LEN before it expires.
                let entered = self
                    .now_ns
                    .saturating_add(left)
                    .saturating_sub(TIME_WAIT_NS);
                self.tw_insert(sock, key, entered, None, Some(s.addr), true);
                continue;
            }
            let state = SockState::of(s.state);
            *self
                .ports
                .entry(key)
                .or_default()
                .states
                .entry(state.name())
                .or_default() += 1;
            if let Some(o) = &s.owner
                && let Some(agg) = self.ports.get_mut(&key)
                && agg.owners.len() < 4
                && !agg.owners.iter().any(|(p, _)| *p == o.0)
            {
                agg.owners.push(o.clone());
            }
            if let Some(agg) = self.ports.get_mut(&key) {
                agg.pre += 1;
            }
            self.sock_age.push_back(sock);
            self.sockets.insert(
                sock,
                LiveSock {
                    key,
                    state,
                    owner: s.owner.as_ref().map(|(p, c)| (*p, self.names.get(c))),
                    since_ns: self.now_ns,
                    addr: Some(s.addr),
                    cookie: NonZeroU64::new(s.cookie),
                    pre: true,
                },
            );
        }
    }

    /// A record naming a seeded socket's cookie: the entry moves to the
    /// record's socket key, so the record's own changes reach it.
    fn rekey(&mut self, r: &Record) {
        let Some(cookie) = r.cookie else { return };
        let Some(old) = self.pre_cookies.remove(&cookie) else {
            return;
        };
        if old == r.sock {
            return;
        }
        if let Some(s) = self.sockets.remove(&old) {
            self.sock_age.push_back(r.sock);
            self.sockets.insert(r.sock, s);
        }
        if let Some(t) = self.time_wait.remove(&old) {
            self.tw_age.push_back((t.entered_ns, r.sock));
            self.time_wait.insert(r.sock, t);
        }
    }

    fn tw_insert(
        &mut self,
        sock: u64,
        key: PortKey,
        entered_ns: u64,
        last_owner: Option<SharedOwner>,
        addr: Option<SockAddr>,
        pre: bool,
    ) {
        let agg = self.ports.entry(key).or_default();
        agg.pre += u32::from(pre);
        *agg.tw.entry(entered_ns).or_default() += 1;
        agg.tw_count += 1;
        if let Some(o) = &last_owner
            && agg
                .last_owner
                .as_ref()
                .is_none_or(|l| l.0 != o.0 || *l.1 != *o.1)
        {
            agg.last_owner = Some(unshared(o));
        }
        self.time_wait.insert(
            sock,
            TimeWait {
                key,
                entered_ns,
                last_owner,
                addr,
                pre,
            },
        );
        self.tw_age.push_back((entered_ns, sock));
    }

    /// A timewait socket's timer restarted at `at_ns`.
    fn tw_rearm(&mut self, sock: u64, at_ns: u64) {
        let Some(t) = self.time_wait.get(&sock) else {
            return;
        };
        if t.entered_ns >= at_ns {
            return;
        }
        let (key, owner, addr, pre) = (t.key, t.last_owner.clone(), t.addr, t.pre);
        self.tw_gone(sock);
        self.tw_insert(sock, key, at_ns, owner, addr, pre);
    }

    pub fn apply(&mut self, r: &Record) {
        if !self.pre_cookies.is_empty() {
            self.rekey(r);
        }
        self.records += 1;
        self.now_ns = self.now_ns.max(r.ts_ns);
        self.roll(r.ts_ns);
        self.ephemeral.apply(r);
        let key = PortKey {
            proto: r.proto,
            port: r.lport,
            netns: r.netns,
        };
        match r.kind {
            RecordType::Bind | RecordType::Connect => {
                if r.is_failure() {
                    self.failures += 1;
                }
                if self.decisions.len() == RECENT {
                    self.decisions.pop_front();
                }
                self.decisions.push_back(r.clone());
                if r.errno.is_none() && r.lport != 0 {
                    let state = match (r.proto, r.phase) {
                        (Some(Proto::Tcp), Some(Phase::Listen)) => SockState::LISTEN,
                        (Some(Proto::Tcp), Some(Phase::Connect)) => SockState::SYN_SENT,
                        (Some(Proto::Udp), Some(Phase::Connect)) => SockState::CONNECTED,
                        _ => SockState::BOUND,
                    };
                    self.track(r, key, state);
                }
            }
            RecordType::Accept => self.track(r, key, SockState::ESTABLISHED),
            RecordType::State if self.time_wait.contains_key(&r.sock) => {
                // A timewait socket re-armed with another substate
                // (`FIN_WAIT2 -> TIME_WAIT`, tcp_timewait_state_process()):
                // its timer restarts, TCP_TIMEWAIT_LEN from now.
                self.tw_rearm(r.sock, r.ts_ns);
            }
            RecordType::State => {
                if r.new_state == Some(TcpState::CLOSE) {
                    self.untrack(r.sock);
                    self.leave_group(r.sock);
                } else if r.lport != 0 {
                    let state = r.new_state.map_or(SockState::UNKNOWN, SockState::tcp);
                    self.track(r, key, state);
                }
            }
            RecordType::TwEnter => {
                self.untrack(r.sock);
                self.tw_gone(r.sock);
                let last = r.last_pid.map(|p| {
                    let name = r.last_comm.as_deref().unwrap_or_default();
                    (p, self.names.get(name))
                });
                self.tw_insert(r.sock, key, r.ts_ns, last, Some(SockAddr::of(r)), false);
                if let Some(b) = self.tw_entries.back_mut() {
                    *b += 1;
                }
            }
            RecordType::TwExit => {
                self.tw_gone(r.sock);
                if let Some(b) = self.tw_exits.back_mut() {
                    *b += 1;
                }
            }
            RecordType::Reuseport => self.deliver(r),
        }
        self.bound();
    }

    /// Ages out TIME_WAIT entries past their lifetime and evicts the
    /// oldest entries past [`MAX_SOCKETS`].
    fn bound(&mut self) {
        while let Some(&(at, sock)) = self.tw_age.front() {
            let live = self
                .time_wait
                .get(&sock)
                .is_some_and(|t| t.entered_ns == at);
            let aged = self.now_ns.saturating_sub(at) >= TW_LIFETIME_NS;
            if live && !aged && self.time_wait.len() <= MAX_SOCKETS {
                break;
            }
            self.tw_age.pop_front();
            if live {
                self.tw_gone(sock);
                if aged {
                    self.tw_aged_out += 1;
                } else {
                    self.evicted += 1;
                }
            }
        }
        if self.tw_age.len() > crate::model::tracker::stale_bound(self.time_wait.len()) {
            let tw = &self.time_wait;
            self.tw_age
                .retain(|(at, s)| tw.get(s).is_some_and(|t| t.entered_ns == *at));
        }
        // Live listeners are kept: they send no event until they close, so
        // a forgotten one would never come back.
        let mut budget = self.sock_age.len();
        while self.sockets.len() > MAX_SOCKETS && budget > 0 {
            budget -= 1;
            let Some(sock) = self.sock_age.pop_front() else {
                break;
            };
            match self.sockets.get(&sock) {
                Some(s) if s.state == SockState::LISTEN => self.sock_age.push_back(sock),
                Some(_) => {
                    self.untrack(sock);
                    self.evicted += 1;
                }
                None => {}
            }
        }
        if self.sock_age.len() > crate::model::tracker::stale_bound(self.sockets.len()) {
            let sockets = &self.sockets;
            self.sock_age.retain(|s| sockets.contains_key(s));
        }
        self.trim();
    }

    /// Gives back the memory of a burst once it is over: hash tables and
    /// queues keep their largest size otherwise. Only when far below it,
    /// so that steady traffic never reallocates.
    fn trim(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V>(m: &mut FastMap<K, V>) {
            if m.capacity() > 4096 && m.len() < m.capacity() / 8 {
                m.shrink_to(m.len() * 2);
            }
        }
        fn shrink_queue<T>(q: &mut VecDeque<T>) {
            if q.capacity() > 4096 && q.len() < q.capacity() / 8 {
                q.shrink_to(q.len() * 2);
            }
        }
        fn shrink_dense<V>(m: &mut DenseMap<u64, V>) {
            if m.capacity() > 4096 && m.len() < m.capacity() / 8 {
                m.shrink_to(m.len() * 2);
            }
        }
        shrink_dense(&mut self.sockets);
        shrink_dense(&mut self.time_wait);
        shrink(&mut self.ports);
        shrink(&mut self.member_of);
        shrink_queue(&mut self.sock_age);
        shrink_queue(&mut self.tw_age);
    }

    /// Forgets reuseport members idle for [`MEMBER_IDLE_NS`], and groups
    /// left empty.
    fn age_members(&mut self) {
        let now = self.now_ns / 1_000_000_000;
        let idle = MEMBER_IDLE_NS / 1_000_000_000;
        let mut gone = Vec::new();
        self.groups.retain(|_, members| {
            members.retain(|m| {
                let keep = now.saturating_sub(m.last_sec()) < idle;
                if !keep {
                    gone.push(m.sock);
                }
                keep
            });
            !members.is_empty()
        });
        self.members_evicted += gone.len() as u64;
        for sock in gone {
            self.member_of.remove(&sock);
        }
    }

    /// A member's socket closed: it is marked, and goes with the idle ones
    /// ([`Model::age_members`]), so a finished run's split stays readable.
    fn leave_group(&mut self, sock: u64) {
        let Some(key) = self.member_of.remove(&sock) else {
            return;
        };
        if let Some(members) = self.groups.get_mut(&key) {
            for m in members.iter_mut().filter(|m| m.sock == sock) {
                m.closed = true;
            }
        }
    }

    fn port_dec(&mut self, key: PortKey, state: SockState) {
        let state = state.name();
        if let Some(agg) = self.ports.get_mut(&key) {
            if let Some(n) = agg.states.get_mut(state) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    agg.states.remove(state);
                }
            }
            if agg.is_empty() {
                self.ports.remove(&key);
            }
        }
    }

    fn untrack(&mut self, sock: u64) {
        if let Some(s) = self.sockets.remove(&sock) {
            if s.pre
                && let Some(agg) = self.ports.get_mut(&s.key)
            {
                agg.pre = agg.pre.saturating_sub(1);
            }
            self.port_dec(s.key, s.state);
        }
    }

    fn tw_gone(&mut self, sock: u64) {
        let Some(t) = self.time_wait.remove(&sock) else {
            return;
        };
        if let Some(agg) = self.ports.get_mut(&t.key) {
            if t.pre {
                agg.pre = agg.pre.saturating_sub(1);
            }
            if let Some(n) = agg.tw.get_mut(&t.entered_ns) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    agg.tw.remove(&t.entered_ns);
                }
            }
            agg.tw_count = agg.tw_count.saturating_sub(1);
            if agg.is_empty() {
                self.ports.remove(&t.key);
            }
        }
    }

    fn track(&mut self, r: &Record, key: PortKey, state: SockState) {
        let previous = self.sockets.get(&r.sock).map(|s| (s.key, s.state));
        if previous != Some((key, state)) {
            if let Some((k, s)) = previous {
                self.port_dec(k, s);
            }
            *self
                .ports
                .entry(key)
                .or_default()
                .states
                .entry(state.name())
                .or_default() += 1;
        }
        let entry = self.sockets.get_or_insert_with(r.sock, || {
            self.sock_age.push_back(r.sock);
            LiveSock {
                key,
                state,
                owner: None,
                since_ns: r.ts_ns,
                addr: None,
                cookie: None,
                pre: false,
            }
        });
        if let Some(cookie) = r.cookie.and_then(NonZeroU64::new) {
            entry.cookie = Some(cookie);
        }
        entry.key = key;
        if r.lport != 0 {
            entry.addr = Some(SockAddr::of(r));
        }
        if entry.state != state {
            entry.state = state;
            entry.since_ns = r.ts_ns;
        }
        if let Some(pid) = r.pid {
            let name = r.comm.as_deref().unwrap_or_default();
            if entry
                .owner
                .as_ref()
                .is_none_or(|(p, n)| *p != pid || **n != *name)
            {
                entry.owner = Some((pid, self.names.get(name)));
            }
            if let Some(agg) = self.ports.get_mut(&key)
                && agg.owners.len() < 4
                && !agg.owners.iter().any(|(p, _)| *p == pid)
            {
                agg.owners.push((pid, name.to_owned()));
            }
        }
    }

    fn deliver(&mut self, r: &Record) {
        let key = GroupKey {
            proto: r.proto,
            addr: r.laddr,
            port: r.lport,
            netns: r.netns,
        };
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            self.evict_idlest_group();
        }
        self.member_of.insert(r.sock, key.clone());
        let members = self.groups.entry(key).or_default();
        if members.len() >= MAX_MEMBERS
            && !members.iter().any(|m| m.sock == r.sock)
            && let Some(i) = (0..members.len()).min_by_key(|&i| members[i].last_sec())
        {
            let m = members.remove(i);
            self.member_of.remove(&m.sock);
            self.members_evicted += 1;
        }
        match members.iter_mut().find(|m| m.sock == r.sock) {
            Some(m) => {
                m.deliveries += 1;
                m.closed = false;
                m.count_second(r.ts_ns);
                if m.owner.is_none() {
                    m.owner = owner(r);
                }
                if m.cgroup.is_none() {
                    m.cgroup = r.cgroup_tag().map(str::to_owned);
                }
            }
            None => {
                let mut m = Member {
                    sock_id: r.sock_id(),
                    sock: r.sock,
                    ino: r.ino,
                    owner: owner(r),
                    cgroup: r.cgroup_tag().map(str::to_owned),
                    deliveries: 1,
                    per_sec: VecDeque::new(),
                    closed: false,
                };
                m.count_second(r.ts_ns);
                members.push(m);
            }
        }
    }

    /// Forgets the group whose last delivery is the oldest, with its
    /// members.
    fn evict_idlest_group(&mut self) {
        let idlest = self
            .groups
            .iter()
            .min_by_key(|(_, ms)| ms.iter().map(Member::last_sec).max().unwrap_or(0))
            .map(|(k, _)| k.clone());
        if let Some(members) = idlest.and_then(|k| self.groups.remove(&k)) {
            self.members_evicted += members.len() as u64;
            for m in members {
                self.member_of.remove(&m.sock);
            }
        }
    }

    /// Advances the per-second buckets to the second of `ts_ns`.
    fn roll(&mut self, ts_ns: u64) {
        let sec = ts_ns / 1_000_000_000;
        if self.tw_entries.is_empty() {
            self.bucket_sec = sec;
            self.tw_entries.push_back(0);
            self.tw_exits.push_back(0);
            return;
        }
        let steps = sec.saturating_sub(self.bucket_sec).min(HISTORY_SECS as u64);
        if steps > 0 {
            // Once per kernel second: cheap next to a scan per record.
            self.age_members();
        }
        for _ in 0..steps {
            self.tw_entries.push_back(0);
            self.tw_exits.push_back(0);
        }
        while self.tw_entries.len() > HISTORY_SECS {
            self.tw_entries.pop_front();
            self.tw_exits.pop_front();
        }
        self.bucket_sec = self.bucket_sec.max(sec);
    }

    /// Updates the events/s figure; `now_ns` is the caller's clock.
    pub fn sample_rate(&mut self, now_ns: u64) {
        let (at, n) = self.rate_mark;
        if at == 0 {
            self.rate_mark = (now_ns, self.records);
            return;
        }
        let dt = now_ns.saturating_sub(at);
        if dt >= 1_000_000_000 {
            self.rate = (self.records - n) as f64 / (dt as f64 / 1e9);
            self.rate_mark = (now_ns, self.records);
        }
    }

    /// Zeroes the delivery counters of every group (the `r` key).
    pub fn reset_groups(&mut self) {
        for members in self.groups.values_mut() {
            for m in members {
                m.deliveries = 0;
            }
        }
    }

    /// Per-port rows for the ports table, busiest first.
    pub fn port_rows(&self) -> Vec<PortRow> {
        let left = |entered: u64| TIME_WAIT_NS.saturating_sub(self.now_ns.saturating_sub(entered));
        let mut rows: Vec<PortRow> = self
            .ports
            .iter()
            .map(|(key, agg)| PortRow {
                key: *key,
                states: agg.states.clone(),
                owners: agg.owners.clone(),
                last_owner: if agg.owners.is_empty() {
                    agg.last_owner.clone()
                } else {
                    None
                },
                time_wait: agg.tw_count,
                tw_left_max: agg.tw.keys().next_back().map(|&e| left(e)),
                tw_left_min: agg.tw.keys().next().map(|&e| left(e)),
                pre: agg.pre > 0,
            })
            .collect();
        rows.sort_by(|a, b| b.total().cmp(&a.total()).then(a.key.cmp(&b.key)));
        rows
    }
}

impl Model {
    /// Every socket on `key`'s port, live ones first then TIME_WAIT, newest
    /// TIME_WAIT first. Walks the socket tables: for the detail view only,
    /// never per frame of the lists.
    pub fn holders(&self, key: PortKey) -> Vec<Holder> {
        let mut live: Vec<(&LiveSock, Holder)> = self
            .sockets
            .values()
            .filter(|s| s.key == key)
            .map(|s| {
                (
                    s,
                    Holder {
                        state: s.state.name(),
                        addr: s.addr,
                        netns: s.key.netns,
                        owner: s.owner.as_ref().map(unshared),
                        time_wait: false,
                        left_ns: None,
                        pre: s.pre,
                    },
                )
            })
            .collect();
        live.sort_by_key(|(s, _)| s.since_ns);
        let mut tw: Vec<(u64, Holder)> = self
            .time_wait
            .values()
            .filter(|t| t.key == key)
            .map(|t| {
                (
                    t.entered_ns,
                    Holder {
                        state: "TIME_WAIT",
                        addr: t.addr,
                        netns: t.key.netns,
                        owner: t.last_owner.as_ref().map(unshared),
                        time_wait: true,
                        left_ns: Some(
                            TIME_WAIT_NS.saturating_sub(self.now_ns.saturating_sub(t.entered_ns)),
                        ),
                        pre: t.pre,
                    },
                )
            })
            .collect();
        tw.sort_by_key(|t| std::cmp::Reverse(t.0));
        live.into_iter()
            .map(|(_, h)| h)
            .chain(tw.into_iter().map(|(_, h)| h))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct PortRow {
    pub key: PortKey,
    pub states: BTreeMap<&'static str, u64>,
    pub owners: Vec<(u32, String)>,
    pub last_owner: Option<(u32, String)>,
    pub time_wait: u64,
    /// Time left on the newest and the oldest TIME_WAIT socket.
    pub tw_left_max: Option<u64>,
    pub tw_left_min: Option<u64>,
    /// Some of its sockets were found in the kernel's table at start.
    pub pre: bool,
}

impl PortRow {
    pub fn total(&self) -> u64 {
        self.states.values().sum::<u64>() + self.time_wait
    }
}

#[cfg(test)]
mod tests {
    use inspector_common::kind;

    use super::*;
    use crate::fixture::EventBuilder;

    fn state(sock: u64, lport: u16, to: TcpState, ts_ns: u64) -> Record {
        let ev = EventBuilder::state(TcpState::CLOSE, to)
            .sock(sock)
            .ports(lport, if to == TcpState::LISTEN { 0 } else { 40000 })
            .at(ts_ns)
            .build();
        crate::model::record::decode_state(&ev)
    }

    #[test]
    fn past_the_cap_the_oldest_sockets_go_but_never_a_live_listener() {
        let mut m = Model::new();
        for i in 0..10 {
            m.apply(&state(i, 80 + i as u16, TcpState::LISTEN, 1));
        }
        let n = MAX_SOCKETS as u64 + 100;
        for i in 0..n {
            m.apply(&state(1000 + i, 9000, TcpState::ESTABLISHED, 2));
        }
        assert_eq!(m.sockets.len(), MAX_SOCKETS);
        assert_eq!(m.evicted, 110);
        for i in 0..10 {
            assert_eq!(m.sockets.get(&i).map(|s| s.state.name()), Some("LISTEN"));
        }
        let rows = m.port_rows();
        assert_eq!(
            rows.iter()
                .filter(|r| r.states.contains_key("LISTEN"))
                .count(),
            10
        );
        assert_eq!(
            rows.iter().map(PortRow::total).sum::<u64>(),
            MAX_SOCKETS as u64,
            "the port table counts what is kept"
        );
    }

    #[test]
    fn socket_states_keep_their_names_in_a_byte() {
        for raw in 0..=u8::MAX {
            let t = TcpState::from(raw);
            let s = SockState::tcp(t);
            assert_eq!(s.name(), t.name().unwrap_or("?"), "{raw}");
            assert_eq!(SockState::of(s.name()), s, "{raw}");
        }
        for s in [SockState::BOUND, SockState::CONNECTED, SockState::UNKNOWN] {
            assert_eq!(SockState::of(s.name()), s);
        }
    }

    /// Up to [`MAX_SOCKETS`] of each are alive at once: their size is
    /// part of the memory bound (README, "Memory").
    #[test]
    fn socket_entries_stay_small() {
        assert!(std::mem::size_of::<LiveSock>() <= 64);
        assert!(std::mem::size_of::<TimeWait>() <= 56);
    }

    #[test]
    fn a_time_wait_entry_whose_exit_was_lost_ages_out_counted() {
        let mut m = Model::new();
        let ev = EventBuilder::time_wait(kind::TW_ARM, TcpState::TIME_WAIT)
            .sock(7)
            .ports(8080, 40000)
            .at(1_000)
            .build();
        m.apply(&Record::from_event(&ev, RecordType::TwEnter));
        m.apply(&state(1, 80, TcpState::LISTEN, 1_000 + TW_LIFETIME_NS - 1));
        assert_eq!(m.time_wait.len(), 1);
        m.apply(&state(1, 80, TcpState::LISTEN, 1_000 + TW_LIFETIME_NS));
        assert_eq!((m.time_wait.len(), m.tw_aged_out), (0, 1));
        assert!(m.port_rows().iter().all(|r| r.time_wait == 0));
    }

    #[test]
    fn a_closed_reuseport_member_is_marked_then_leaves_when_idle() {
        let mut m = Model::new();
        for sock in [1, 2] {
            let ev = EventBuilder::new(kind::REUSEPORT)
                .sock(sock)
                .lport(9000)
                .build();
            m.apply(&Record::from_event(&ev, RecordType::Reuseport));
        }
        assert_eq!(m.groups.values().map(Vec::len).sum::<usize>(), 2);
        let mut close = state(1, 9000, TcpState::CLOSE, 5);
        close.old_state = Some(TcpState::LISTEN);
        m.apply(&close);
        let closed = |m: &Model| m.groups.values().flatten().filter(|x| x.closed).count();
        assert_eq!(closed(&m), 1);
        let mut close = state(2, 9000, TcpState::CLOSE, 6);
        close.old_state = Some(TcpState::LISTEN);
        m.apply(&close);
        assert_eq!(closed(&m), 2, "kept, marked, for the record");
        let mut later = state(3, 80, TcpState::LISTEN, MEMBER_IDLE_NS + 2_000_000_000);
        later.old_state = Some(TcpState::CLOSE);
        m.apply(&later);
        m.age_members();
        assert!(m.groups.is_empty(), "idle members go");
    }
}
