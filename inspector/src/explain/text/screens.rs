//! The text an operator reads, as snapshots at a small and a large
//! terminal: a server restarting into its own listener's port with 50
//! TIME_WAIT sockets of old connections, rolled up.

use std::net::IpAddr;

use super::{View, write_bind};
use crate::{
    explain::{
        DEFAULT_ROWS,
        bind::predict,
        inventory::{FLAGS_KERNEL, Holder, Inventory, Settings},
        request::BindPlan,
        rules::Sock,
    },
    kernel::{Family, Proto, TcpState},
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn holder(state: TcpState, rport: u16) -> Holder {
    let tw = state == TcpState::TIME_WAIT;
    Holder {
        proto: Proto::Tcp,
        family: Family::Inet,
        laddr: ip(if tw { "127.0.0.1" } else { "0.0.0.0" }),
        lport: 18080,
        raddr: ip(if tw { "127.0.0.1" } else { "0.0.0.0" }),
        rport,
        state,
        timewait: tw,
        // Spread over the last minute, as a steady trickle of closes.
        expires_ms: tw.then_some(12_000 + u32::from(rport % 50) * 940),
        pid: (!tw).then_some(4242),
        comm: (!tw).then(|| "api-server".into()),
        pids: if tw { Vec::new() } else { vec![4242] },
        last_pid: tw.then_some(4100),
        last_comm: tw.then(|| "api-server".into()),
        uid: (!tw).then_some(0),
        cookie: u64::from(rport) + 1,
        ino: (!tw).then_some(777_001),
        reuseaddr: Some(false),
        reuseport: Some(false),
        flags_source: FLAGS_KERNEL.into(),
        v6only: Some(false),
        bound_dev_if: 0,
        cgroup: None,
        container: None,
    }
}

fn restart_into_time_wait(width: usize) -> String {
    let mut holders = vec![holder(TcpState::LISTEN, 0)];
    holders.extend((0..50).map(|i| holder(TcpState::TIME_WAIT, 51_000 + i)));
    let inv = Inventory {
        holders,
        netns: 4_026_531_840,
        unprivileged_port_start: 1024,
        flags_source: FLAGS_KERNEL.into(),
        udp_walk: None,
        settings: Some(Settings {
            range: (32768, 60999),
            reserved: Vec::new(),
            tw_reuse: 2,
            tw_reuse_delay_ms: Some(1000),
            timestamps: 1,
        }),
    };
    let plan = BindPlan {
        sock: Sock::new(Proto::Tcp, ip("0.0.0.0"), 18080),
        netns: None,
        probe: false,
        cgroup: None,
        container: None,
        comm: Some("api-server".into()),
    };
    let e = predict(&plan, inv);
    let mut out = Vec::new();
    write_bind(
        &e,
        View {
            limit: Some(DEFAULT_ROWS),
            width: Some(width),
        },
        &mut out,
    )
    .expect("write");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn a_restart_over_its_own_time_wait_fits_a_screen() {
    for width in [80, 160] {
        let text = restart_into_time_wait(width);
        assert!(
            text.lines().all(|l| l.chars().count() <= width),
            "{width} columns:\n{text}"
        );
        // The holders roll up into one row per kind (the listener, the 50
        // TIME_WAIT sockets with their expiry range), and the whole answer
        // fits a 48-row screen, down from a row per socket twice.
        let table = text.lines().take_while(|l| !l.starts_with("OPTS:")).count();
        assert!(table <= 5, "the roll-up:\n{text}");
        assert!(text.lines().count() <= 48, "one screen:\n{text}");
        insta::assert_snapshot!(format!("restart_into_time_wait_{width}"), text);
    }
}
