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
//!
//! By job: [`ports`] (sockets per port and TIME_WAIT), [`reuseport`]
//! (SO_REUSEPORT groups), [`seed`] (what the kernel's tables held at start,
//! and the sockets that close without an event), [`state`] (a socket's
//! state as the dashboard names it); pane 5's accounting is
//! [`Ephemeral`]'s.

mod ports;
mod reuseport;
mod seed;
mod state;

use std::collections::{BTreeMap, VecDeque};

use self::ports::PortAgg;
pub use self::{
    ports::{Holder, LiveSock, PortKey, PortRow, TimeWait},
    reuseport::{GroupKey, Member},
    seed::KernelFiles,
    state::HolderState,
};
pub use crate::model::seed::{SeedSock, SockAddr};
use crate::{
    kernel::{Phase, Proto, TcpState},
    model::{
        balance::window::Windows,
        ephemeral::{DestKey, Ephemeral},
        record::{Name, Names, Record, RecordType},
        tracker::TW_LIFETIME_NS,
    },
    util::{dense::DenseMap, fasthash::FastMap},
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

/// Namespaces whose failures are counted apart, at most.
pub const FAILURE_NAMESPACES: usize = 4096;

/// A process as the per-socket tables keep it: the name is shared
/// ([`Names`]).
pub type SharedOwner = (u32, Name);

#[derive(Debug, Default)]
pub struct Model {
    ports: FastMap<PortKey, PortAgg>,
    pub decisions: VecDeque<Record>,
    /// Failed calls seen, in every namespace.
    pub failures: u64,
    /// Failed calls by namespace, for a header scoped to the namespaces a
    /// view follows; at most [`FAILURE_NAMESPACES`] kept, the rest
    /// counted in `failures_unplaced`.
    pub failures_by_ns: FastMap<u32, u64>,
    pub failures_unplaced: u64,
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
    /// Pane 3's sliding observations, for its causes.
    pub windows: Windows,
    /// Who held the connections toward each destination found at start:
    /// (pid, name, connections), most first. Pane 5 shows them while
    /// some of those connections are still there.
    pub pre_owners: BTreeMap<DestKey, Vec<(u32, String, u64)>>,
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

    pub fn apply(&mut self, r: &Record) {
        if !self.pre_cookies.is_empty() {
            self.rekey(r);
        }
        self.records += 1;
        self.now_ns = self.now_ns.max(r.ts_ns);
        self.roll(r.ts_ns);
        self.ephemeral.apply(r);
        self.windows.apply(r);
        let key = PortKey {
            proto: r.proto,
            port: r.lport,
            netns: r.netns,
        };
        match r.kind {
            RecordType::Bind | RecordType::Connect => {
                if r.is_failure() {
                    self.failures += 1;
                    let room = self.failures_by_ns.len() < FAILURE_NAMESPACES;
                    match self.failures_by_ns.get_mut(&r.netns) {
                        Some(n) => *n += 1,
                        None if room => {
                            self.failures_by_ns.insert(r.netns, 1);
                        }
                        None => self.failures_unplaced += 1,
                    }
                }
                if self.decisions.len() == RECENT {
                    self.decisions.pop_front();
                }
                self.decisions.push_back(r.clone());
                if r.errno.is_none() && r.lport != 0 {
                    let state = match (r.proto, r.phase) {
                        (Some(Proto::Tcp), Some(Phase::Listen)) => TcpState::LISTEN,
                        (Some(Proto::Tcp), Some(Phase::Connect)) => TcpState::SYN_SENT,
                        (Some(Proto::Udp), Some(Phase::Connect)) => TcpState::ESTABLISHED,
                        // Only bound: a socket keeps TCP_CLOSE until it
                        // listens or connects.
                        _ => TcpState::CLOSE,
                    };
                    self.track(r, key, state);
                }
            }
            RecordType::Accept => self.track(r, key, TcpState::ESTABLISHED),
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
                } else if r.lport != 0
                    && let Some(state) = r.new_state
                {
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
                Some(s) if s.state == TcpState::LISTEN => self.sock_age.push_back(sock),
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
}

#[cfg(test)]
mod tests;
