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

use std::{collections::hash_map::Entry, net::IpAddr};

use inspector_common::{Event, flag, kind};

use crate::{
    fasthash::FastMap,
    kernel::TcpState,
    record::{ExitReason, Owner, OwnerSource, Record, RecordType, comm, decode_bind, decode_state},
};

/// How long a detached timewait timer waits for its "expire" or "re-arm"
/// follow-up before it counts as killed or reused. The follow-up comes
/// from the same CPU within microseconds; 100 ms is generous.
pub const CANCEL_GRACE_NS: u64 = 100_000_000;

/// Bound on remembered connections, so memory stays flat on busy hosts.
const MAX_REMEMBERED: usize = 131_072;

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
}

#[derive(Debug)]
struct Tw {
    /// `tw_substate`: TIME_WAIT, or FIN_WAIT2 while the peer's FIN is due.
    substate: TcpState,
    /// When the timewait socket took over, if tracing saw that.
    entered_ns: Option<u64>,
    /// A detach waiting for its follow-up.
    cancel: Option<Cancel>,
    record: Record,
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
    /// A detach with no follow-up: inside a connect() the slot went to
    /// the new connection, otherwise the timewait socket was killed.
    fn reason(self) -> ExitReason {
        if self.in_connect {
            ExitReason::Reused
        } else {
            ExitReason::Killed
        }
    }
}

#[derive(Debug, Default)]
pub struct Tracker {
    /// Socket id -> owner, from events that named the owner.
    owners: FastMap<u64, Owner>,
    /// Listening sockets by (netns, port) -> owner.
    listeners: FastMap<(u32, u16), Owner>,
    /// Last owner of each connection, by 4-tuple.
    connections: FastMap<Tuple, Owner>,
    /// Timewait sockets by kernel address.
    tw: FastMap<u64, Tw>,
    /// The detached ones (awaiting their follow-up) by 4-tuple, so state
    /// events and flushes find them without scanning every timewait socket.
    detached: FastMap<Tuple, u64>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of timewait sockets currently known (any substate).
    pub fn time_wait_count(&self) -> usize {
        self.tw.len()
    }

    /// The last owner the probes saw for the connection `tuple`: who held a
    /// timewait socket's connection before it closed.
    pub fn connection_owner(&self, tuple: &Tuple) -> Option<&Owner> {
        self.connections.get(tuple)
    }

    /// Applies one kernel event, appending the records it produces to `out`.
    pub fn apply(&mut self, ev: &Event, out: &mut Vec<Record>) {
        match ev.kind {
            kind::BIND | kind::CONNECT | kind::ACCEPT => self.on_syscall(ev, out),
            kind::STATE => self.on_state(ev, out),
            kind::REUSEPORT => {
                let mut r = Record::from_event(ev, RecordType::Reuseport);
                r.group = Some(format!("{:x}", ev.aux));
                self.attribute(ev, &mut r);
                out.push(r);
            }
            kind::TW_ARM => self.on_tw_arm(ev, out),
            kind::TW_CANCEL => self.on_tw_cancel(ev),
            kind::TW_EXPIRE => {
                if let Some(mut tw) = self.remove_tw(ev.sock) {
                    tw.substate = TcpState::from(ev.new_state);
                    out.push(exit_record(tw, ev.ts_ns, ExitReason::Expired));
                }
            }
            _ => {}
        }
        if self.connections.len() > MAX_REMEMBERED {
            self.connections.clear();
        }
        if self.owners.len() > MAX_REMEMBERED {
            self.owners.clear();
        }
    }

    /// Resolves detached timewait timers older than the grace period:
    /// reused when the detach happened inside a connect(), killed otherwise.
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<Record>) {
        let due: Vec<u64> = self
            .detached
            .values()
            .filter(|sock| {
                self.tw
                    .get(sock)
                    .and_then(|t| t.cancel)
                    .is_some_and(|c| now_ns.saturating_sub(c.at_ns) >= CANCEL_GRACE_NS)
            })
            .copied()
            .collect();
        for key in due {
            if let Some(mut tw) = self.remove_tw(key)
                && let Some(c) = tw.cancel
            {
                tw.substate = c.substate;
                out.push(exit_record(tw, c.at_ns, c.reason()));
            }
        }
    }

    /// Forgets a timewait socket, and its detach if one is pending.
    fn remove_tw(&mut self, sock: u64) -> Option<Tw> {
        let tw = self.tw.remove(&sock)?;
        let tuple = Tuple::of(&tw.record);
        if self.detached.get(&tuple) == Some(&sock) {
            self.detached.remove(&tuple);
        }
        Some(tw)
    }

    /// The event's owner, remembered for its socket. Most events repeat
    /// what is already known: those allocate nothing here.
    fn remember(&mut self, ev: &Event) -> &Owner {
        let same = |o: &Owner| {
            let end = ev
                .comm
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(ev.comm.len());
            o.pid == ev.pid
                && o.uid == ev.uid
                && o.cgroup == ev.cgroup
                && o.comm.as_bytes() == &ev.comm[..end]
        };
        let fresh = || Owner {
            pid: ev.pid,
            comm: comm(&ev.comm),
            uid: ev.uid,
            cgroup: ev.cgroup,
        };
        match self.owners.entry(ev.sock) {
            Entry::Occupied(o) => {
                let o = o.into_mut();
                if !same(o) {
                    *o = fresh();
                }
                o
            }
            Entry::Vacant(v) => v.insert(fresh()),
        }
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
        let owner = Owner {
            pid,
            comm: r.comm.clone().unwrap_or_default(),
            uid,
            cgroup,
        };
        self.connections.insert(tuple, owner);
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
        let owner = self.remember(ev);
        r.set_owner(owner, OwnerSource::Syscall);
        if kind == RecordType::Connect && (ev.errno == 0 || ev.errno == libc::EINPROGRESS) {
            self.remember_connection(Tuple::of(&r), &r, ev.uid);
        }
        out.push(r);
    }

    fn on_state(&mut self, ev: &Event, out: &mut Vec<Record>) {
        let mut r = decode_state(ev);
        self.attribute(ev, &mut r);
        let tuple = Tuple::of(&r);
        let (old, new) = (TcpState::from(ev.old_state), TcpState::from(ev.new_state));
        if new == TcpState::LISTEN {
            if let Some(pid) = r.pid {
                let owner = Owner {
                    pid,
                    comm: r.comm.clone().unwrap_or_default(),
                    uid: ev.uid,
                    cgroup: r.cgroup_id.unwrap_or(0),
                };
                self.listeners.insert((ev.netns, ev.lport), owner);
            }
        } else if old == TcpState::LISTEN {
            self.listeners.remove(&(ev.netns, ev.lport));
        } else if r.pid.is_some() {
            self.remember_connection(tuple, &r, ev.uid);
        }
        if new == TcpState::CLOSE {
            self.owners.remove(&ev.sock);
        }
        // A new socket on the 4-tuple of a just-detached timewait socket:
        // the kernel reused the timewait slot (e.g. a SYN arriving in
        // TIME_WAIT, tcp_timewait_state_process() -> TCP_TW_SYN).
        if new != TcpState::CLOSE
            && let Some(&sock) = self.detached.get(&tuple)
            && let Some(mut tw) = self.remove_tw(sock)
            && let Some(c) = tw.cancel
        {
            tw.substate = c.substate;
            out.push(exit_record(tw, c.at_ns, ExitReason::Reused));
        }
        out.push(r);
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
            r.set_owner(self.remember(ev), source);
        } else if let Some(owner) = self.owners.get(&ev.sock) {
            r.set_owner(owner, OwnerSource::Remembered);
        } else if let Some(owner) = self.listeners.get(&(ev.netns, ev.lport))
            && ev.kind == kind::STATE
        {
            r.set_owner(owner, OwnerSource::Listener);
        }
    }

    /// A timewait timer armed: a new timewait socket (entry), or a re-arm of
    /// a known one, which may carry its FIN_WAIT2 -> TIME_WAIT move.
    fn on_tw_arm(&mut self, ev: &Event, out: &mut Vec<Record>) {
        // The kernel reuses a freed timewait socket's memory: the same
        // address with another connection is a new socket, and the old one
        // is gone (its exit may still wait for its grace period).
        let fresh = Record::from_event(ev, RecordType::TwEnter);
        if self
            .tw
            .get(&ev.sock)
            .is_some_and(|tw| Tuple::of(&tw.record) != Tuple::of(&fresh))
            && let Some(mut old) = self.remove_tw(ev.sock)
        {
            let (at, reason) = match old.cancel {
                Some(c) => {
                    old.substate = c.substate;
                    (c.at_ns, c.reason())
                }
                None => (ev.ts_ns, ExitReason::Killed),
            };
            out.push(exit_record(old, at, reason));
        }
        if let Some(tw) = self.tw.get_mut(&ev.sock) {
            // Re-armed: the detach before it was not an exit.
            tw.cancel = None;
            let tuple = Tuple::of(&tw.record);
            if self.detached.get(&tuple) == Some(&ev.sock) {
                self.detached.remove(&tuple);
            }
            let substate = TcpState::from(ev.new_state);
            if tw.substate != substate {
                let mut r = tw.record.clone();
                r.kind = RecordType::State;
                r.ts_ns = ev.ts_ns;
                r.old_state = Some(tw.substate);
                r.new_state = Some(substate);
                tw.substate = substate;
                out.push(r);
            }
            return;
        }
        let mut r = fresh;
        r.new_state = Some(TcpState::from(ev.new_state));
        if let Some(last) = self.connections.get(&Tuple::of(&r)) {
            r.last_pid = Some(last.pid);
            r.last_comm = Some(last.comm.clone());
            r.uid = Some(last.uid);
            // A timewait socket has no `sk_cgrp_data`: the connection's
            // last owner's cgroup stands in (docs/trace-schema.md).
            r.cgroup_id = (last.cgroup != 0).then_some(last.cgroup);
        }
        out.push(r.clone());
        let tw = Tw {
            substate: TcpState::from(ev.new_state),
            entered_ns: Some(ev.ts_ns),
            cancel: None,
            record: r,
        };
        self.tw.insert(ev.sock, tw);
    }

    fn on_tw_cancel(&mut self, ev: &Event) {
        let cancel = Cancel {
            at_ns: ev.ts_ns,
            in_connect: ev.flags & flag::IN_CONNECT != 0,
            substate: TcpState::from(ev.new_state),
        };
        if let Some(tw) = self.tw.get_mut(&ev.sock) {
            tw.cancel = Some(cancel);
            self.detached.insert(Tuple::of(&tw.record), ev.sock);
            return;
        }
        // A timewait socket created before tracing started: its exit is
        // still worth reporting, without a duration.
        let mut r = Record::from_event(ev, RecordType::TwEnter);
        r.new_state = Some(cancel.substate);
        let tw = Tw {
            substate: cancel.substate,
            entered_ns: None,
            cancel: Some(cancel),
            record: r,
        };
        self.detached.insert(Tuple::of(&tw.record), ev.sock);
        self.tw.insert(ev.sock, tw);
    }
}

/// The tw_exit record for a timewait socket; `old_state` is its substate
/// when it went.
fn exit_record(tw: Tw, at_ns: u64, reason: ExitReason) -> Record {
    let mut r = tw.record;
    r.kind = RecordType::TwExit;
    r.old_state = Some(tw.substate);
    r.new_state = None;
    r.ts_ns = at_ns;
    r.reason = Some(reason);
    r.duration_ns = tw.entered_ns.map(|t| at_ns.saturating_sub(t));
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
        t.flush(u64::MAX, &mut out);
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
