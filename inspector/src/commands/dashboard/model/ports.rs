//! Sockets per port, live and in TIME_WAIT: the aggregates pane 2 lists
//! and the holders a detail view shows.

use std::{collections::BTreeMap, num::NonZeroU64};

use super::{HolderState, Model, SharedOwner, TIME_WAIT_NS, unshared};
use crate::{
    kernel::{Proto, TcpState},
    model::{record::Record, seed::SockAddr},
};

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
    /// `sk_state` as the kernel keeps it; [`LiveSock::holder_state`]
    /// names it.
    pub state: TcpState,
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

impl LiveSock {
    pub fn holder_state(&self) -> HolderState {
        HolderState::of(self.key.proto, self.state)
    }
}

/// One socket on a port, live or in TIME_WAIT, as the detail view lists it.
#[derive(Debug, Clone)]
pub struct Holder {
    /// [`HolderState::TIME_WAIT`] for a timewait socket.
    pub state: HolderState,
    pub addr: Option<SockAddr>,
    pub netns: u32,
    /// The owner of a live socket, or the last owner of a TIME_WAIT one.
    pub owner: Option<(u32, String)>,
    /// Time left before a TIME_WAIT socket expires.
    pub left_ns: Option<u64>,
    /// Found in the kernel's table at start.
    pub pre: bool,
}

impl Holder {
    pub fn is_time_wait(&self) -> bool {
        self.state == HolderState::TIME_WAIT
    }
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

/// Per-port aggregates, kept up to date as sockets come and go, so a frame
/// never walks every socket.
#[derive(Debug, Default, Clone)]
pub(super) struct PortAgg {
    pub(super) states: BTreeMap<HolderState, u64>,
    pub(super) owners: Vec<(u32, String)>,
    /// TIME_WAIT entry times -> how many entered then.
    pub(super) tw: BTreeMap<u64, u32>,
    pub(super) tw_count: u64,
    pub(super) last_owner: Option<(u32, String)>,
    /// Sockets here found in the kernel's table at start.
    pub(super) pre: u32,
}

impl PortAgg {
    pub(super) fn is_empty(&self) -> bool {
        self.states.is_empty() && self.tw_count == 0
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
                        state: s.holder_state(),
                        addr: s.addr,
                        netns: s.key.netns,
                        owner: s.owner.as_ref().map(unshared),
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
                        state: HolderState::TIME_WAIT,
                        addr: t.addr,
                        netns: t.key.netns,
                        owner: t.last_owner.as_ref().map(unshared),
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
    pub states: BTreeMap<HolderState, u64>,
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

impl Model {
    pub(super) fn tw_insert(
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
    pub(super) fn tw_rearm(&mut self, sock: u64, at_ns: u64) {
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

    /// Counts one more socket of `key` in `state`.
    pub(super) fn port_inc(&mut self, key: PortKey, state: TcpState) {
        *self
            .ports
            .entry(key)
            .or_default()
            .states
            .entry(HolderState::of(key.proto, state))
            .or_default() += 1;
    }

    pub(super) fn port_dec(&mut self, key: PortKey, state: TcpState) {
        let state = HolderState::of(key.proto, state);
        if let Some(agg) = self.ports.get_mut(&key) {
            if let Some(n) = agg.states.get_mut(&state) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    agg.states.remove(&state);
                }
            }
            if agg.is_empty() {
                self.ports.remove(&key);
            }
        }
    }

    pub(super) fn untrack(&mut self, sock: u64) {
        if let Some(s) = self.sockets.remove(&sock) {
            if s.pre
                && let Some(agg) = self.ports.get_mut(&s.key)
            {
                agg.pre = agg.pre.saturating_sub(1);
            }
            self.port_dec(s.key, s.state);
        }
    }

    pub(super) fn tw_gone(&mut self, sock: u64) {
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

    pub(super) fn track(&mut self, r: &Record, key: PortKey, state: TcpState) {
        let previous = self.sockets.get(&r.sock).map(|s| (s.key, s.state));
        if previous != Some((key, state)) {
            if let Some((k, s)) = previous {
                self.port_dec(k, s);
            }
            self.port_inc(key, state);
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
