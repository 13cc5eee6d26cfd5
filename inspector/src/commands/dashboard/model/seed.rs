//! What the kernel's tables held: the sockets that existed before the
//! dashboard started (seeded, marked `pre`), and, every few seconds, which
//! of the sockets that close without an event are still there.

use std::num::NonZeroU64;

use super::{HolderState, LiveSock, Model, PortKey, SockAddr, TIME_WAIT_NS};
use crate::{
    kernel::{Proto, TcpState},
    model::record::Record,
};

/// A socket of the kernel's table at start, to seed the model with.
#[derive(Debug, Clone)]
pub struct SeedSock {
    pub proto: Proto,
    pub netns: u32,
    pub addr: SockAddr,
    pub cookie: u64,
    pub owner: Option<(u32, String)>,
    /// `sk_state` as the table had it.
    pub state: TcpState,
    /// Time left on a TIME_WAIT socket's timer; unknown, a whole
    /// TCP_TIMEWAIT_LEN.
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
    s.pre || s.key.proto != Some(Proto::Tcp) || s.state == TcpState::CLOSE
}

impl Model {
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
            if s.state == TcpState::TIME_WAIT {
                let left = s.tw_left_ns.unwrap_or(TIME_WAIT_NS).min(TIME_WAIT_NS);
                // As if it entered TCP_TIMEWAIT_LEN before it expires.
                let entered = self
                    .now_ns
                    .saturating_add(left)
                    .saturating_sub(TIME_WAIT_NS);
                self.tw_insert(sock, key, entered, None, Some(s.addr), true);
                continue;
            }
            let state = s.state;
            *self
                .ports
                .entry(key)
                .or_default()
                .states
                .entry(HolderState::of(key.proto, state))
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
    pub(super) fn rekey(&mut self, r: &Record) {
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
}
