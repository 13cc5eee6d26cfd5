//! The connect model on hand-made sockets (the differential test in
//! `tests/connect.rs` checks it against the kernel).

use std::net::IpAddr;

use super::{usage::TIMEWAIT_MS, *};
use crate::{
    explain::inventory::{FLAGS_KERNEL, Holder},
    kernel::{Errno, Family, Proto},
};

fn settings(lo: u16, hi: u16) -> Settings {
    Settings {
        range: (lo, hi),
        reserved: Vec::new(),
        tw_reuse: 2,
        tw_reuse_delay_ms: Some(1000),
        timestamps: 1,
    }
}

fn holder(lport: u16, state: TcpState, raddr: &str, rport: u16) -> Holder {
    let raddr: IpAddr = raddr.parse().expect("address");
    Holder {
        proto: Proto::Tcp,
        family: Family::Inet,
        laddr: "127.0.0.1".parse().expect("address"),
        lport,
        raddr,
        rport,
        state,
        timewait: state == TcpState::TIME_WAIT,
        expires_ms: (state == TcpState::TIME_WAIT).then_some(59_500),
        pid: None,
        comm: None,
        pids: Vec::new(),
        last_pid: None,
        last_comm: None,
        uid: None,
        cookie: u64::from(lport),
        ino: None,
        reuseaddr: Some(false),
        reuseport: Some(false),
        flags_source: FLAGS_KERNEL.into(),
        v6only: Some(false),
        bound_dev_if: 0,
        cgroup: None,
        container: None,
    }
}

fn dest(s: &str) -> Destination {
    Destination::parse(s).expect("destination")
}

#[test]
fn exhausted_toward_one_destination_free_toward_another() {
    let holders: Vec<Holder> = (40000..=40003)
        .map(|p| {
            holder(
                p,
                if p % 2 == 0 {
                    TcpState::ESTABLISHED
                } else {
                    TcpState::TIME_WAIT
                },
                "127.0.0.1",
                8080,
            )
        })
        .collect();
    let src: IpAddr = "127.0.0.1".parse().expect("addr");
    let u = PortUsage::new(
        dest("127.0.0.1:8080"),
        src,
        settings(40000, 40003),
        &holders,
    );
    assert_eq!(u.free, 0);
    assert_eq!(u.in_use.get(&TcpState::ESTABLISHED), Some(&2));
    assert_eq!(u.time_wait.count, 2);
    // 1 s old at most: not reusable yet under the default delay.
    assert_eq!(u.time_wait.reusable_later, 2);
    let v = verdict(&u);
    assert_eq!(v.result, Outcome::Err(Errno::EADDRNOTAVAIL));
    assert!(v.rule.condition.contains("40000-40003"), "{v:?}");
    let other = PortUsage::new(
        dest("127.0.0.1:8081"),
        src,
        settings(40000, 40003),
        &holders,
    );
    assert_eq!(other.free, 4);
    assert!(verdict(&other).is_ok());
}

#[test]
fn time_wait_reuse_follows_tcp_twsk_unique() {
    let src: IpAddr = "127.0.0.1".parse().expect("addr");
    let mut tw = holder(40000, TcpState::TIME_WAIT, "127.0.0.1", 8080);
    tw.expires_ms = Some(TIMEWAIT_MS - 5000);
    let check = |s: Settings, h: &Holder| {
        let u = PortUsage::new(dest("127.0.0.1:8080"), src, s, std::slice::from_ref(h));
        verdict(&u).result
    };
    assert_eq!(check(settings(40000, 40000), &tw), "ok");
    let mut s = settings(40000, 40000);
    s.tw_reuse = 0;
    assert_eq!(check(s.clone(), &tw), "EADDRNOTAVAIL");
    s.tw_reuse = 1;
    s.timestamps = 0;
    assert_eq!(check(s, &tw), "EADDRNOTAVAIL");
    let mut fw2 = tw.clone();
    fw2.state = TcpState::FIN_WAIT2;
    assert_eq!(check(settings(40000, 40000), &fw2), "EADDRNOTAVAIL");
    // Not loopback: tcp_tw_reuse=2 does not apply.
    let mut far = tw.clone();
    far.laddr = "10.1.1.1".parse().expect("addr");
    far.raddr = "10.1.1.1".parse().expect("addr");
    let u = PortUsage::new(
        dest("10.1.1.1:8080"),
        "10.1.1.1".parse().expect("addr"),
        settings(40000, 40000),
        std::slice::from_ref(&far),
    );
    assert_eq!(verdict(&u).result, Outcome::Err(Errno::EADDRNOTAVAIL));
    // At the delay's edge: uncertain.
    let mut edge = tw.clone();
    edge.expires_ms = Some(TIMEWAIT_MS - 1020);
    let u = PortUsage::new(
        dest("127.0.0.1:8080"),
        src,
        settings(40000, 40000),
        std::slice::from_ref(&edge),
    );
    assert!(verdict(&u).uncertain.is_some());
}

#[test]
fn bound_and_listening_ports_block_every_destination() {
    let src: IpAddr = "127.0.0.1".parse().expect("addr");
    let mut s = settings(40000, 40003);
    s.reserved = vec![(40003, 40003)];
    let holders = vec![
        holder(40000, TcpState::LISTEN, "0.0.0.0", 0),
        holder(40001, TcpState::CLOSE, "0.0.0.0", 0),
        holder(40002, TcpState::ESTABLISHED, "127.0.0.1", 9),
    ];
    let u = PortUsage::new(dest("127.0.0.1:8080"), src, s.clone(), &holders);
    assert_eq!((u.listening, u.bound_only, u.reserved), (1, 1, 1));
    assert_eq!(u.other_destinations, 1);
    assert_eq!(u.free, 1);
    let u = PortUsage::new(dest("127.0.0.1:9"), src, s, &holders);
    assert_eq!(u.free, 0);
    let v = verdict(&u);
    assert_eq!(v.result, Outcome::Err(Errno::EADDRNOTAVAIL));
    assert!(
        v.advice
            .iter()
            .any(|a| a.contains("IP_BIND_ADDRESS_NO_PORT"))
    );
}

#[test]
fn odd_range_with_one_free_port_is_uncertain() {
    let src: IpAddr = "127.0.0.1".parse().expect("addr");
    let holders = vec![
        holder(40000, TcpState::ESTABLISHED, "127.0.0.1", 8080),
        holder(40001, TcpState::ESTABLISHED, "127.0.0.1", 8080),
    ];
    let u = PortUsage::new(
        dest("127.0.0.1:8080"),
        src,
        settings(40000, 40002),
        &holders,
    );
    let v = verdict(&u);
    assert!(v.is_ok());
    assert!(v.uncertain.is_some());
}
