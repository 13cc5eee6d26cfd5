//! The model's bounds and life cycles, stepped with fixture records.

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
        assert_eq!(
            m.sockets.get(&i).map(LiveSock::holder_state),
            Some(HolderState::LISTEN)
        );
    }
    let rows = m.port_rows();
    assert_eq!(
        rows.iter()
            .filter(|r| r.states.contains_key(&HolderState::LISTEN))
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
fn socket_states_name_and_order_as_the_ports_pane_lists_them() {
    for raw in 0..=u8::MAX {
        let t = TcpState::from(raw);
        assert_eq!(HolderState::Tcp(t).name(), t.name().unwrap_or("?"), "{raw}");
    }
    let udp = Some(Proto::Udp);
    assert_eq!(HolderState::of(udp, TcpState::CLOSE), HolderState::Bound);
    assert_eq!(
        HolderState::of(udp, TcpState::ESTABLISHED),
        HolderState::Connected
    );
    let tcp = Some(Proto::Tcp);
    assert_eq!(HolderState::of(tcp, TcpState::CLOSE), HolderState::Bound);
    assert_eq!(HolderState::of(tcp, TcpState::LISTEN), HolderState::LISTEN);
    assert_eq!(HolderState::ESTABLISHED.short_name(), "ESTAB");
    assert_eq!(HolderState::Connected.to_string(), "CONNECTED");
    // Listeners first, then sockets only bound, then connections.
    let mut states = vec![
        HolderState::TIME_WAIT,
        HolderState::ESTABLISHED,
        HolderState::Connected,
        HolderState::Bound,
        HolderState::LISTEN,
    ];
    states.sort();
    assert_eq!(
        states,
        [
            HolderState::LISTEN,
            HolderState::Bound,
            HolderState::Connected,
            HolderState::ESTABLISHED,
            HolderState::TIME_WAIT
        ]
    );
    assert!(std::mem::size_of::<HolderState>() <= 2);
}

/// Up to [`MAX_SOCKETS`] of each are alive at once: their size is
/// part of the memory bound (docs/benchmarks.md, "Memory of the dashboard's pipeline").
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
