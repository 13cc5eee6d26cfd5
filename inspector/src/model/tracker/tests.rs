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
fn an_accept_on_a_detached_timewait_tuple_ends_it_before_the_next_arm() {
    // A SYN took the 4-tuple over (the detach, no follow-up); the new
    // connection, seen only by its accept(), closed into a timewait socket
    // in the freed memory: a new socket, not a re-arm.
    let mut t = Tracker::new();
    let accept = EventBuilder::new(kind::ACCEPT)
        .flags(flag::SYSCALL)
        .owner(77, "srv")
        .sock(0xbeef)
        .at(30)
        .ports(8080, 40000)
        .build();
    let out = apply(
        &mut t,
        &[
            tw(kind::TW_ARM, TcpState::TIME_WAIT, 10),
            tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 20),
            accept,
            tw(kind::TW_ARM, TcpState::TIME_WAIT, 1_000_000),
        ],
    );
    let kinds: Vec<_> = out.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RecordType::TwEnter,
            RecordType::TwExit,
            RecordType::Accept,
            RecordType::TwEnter
        ],
        "{out:#?}"
    );
    assert_eq!(out[1].reason, Some(ExitReason::Reused));
    assert_eq!(t.time_wait_count(), 1);
}

#[test]
fn an_entry_the_kernel_names_ends_the_last_socket_on_its_tuple_and_carries_its_owner() {
    // Where successful calls are quiet: no accept() or connect() in
    // between, only the kernel's word that the second arm is an entry, and
    // the owner it names.
    let mut t = Tracker::new();
    let entry = |ts| {
        EventBuilder::from(tw(kind::TW_ARM, TcpState::TIME_WAIT, ts))
            .owner(77, "srv")
            .flags(flag::TW_ENTRY | flag::OWNER_KNOWN)
            .build()
    };
    let out = apply(
        &mut t,
        &[
            entry(10),
            tw(kind::TW_CANCEL, TcpState::TIME_WAIT, 20),
            entry(1_000),
        ],
    );
    let kinds: Vec<_> = out.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [RecordType::TwEnter, RecordType::TwExit, RecordType::TwEnter],
        "{out:#?}"
    );
    assert_eq!(out[1].reason, Some(ExitReason::Reused));
    for r in [&out[0], &out[2]] {
        assert_eq!(
            (r.last_pid, r.last_comm.as_deref()),
            (Some(77), Some("srv"))
        );
        assert_eq!(
            (r.pid, r.tid),
            (None, None),
            "a timewait socket has no owner"
        );
    }
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
/// part of the memory bound (docs/benchmarks.md, "Memory of the dashboard's pipeline").
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
