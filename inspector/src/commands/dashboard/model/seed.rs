//! What the kernel's tables held: the sockets that existed before the
//! dashboard started (seeded, marked `pre`), and, every few seconds, which
//! of the sockets that close without an event are still there.

use std::{net::SocketAddr, num::NonZeroU64};

use super::{LiveSock, Model, PortKey, TIME_WAIT_NS};
use crate::{
    kernel::{Proto, TcpState},
    model::{
        ephemeral::{DestKey, MAX_DESTS},
        record::Record,
        seed::SeedSock,
    },
};

/// Owners remembered per destination of connections found at start.
const PRE_OWNERS: usize = 4;

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
    /// started, marked `pre`: listeners, sockets only bound and TIME_WAIT
    /// sockets in pane 2, and the ports clients' connections hold toward
    /// their destinations, live or in TIME_WAIT, in pane 5.
    pub fn seed(&mut self, socks: &[SeedSock]) {
        for s in socks {
            let key = PortKey {
                proto: Some(s.proto),
                port: s.addr.port,
                netns: s.netns,
            };
            let time_wait = s.state == TcpState::TIME_WAIT;
            // As if it entered TCP_TIMEWAIT_LEN before it expires.
            let entered = time_wait.then(|| {
                let left = s.tw_left_ns.unwrap_or(TIME_WAIT_NS).min(TIME_WAIT_NS);
                self.now_ns
                    .saturating_add(left)
                    .saturating_sub(TIME_WAIT_NS)
            });
            if let Some(peer) = s.peer.filter(|_| s.proto == Proto::Tcp) {
                self.seed_connection(s, peer, entered);
                if !time_wait {
                    // A live connection is pane 5's only.
                    continue;
                }
            }
            // Cookies count up from 1 and kernel addresses are far above
            // them: the cookie is a key no live socket has.
            let sock = s.cookie;
            self.pre_cookies.insert(s.cookie, sock);
            if let Some(entered) = entered {
                self.tw_insert(sock, key, entered, None, Some(s.addr), true);
                continue;
            }
            let state = s.state;
            self.port_inc(key, state);
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

    /// A client's connection found at start: its local port is held
    /// toward `peer`, and its owner is remembered for pane 5.
    fn seed_connection(&mut self, s: &SeedSock, peer: SocketAddr, tw_entered_ns: Option<u64>) {
        let dest = DestKey {
            netns: s.netns,
            addr: peer.ip(),
            port: peer.port(),
        };
        self.ephemeral
            .seed(dest, s.addr.port, s.cookie, tw_entered_ns, self.now_ns);
        let Some((pid, comm)) = &s.owner else { return };
        if !self.pre_owners.contains_key(&dest) && self.pre_owners.len() >= MAX_DESTS {
            return;
        }
        let owners = self.pre_owners.entry(dest).or_default();
        if let Some(o) = owners.iter_mut().find(|o| o.0 == *pid) {
            o.2 += 1;
        } else if owners.len() < PRE_OWNERS {
            owners.push((*pid, comm.clone(), 1));
        }
        owners.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
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
