//! The rules against the kernel functions they follow, one case each (the
//! differential test in `tests/explain.rs` checks them against the kernel).

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn tcp(addr: &str) -> Sock {
    Sock::new(Proto::Tcp, ip(addr), 7000)
}

fn udp(addr: &str) -> Sock {
    Sock::new(Proto::Udp, ip(addr), 7000)
}

fn ra(mut s: Sock) -> Sock {
    s.reuseaddr = Some(true);
    s
}

fn rp(mut s: Sock) -> Sock {
    s.reuseport = Some(true);
    s
}

fn uid(mut s: Sock, u: u32) -> Sock {
    s.uid = u;
    s
}

/// Binds (and listens when asked) every socket in order; panics if the
/// setup itself is refused.
fn port(setup: &[(Sock, bool)]) -> Port {
    let mut p = Port::new();
    for (s, listen) in setup {
        let (v, idx) = p.bind(s);
        assert!(v.is_ok(), "setup bind refused: {v:?}");
        if *listen {
            let v = p.listen(idx.expect("index"));
            assert!(v.is_ok(), "setup listen refused: {v:?}");
        }
    }
    p
}

fn results(p: &Port, s: &Sock) -> (String, String) {
    let (b, l) = p.predict(s);
    (b.result.to_string(), l.result.to_string())
}

#[test]
fn free_port_binds_and_listens() {
    // inet_csk_get_port: an empty bucket.
    assert_eq!(
        results(&Port::new(), &tcp("0.0.0.0")),
        ("ok".into(), "ok".into())
    );
}

#[test]
fn inet_bind_conflict_no_reuseaddr_same_address() {
    // inet_bind_conflict: neither sk_reuse nor sk_reuseport on both.
    let p = port(&[(tcp("127.0.0.1"), false)]);
    let (b, _) = p.predict(&tcp("127.0.0.1"));
    assert_eq!(b.result, "EADDRINUSE");
    assert_eq!(b.blockers, vec![0]);
    assert!(b.rule.condition.contains("SO_REUSEADDR not set"), "{b:?}");
}

#[test]
fn inet_bind_conflict_reuseaddr_both_holder_bound() {
    // inet_bind_conflict: sk_reuse && sk2->sk_reuse && sk2 not LISTEN.
    let p = port(&[(ra(tcp("127.0.0.1")), false)]);
    assert_eq!(results(&p, &ra(tcp("127.0.0.1"))).0, "ok");
}

#[test]
fn inet_bind_conflict_reuseaddr_holder_listening() {
    // inet_bind_conflict: sk2->sk_state == TCP_LISTEN defeats sk_reuse.
    let p = port(&[(ra(tcp("127.0.0.1")), true)]);
    let (b, _) = p.predict(&ra(tcp("127.0.0.1")));
    assert_eq!(b.result, "EADDRINUSE");
    assert!(b.rule.condition.contains("listening"), "{b:?}");
}

#[test]
fn inet_csk_listen_start_rechecks() {
    // inet_csk_listen_start -> inet_csk_get_port: both bound with
    // SO_REUSEADDR, the first listens, the second's listen fails.
    let mut p = port(&[(ra(tcp("127.0.0.1")), false)]);
    let (v, b) = p.bind(&ra(tcp("127.0.0.1")));
    assert!(v.is_ok());
    assert!(p.listen(0).is_ok());
    assert_eq!(p.listen(b.expect("index")).result, "EADDRINUSE");
}

#[test]
fn inet_bind_conflict_reuseport_same_uid() {
    // inet_bind_conflict: sk_reuseport on both and uid_eq.
    let p = port(&[(rp(tcp("0.0.0.0")), true)]);
    assert_eq!(results(&p, &rp(tcp("0.0.0.0"))), ("ok".into(), "ok".into()));
}

#[test]
fn inet_bind_conflict_reuseport_other_uid() {
    // inet_bind_conflict: sk_reuseport on both but !uid_eq.
    let p = port(&[(uid(rp(tcp("0.0.0.0")), 65534), true)]);
    let (b, _) = p.predict(&rp(tcp("0.0.0.0")));
    assert_eq!(b.result, "EADDRINUSE");
    assert!(b.rule.condition.contains("uids differ"), "{b:?}");
}

#[test]
fn inet_bind_conflict_reuseport_time_wait_other_uid() {
    // inet_bind_conflict: sk2->sk_state == TCP_TIME_WAIT skips the uid;
    // the same socket before it became a timewait socket does not.
    let mut p = port(&[(uid(rp(tcp("127.0.0.1")), 65534), false)]);
    p.connect(0, ip("127.0.0.1"));
    assert_eq!(results(&p, &rp(tcp("127.0.0.1"))).0, "EADDRINUSE");
    p.time_wait(0);
    assert_eq!(results(&p, &rp(tcp("127.0.0.1"))).0, "ok");
}

#[test]
fn time_wait_with_unknown_flags_says_both() {
    let mut t = tcp("127.0.0.1");
    t.state = SockState::TimeWait;
    t.reuseaddr = None;
    t.reuseport = None;
    let p = Port::from_inventory(vec![t]);
    let (b, _) = p.predict(&ra(tcp("127.0.0.1")));
    assert_eq!(b.result, "EADDRINUSE");
    assert_eq!(b.if_unknown_flags_set, Some(Outcome::Ok));
}

#[test]
fn inet_rcv_saddr_equal_wildcard_covers_specific() {
    // inet_bhash2_addr_any_conflict: a specific bind next to 0.0.0.0.
    let p = port(&[(tcp("0.0.0.0"), false)]);
    assert_eq!(results(&p, &tcp("127.0.0.1")).0, "EADDRINUSE");
    // inet_csk_bind_conflict + inet_rcv_saddr_equal(.., true): the reverse.
    let p = port(&[(tcp("127.0.0.1"), false)]);
    assert_eq!(results(&p, &tcp("0.0.0.0")).0, "EADDRINUSE");
}

#[test]
fn different_specific_addresses_do_not_overlap() {
    // inet_bind2_bucket_addr_match: other bhash2 bucket.
    let p = port(&[(tcp("127.0.0.1"), true)]);
    assert_eq!(results(&p, &tcp("127.0.0.2")), ("ok".into(), "ok".into()));
}

#[test]
fn dual_stack_any_covers_ipv4() {
    // ipv6_rcv_saddr_equal / __inet_bhash2_conflict: [::] with
    // IPV6_V6ONLY=0 covers 0.0.0.0 and 127.0.0.1; with V6ONLY=1 not.
    let p = port(&[(tcp("::"), true)]);
    assert_eq!(results(&p, &tcp("0.0.0.0")).0, "EADDRINUSE");
    assert_eq!(results(&p, &tcp("127.0.0.1")).0, "EADDRINUSE");
    let mut only = tcp("::");
    only.v6only = true;
    let p = port(&[(only, true)]);
    assert_eq!(results(&p, &tcp("0.0.0.0")).0, "ok");
    assert_eq!(results(&p, &tcp("::1")).0, "EADDRINUSE");
}

#[test]
fn ipv6_specific_is_v6only() {
    // __inet6_bind sets sk_ipv6only for ::1, so 0.0.0.0 does not overlap.
    let p = port(&[(tcp("::1"), true)]);
    assert_eq!(results(&p, &tcp("0.0.0.0")).0, "ok");
    assert!(p.socks[0].v6only);
}

#[test]
fn v4_mapped_on_v6only_is_einval() {
    // __inet6_bind: "Binding to v4-mapped address on a v6-only socket".
    let mut s = tcp("::ffff:127.0.0.1");
    s.v6only = true;
    assert_eq!(results(&Port::new(), &s).0, "EINVAL");
}

#[test]
fn bound_devices_that_differ_do_not_conflict() {
    // inet_bind_conflict: sk_bound_dev_if both set and different.
    let mut a = tcp("127.0.0.1");
    a.bound_dev_if = 1;
    let p = port(&[(a, true)]);
    let mut b = tcp("127.0.0.1");
    b.bound_dev_if = 2;
    assert_eq!(results(&p, &b).0, "ok");
    b.bound_dev_if = 0;
    assert_eq!(results(&p, &b).0, "EADDRINUSE");
}

#[test]
fn sk_reuseport_match_strict_fast_path() {
    // inet_csk_get_port: FASTREUSEPORT_STRICT set by a wildcard
    // SO_REUSEPORT socket lets a matching one skip the full check,
    // although the full check would refuse it (checked on 6.18).
    let p = port(&[
        (ra(tcp("127.0.0.1")), false),
        (ra(rp(tcp("0.0.0.0"))), false),
    ]);
    assert_eq!(results(&p, &rp(tcp("127.0.0.1"))).0, "ok");
    // Without the history, only the full check applies.
    let q = Port::from_inventory(p.socks.clone());
    assert_eq!(results(&q, &rp(tcp("127.0.0.1"))).0, "EADDRINUSE");
}

#[test]
fn privileged_port_needs_capability() {
    // inet_port_requires_bind_service.
    let mut s = uid(tcp("127.0.0.1"), 65534);
    s.port = 80;
    assert_eq!(results(&Port::new(), &s).0, "EACCES");
}

#[test]
fn udp_lport_inuse_reuseaddr_both_any_uid() {
    // udp_lib_lport_inuse: sk_reuse on both skips the socket, any uid.
    let p = port(&[(uid(ra(udp("0.0.0.0")), 65534), false)]);
    assert_eq!(results(&p, &ra(udp("127.0.0.1"))).0, "ok");
    assert_eq!(results(&p, &udp("127.0.0.1")).0, "EADDRINUSE");
}

#[test]
fn udp_lport_inuse_reuseport_needs_same_uid() {
    // udp_lib_lport_inuse: sk_reuseport on both and uid_eq.
    let p = port(&[(rp(udp("127.0.0.1")), false)]);
    assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "ok");
    assert_eq!(
        results(&p, &uid(rp(udp("127.0.0.1")), 65534)).0,
        "EADDRINUSE"
    );
}

#[test]
fn udp_first_overlapping_socket_decides() {
    // udp_lib_lport_inuse returns 0 at the first reuseport match.
    let p = port(&[
        (ra(udp("0.0.0.0")), false),
        (ra(rp(udp("127.0.0.1"))), false),
    ]);
    assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "ok");
    let p = port(&[
        (ra(rp(udp("127.0.0.1"))), false),
        (ra(udp("0.0.0.0")), false),
    ]);
    assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "EADDRINUSE");
}

#[test]
fn udp_every_overlap_must_allow_where_the_kernel_walks_on() {
    // Linux 6.18: the SO_REUSEPORT match at the head of the chain does
    // not end the walk; the SO_REUSEADDR-only socket behind it blocks.
    let p = port(&[
        (ra(udp("0.0.0.0")), false),
        (ra(rp(udp("127.0.0.1"))), false),
    ])
    .with_udp_walk(Some(UdpWalk::EveryOverlapMustAllow));
    let (bind, _) = p.predict(&rp(udp("127.0.0.1")));
    assert_eq!(bind.result, "EADDRINUSE");
    assert_eq!(bind.blockers, [1]);
    assert!(
        bind.rule
            .condition
            .contains("does not let the bind through")
    );
    // Every overlapping socket a match: ok, whatever the order.
    let p = port(&[
        (ra(rp(udp("0.0.0.0"))), false),
        (rp(udp("127.0.0.1")), false),
    ])
    .with_udp_walk(Some(UdpWalk::EveryOverlapMustAllow));
    assert_eq!(results(&p, &rp(udp("127.0.0.1"))).0, "ok");
}

#[test]
fn udp_walk_unknown_names_the_other_result() {
    let mut p = port(&[
        (ra(udp("0.0.0.0")), false),
        (ra(rp(udp("127.0.0.1"))), false),
    ]);
    p.udp_walk = None;
    let (bind, _) = p.predict(&rp(udp("127.0.0.1")));
    assert_eq!(bind.result, "ok");
    assert_eq!(
        bind.if_udp_walk_differs,
        Some(Outcome::Err(Errno::EADDRINUSE))
    );
    // Where both rules agree, nothing is hedged.
    let mut p = port(&[(ra(udp("0.0.0.0")), false)]);
    p.udp_walk = None;
    let (bind, _) = p.predict(&rp(udp("127.0.0.1")));
    assert_eq!(bind.result, "EADDRINUSE");
    assert_eq!(bind.if_udp_walk_differs, None);
}

#[test]
fn udp_does_not_listen() {
    assert_eq!(results(&Port::new(), &udp("0.0.0.0")).1, "EOPNOTSUPP");
}
