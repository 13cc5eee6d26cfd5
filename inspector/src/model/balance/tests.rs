use super::*;

const PORT: u16 = 8080;
const S: u64 = 1_000_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn listener(ino: u64, pid: u32, queued: u32) -> Listener {
    crate::fixture::listener(ino, PORT, queued, (pid, &format!("worker{pid}")))
}

/// `n` connections from distinct peers delivered to `ino`, the first
/// `accepted` of them accepted by task `pid`/`tid`; `next` numbers peers.
fn traffic(
    obs: &mut Observation,
    next: &mut u16,
    ino: u64,
    n: u64,
    accepted: u64,
    task: (u32, u32),
) {
    for i in 0..n {
        *next += 1;
        let peer = addr(&format!("127.0.0.1:{}", 30000 + *next));
        obs.deliveries.push(Delivery { ino, peer });
        if i < accepted {
            obs.accepts.push(Accept {
                pid: task.0,
                tid: task.1,
                comm: format!("worker{}", task.0),
                local: addr("127.0.0.1:8080"),
                peer,
                ts_ns: S + u64::from(*next),
            });
        }
    }
}

fn observation(start: Vec<Listener>, end: Vec<Listener>) -> Observation {
    Observation {
        port: PORT,
        start_ns: 0,
        end_ns: 5 * S,
        start,
        end,
        ..Observation::default()
    }
}

fn codes(b: &Balance) -> Vec<(Code, Option<usize>)> {
    b.causes.iter().map(|c| (c.code, c.member)).collect()
}

fn member(b: &Balance, ino: u64) -> &Member {
    b.members.iter().find(|m| m.ino == ino).expect("member")
}

#[test]
fn a_stuck_worker_is_named_with_its_queue() {
    let mut obs = observation(
        vec![listener(1, 100, 0), listener(2, 200, 0)],
        vec![listener(1, 100, 0), listener(2, 200, 19)],
    );
    let mut n = 0;
    traffic(&mut obs, &mut n, 1, 21, 21, (100, 100));
    traffic(&mut obs, &mut n, 2, 19, 0, (200, 200));
    let b = analyse(&obs);
    let stuck = member(&b, 2);
    assert_eq!((stuck.delivered, stuck.accepted, stuck.queued), (19, 0, 19));
    assert_eq!(stuck.last_accept_ago_ns, None);
    assert_eq!(codes(&b), vec![(Code::MemberNotAccepting, Some(stuck.id))]);
    assert!(
        b.causes[0].detail.contains("19/128"),
        "{}",
        b.causes[0].detail
    );
    assert!(b.causes[0].detail.contains("no accept in the 5.0 s"));
}

#[test]
fn a_full_queue_is_said_so() {
    let mut full = listener(2, 200, 128);
    full.queue_limit = 128;
    let mut obs = observation(
        vec![listener(1, 100, 0), full.clone()],
        vec![listener(1, 100, 0), full],
    );
    let mut n = 0;
    traffic(&mut obs, &mut n, 1, 20, 20, (100, 100));
    traffic(&mut obs, &mut n, 2, 20, 0, (200, 200));
    let b = analyse(&obs);
    assert_eq!(codes(&b), vec![(Code::MemberNotAccepting, Some(2))]);
    assert!(b.causes[0].detail.contains("full"));
}

#[test]
fn a_member_closed_while_observed_is_left_out() {
    let mut obs = observation(
        vec![
            listener(1, 100, 0),
            listener(2, 200, 0),
            listener(3, 300, 0),
        ],
        vec![listener(1, 100, 0), listener(2, 200, 0)],
    );
    let mut n = 0;
    traffic(&mut obs, &mut n, 1, 30, 30, (100, 100));
    traffic(&mut obs, &mut n, 2, 30, 30, (200, 200));
    traffic(&mut obs, &mut n, 3, 2, 2, (300, 300));
    let b = analyse(&obs);
    let closed = member(&b, 3);
    assert_eq!(closed.state, State::Closed);
    assert_eq!(codes(&b), vec![(Code::MemberClosed, Some(closed.id))]);
    let spread = b.spread.expect("a split");
    assert_eq!((spread.members, spread.total), (2, 60));
}

#[test]
fn a_member_born_and_gone_while_observed_is_still_counted() {
    let mut obs = observation(vec![listener(1, 100, 0)], vec![listener(1, 100, 0)]);
    let mut n = 0;
    traffic(&mut obs, &mut n, 1, 5, 5, (100, 100));
    traffic(&mut obs, &mut n, 9, 3, 0, (0, 0));
    let b = analyse(&obs);
    assert_eq!(member(&b, 9).state, State::Closed);
    assert_eq!(member(&b, 9).delivered, 3);
    assert!(codes(&b).contains(&(Code::MemberClosed, Some(member(&b, 9).id))));
}

#[test]
fn one_socket_accepted_by_two_tasks_is_a_shared_queue() {
    let mut l = listener(1, 100, 0);
    l.reuseport = false;
    let mut obs = observation(vec![l.clone()], vec![l]);
    let mut n = 0;
    traffic(&mut obs, &mut n, 1, 30, 30, (100, 101));
    traffic(&mut obs, &mut n, 1, 10, 10, (100, 102));
    // No reuseport records for a listener alone on its address: the
    // accepts are tied to it by address.
    obs.deliveries.clear();
    let b = analyse(&obs);
    let m = member(&b, 1);
    assert_eq!((m.delivered, m.accepted), (40, 40));
    let split: Vec<(u32, u64)> = m.accepted_by.iter().map(|t| (t.tid, t.count)).collect();
    assert_eq!(split, vec![(101, 30), (102, 10)]);
    assert_eq!(codes(&b), vec![(Code::SharedAcceptQueue, Some(1))]);
    assert!(b.causes[0].detail.contains("tid 101 worker100: 30"));
}

#[test]
fn few_flows_are_not_evidence() {
    let obs0 = observation(
        vec![listener(1, 100, 0), listener(2, 200, 0)],
        vec![listener(1, 100, 0), listener(2, 200, 0)],
    );
    for (a, c) in [(5, 1), (6, 0), (3, 3), (4, 2)] {
        let mut obs = obs0.clone();
        let mut n = 0;
        traffic(&mut obs, &mut n, 1, a, a, (100, 100));
        traffic(&mut obs, &mut n, 2, c, c, (200, 200));
        let b = analyse(&obs);
        let got = codes(&b);
        assert!(
            got == vec![(Code::TooFewFlows, None)] || got == vec![(Code::Uniform, None)],
            "{a}/{c}: {got:?}"
        );
    }
}

#[test]
fn a_fair_split_is_uniform_and_a_skewed_one_is_not() {
    let three = vec![
        listener(1, 100, 0),
        listener(2, 200, 0),
        listener(3, 300, 0),
    ];
    let mut obs = observation(three.clone(), three.clone());
    let mut n = 0;
    for (ino, k) in [(1, 97), (2, 105), (3, 98)] {
        traffic(
            &mut obs,
            &mut n,
            ino,
            k,
            k,
            (ino as u32 * 100, ino as u32 * 100),
        );
    }
    let b = analyse(&obs);
    assert_eq!(codes(&b), vec![(Code::Uniform, None)]);

    let mut obs = observation(three.clone(), three);
    let mut n = 0;
    for (ino, k) in [(1, 200), (2, 50), (3, 50)] {
        traffic(
            &mut obs,
            &mut n,
            ino,
            k,
            k,
            (ino as u32 * 100, ino as u32 * 100),
        );
    }
    let b = analyse(&obs);
    assert_eq!(codes(&b), vec![(Code::UnevenDelivery, None)]);
}

#[test]
fn even_deliveries_with_uneven_open_connections_are_long_lived_load() {
    let two = vec![listener(1, 100, 0), listener(2, 200, 0)];
    let mut obs = observation(two.clone(), two);
    let mut n = 0;
    traffic(&mut obs, &mut n, 1, 50, 50, (100, 100));
    traffic(&mut obs, &mut n, 2, 50, 50, (200, 200));
    obs.open = (0..40).map(|i| (100, 1000 + i)).collect();
    obs.open.extend((0..4).map(|i| (200, 2000 + i)));
    let b = analyse(&obs);
    assert_eq!((member(&b, 1).open, member(&b, 2).open), (40, 4));
    assert_eq!(codes(&b), vec![(Code::LongLivedLoad, None)]);
}

#[test]
fn an_accept_without_its_delivery_is_counted_apart() {
    let two = vec![listener(1, 100, 0), listener(2, 200, 0)];
    let mut obs = observation(two.clone(), two);
    obs.accepts.push(Accept {
        pid: 1,
        tid: 1,
        comm: "x".into(),
        local: addr("127.0.0.1:8080"),
        peer: addr("127.0.0.1:40000"),
        ts_ns: 1,
    });
    let b = analyse(&obs);
    assert_eq!(b.unattributed_accepts, 1);
    assert_eq!(codes(&b), vec![(Code::Uniform, None)]);
}

#[test]
fn deliveries_alone_name_what_they_can() {
    assert_eq!(deliveries_cause(&[100, 97, 103], 0).0, Code::Uniform);
    assert_eq!(deliveries_cause(&[5, 1], 0).0, Code::TooFewFlows);
    assert_eq!(deliveries_cause(&[300, 40, 60], 0).0, Code::UnevenDelivery);
    let (code, detail) = deliveries_cause(&[50, 52], 1);
    assert_eq!(code, Code::MemberClosed);
    assert!(detail.contains("1 member(s) closed"), "{detail}");
}

#[test]
fn a_bpf_program_or_incoming_cpu_is_named_instead_of_the_hash_test() {
    for (bpf, cpu, want) in [
        (true, false, Code::BpfSelector),
        (false, true, Code::IncomingCpu),
    ] {
        let mut two = vec![listener(1, 100, 0), listener(2, 200, 0)];
        for l in &mut two {
            l.bpf_selector = bpf;
            l.incoming_cpu = cpu;
        }
        let mut obs = observation(two.clone(), two);
        let mut n = 0;
        traffic(&mut obs, &mut n, 1, 200, 200, (100, 100));
        let b = analyse(&obs);
        assert_eq!(codes(&b), vec![(want, None)], "all to one member");
    }
}

/// A UDP group: `flows` peers each sending `per_flow` datagrams to `ino`.
fn udp_traffic(obs: &mut Observation, next: &mut u16, ino: u64, flows: u64, per_flow: u64) {
    for _ in 0..flows {
        *next += 1;
        let peer = addr(&format!("127.0.0.1:{}", 30000 + *next));
        for _ in 0..per_flow {
            obs.deliveries.push(Delivery { ino, peer });
        }
    }
}

fn udp_socket(ino: u64, pid: u32, drops: u32) -> Listener {
    Listener {
        queue_limit: 0,
        drops,
        ..listener(ino, pid, 0)
    }
}

#[test]
fn a_udp_split_is_judged_on_flows_not_datagrams() {
    // 100 flows each way, but one member's peers send ten times as much:
    // the hash chose evenly, the datagrams are the peers' doing.
    let mut obs = observation(
        vec![udp_socket(1, 10, 0), udp_socket(2, 20, 0)],
        vec![udp_socket(1, 10, 0), udp_socket(2, 20, 0)],
    );
    obs.proto = Proto::Udp;
    let mut next = 0;
    udp_traffic(&mut obs, &mut next, 1, 100, 10);
    udp_traffic(&mut obs, &mut next, 2, 100, 1);
    let b = analyse(&obs);
    assert_eq!(b.proto, Proto::Udp);
    assert_eq!((member(&b, 1).delivered, member(&b, 1).flows), (1000, 100));
    assert_eq!((member(&b, 2).delivered, member(&b, 2).flows), (100, 100));
    assert_eq!(codes(&b), vec![(Code::Uniform, None)]);
    assert!(b.causes[0].detail.contains("200 flows"), "{:?}", b.causes);
}

#[test]
fn a_udp_member_that_drops_is_not_reading() {
    let mut obs = observation(
        vec![udp_socket(1, 10, 5), udp_socket(2, 20, 0)],
        vec![udp_socket(1, 10, 45), udp_socket(2, 20, 0)],
    );
    obs.proto = Proto::Udp;
    let mut next = 0;
    udp_traffic(&mut obs, &mut next, 1, 100, 2);
    udp_traffic(&mut obs, &mut next, 2, 100, 2);
    let b = analyse(&obs);
    let slow = member(&b, 1);
    assert_eq!(slow.overflows, 40, "drops while observed");
    assert_eq!(codes(&b), vec![(Code::MemberNotReading, Some(slow.id))]);
    assert!(b.causes[0].detail.contains("dropped 40"), "{:?}", b.causes);
    // No accept or queue cause for a group without either.
    assert!(!codes(&b).iter().any(|(c, _)| matches!(
        c,
        Code::MemberNotAccepting | Code::SharedAcceptQueue | Code::LongLivedLoad
    )));
}

#[test]
fn a_closed_udp_member_is_told_in_datagrams() {
    let mut obs = observation(
        vec![udp_socket(1, 10, 0), udp_socket(2, 20, 0)],
        vec![udp_socket(2, 20, 0)],
    );
    obs.proto = Proto::Udp;
    let mut next = 0;
    udp_traffic(&mut obs, &mut next, 1, 3, 4);
    let b = analyse(&obs);
    assert_eq!(
        codes(&b),
        vec![(Code::MemberClosed, Some(member(&b, 1).id))]
    );
    assert!(
        b.causes[0].detail.contains("12 datagrams from 3 flows"),
        "{:?}",
        b.causes
    );
    assert!(!b.causes[0].detail.contains("accept"), "{:?}", b.causes);
}

#[test]
fn connections_from_a_reused_client_port_are_one_flow() {
    // A busy client gets the same ports again: 40 distinct 4-tuples, the
    // first 20 connecting 15 times each, the others 5, each always to the
    // member its hash picks. 300 connections against 100 look skewed, but
    // the hash chose 40 times, 20 and 20.
    let two = vec![listener(1, 100, 0), listener(2, 200, 0)];
    let mut obs = observation(two.clone(), two);
    for (ino, ports) in [(1u64, 20u16), (2, 20)] {
        for p in 0..ports {
            let peer = addr(&format!("127.0.0.1:{}", 40000 + ino as u16 * 100 + p));
            let times = if ino == 1 { 15 } else { 5 };
            for _ in 0..times {
                obs.deliveries.push(Delivery { ino, peer });
            }
        }
    }
    let b = analyse(&obs);
    assert_eq!(member(&b, 1).delivered, 300);
    assert_eq!(member(&b, 1).flows, 20);
    assert_eq!(member(&b, 2).flows, 20);
    let s = b.spread.expect("judged");
    assert_eq!((s.total, s.max), (40, 20));
    assert!(
        !codes(&b).iter().any(|(c, _)| *c == Code::UnevenDelivery),
        "{:?}",
        b.causes
    );
}
