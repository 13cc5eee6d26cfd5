use super::*;

mod hygiene;
use crate::{
    fixture::{EventBuilder, INIT_NETNS},
    kernel::{Errno, Phase},
    model::record::ExitReason,
};

fn bind(port: u16, errno: Option<Errno>) -> Record {
    let mut r = Record::from_event(&EventBuilder::bind(port).build(), RecordType::Bind);
    r.phase = Some(Phase::Bind);
    r.req_port = Some(port);
    r.errno = errno;
    r
}

/// The listener `sock` closes.
fn close(sock: u64) -> Record {
    let mut r = Record::from_event(
        &EventBuilder::state(TcpState::LISTEN, TcpState::CLOSE)
            .sock(sock)
            .build(),
        RecordType::State,
    );
    r.old_state = Some(TcpState::LISTEN);
    r
}

fn delivery(sock: u64, ino: u64, port: u16) -> Record {
    let ev = EventBuilder::new(inspector_common::kind::REUSEPORT)
        .sock(sock)
        .ino(ino)
        .build();
    let mut r = Record::from_event(&ev, RecordType::Reuseport);
    r.lport = port;
    r.pid = Some(77);
    r.comm = Some("srv".into());
    r
}

/// The sample lines of `metric` (exact name before `{` or ` `).
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[test]
fn counters_have_total_samples_and_types_in_both_formats() {
    let mut m = Metrics::new(Limits::default());
    m.apply(&bind(8080, None));
    m.apply(&bind(8080, Some(Errno::EADDRINUSE)));
    let om = m.encode_openmetrics();
    assert!(
        om.contains("# TYPE inspector_bind_decisions counter\n"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"));
    let ok = samples(&om, "inspector_bind_decisions_total");
    assert_eq!(ok.len(), 2, "{om}");
    assert!(om.contains(
        "inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\"} 1\n"
    ));
    let text = m.encode_text();
    assert!(
        text.contains("# TYPE inspector_bind_decisions_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# HELP inspector_bind_decisions_total "));
    assert!(text.contains("# TYPE inspector_last_bind_failure_info gauge\n"));
    assert!(!text.contains("# EOF"));
    assert!(!text.contains("# UNIT"));
}

#[test]
fn the_last_failure_carries_no_free_text() {
    let mut m = Metrics::new(Limits::default());
    let mut r = bind(80, Some(Errno::EACCES));
    r.explanation = Some(format!("say \"no\"\\ \n{}", "x".repeat(400)));
    m.apply(&r);
    let om = m.encode_openmetrics();
    let line = samples(&om, "inspector_last_bind_failure_info")[0];
    assert_eq!(
        line,
        "inspector_last_bind_failure_info{proto=\"tcp\",phase=\"bind\",port=\"80\",errno=\"EACCES\"} 1"
    );
    assert!(!om.contains("xxxxxxxx"), "{om}");
}

#[test]
fn ports_past_the_limit_fold_into_other_but_filtered_ports_never_do() {
    let mut m = Metrics::new(Limits {
        ports: Some("9000".parse().expect("port set")),
        max_ports: 2,
        max_series: 100,
        ..Limits::default()
    });
    for port in [1, 2, 3, 4, 9000] {
        m.apply(&bind(port, Some(Errno::EADDRINUSE)));
    }
    let om = m.encode_openmetrics();
    let failures = samples(&om, "inspector_bind_failures_total");
    assert_eq!(failures.len(), 4, "{om}");
    assert!(failures.iter().any(|l| l.contains("port=\"9000\"")), "{om}");
    // The two most recent keep their labels; 1 and 2 gave way.
    assert!(failures.iter().any(|l| l.contains("port=\"3\"")));
    assert!(failures.iter().any(|l| l.contains("port=\"4\"")));
    assert!(
        failures
            .iter()
            .any(|l| l.contains("port=\"other\"") && l.ends_with(" 2"))
    );
    assert!(om.contains("inspector_series_folded_total{metric=\"inspector_bind_failures\"} 2\n"));
}

#[test]
fn the_container_label_is_there_only_when_asked_and_folds_past_the_cap() {
    let in_container = |mut r: Record, c: &str| {
        r.container = Some(c.into());
        r
    };
    let feed = |m: &mut Metrics| {
        m.apply(&in_container(bind(8080, Some(Errno::EADDRINUSE)), "web"));
        m.apply(&bind(8080, Some(Errno::EADDRINUSE)));
        m.apply(&in_container(bind(8081, Some(Errno::EADDRINUSE)), "db"));
        m.apply(&in_container(delivery(1, 11, 9000), "web"));
        m.apply(&delivery(2, 12, 9000));
    };
    let mut off = Metrics::new(Limits::default());
    feed(&mut off);
    let om = off.encode_openmetrics();
    assert!(!om.contains("container="), "{om}");
    assert!(om.contains(
        "inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\"} 2\n"
    ));
    let mut on = Metrics::new(Limits {
        container_label: true,
        ..Limits::default()
    });
    feed(&mut on);
    let om = on.encode_openmetrics();
    let failures = samples(&om, "inspector_bind_failures_total");
    assert_eq!(failures.len(), 3, "{om}");
    assert!(failures.contains(
        &"inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\",container=\"web\"} 1"
    ));
    assert!(failures.contains(
        &"inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\",container=\"\"} 1"
    ));
    let members = samples(&om, "inspector_reuseport_deliveries_total");
    assert_eq!(members.len(), 2, "{om}");
    assert!(
        members
            .iter()
            .any(|l| l.contains("member=\"0\"") && l.contains("container=\"web\"")),
        "{om}"
    );
    assert!(
        members
            .iter()
            .any(|l| l.contains("member=\"1\"") && l.contains("container=\"\""))
    );
    // Past the series cap, containers fold like any label.
    let mut capped = Metrics::new(Limits {
        max_series: 1,
        container_label: true,
        ..Limits::default()
    });
    feed(&mut capped);
    let om = capped.encode_openmetrics();
    assert!(samples(&om, "inspector_bind_failures_total").contains(
        &"inspector_bind_failures_total{proto=\"other\",port=\"other\",errno=\"other\",container=\"other\"} 2"
    ), "{om}");
    assert!(om.contains("container=\"other\"} 1\n"), "{om}");
}

#[test]
fn series_past_the_cap_fold_into_one_other_series() {
    let mut m = Metrics::new(Limits {
        max_ports: 1000,
        max_series: 2,
        ..Limits::default()
    });
    for port in 1..=5 {
        m.apply(&bind(port, Some(Errno::EADDRINUSE)));
    }
    let om = m.encode_openmetrics();
    let failures = samples(&om, "inspector_bind_failures_total");
    assert_eq!(failures.len(), 3, "{om}");
    assert!(failures.contains(
        &"inspector_bind_failures_total{proto=\"other\",port=\"other\",errno=\"other\"} 3"
    ));
}

#[test]
fn deliveries_per_member_and_closed_members_leave_after_one_scrape() {
    let mut m = Metrics::new(Limits::default());
    for _ in 0..3 {
        m.apply(&delivery(0xa, 11, 7000));
    }
    m.apply(&delivery(0xb, 12, 7000));
    let om = m.encode_openmetrics();
    let d = samples(&om, "inspector_reuseport_deliveries_total");
    assert_eq!(d.len(), 2, "{om}");
    assert!(d.contains(&&*format!(
        "inspector_reuseport_deliveries_total{{proto=\"tcp\",port=\"7000\",netns=\"{INIT_NETNS}\",member=\"0\",pid=\"77\",comm=\"srv\"}} 3"
    )));
    assert!(!om.contains("socket="), "no inode by default\n{om}");
    assert!(!om.contains("imbalance"), "{om}");

    // 0xb closes: shown once more, then gone.
    m.apply(&close(0xb));
    let om = m.encode_openmetrics();
    assert_eq!(
        samples(&om, "inspector_reuseport_deliveries_total").len(),
        2
    );
    let om = m.encode_openmetrics();
    assert_eq!(
        samples(&om, "inspector_reuseport_deliveries_total").len(),
        1
    );
}

/// A timewait socket's exit on expiry, as a record.
fn expired() -> Record {
    let mut exit = Record::from_event(
        &EventBuilder::time_wait(inspector_common::kind::TW_EXPIRE, TcpState::TIME_WAIT).build(),
        RecordType::TwExit,
    );
    exit.reason = Some(ExitReason::Expired);
    exit
}

#[test]
fn kernel_view_timewait_and_exits() {
    let mut m = Metrics::new(Limits::default());
    m.apply(&expired());
    let counters = Counters {
        dropped: 4,
        ..Counters::default()
    };
    m.set_kernel(KernelView {
        counters,
        events_read: 10,
        run_time_ns: vec![("sys_exit".into(), 1_500_000_000)],
        timewait: Some(vec![(7, Proto::Tcp, 8080, 5)]),
        ..KernelView::default()
    });
    let om = m.encode_openmetrics();
    for line in [
        "inspector_timewait_exits_total{reason=\"expired\"} 1\n",
        "inspector_timewait_sockets{netns=\"7\",proto=\"tcp\",port=\"8080\"} 5\n",
        "inspector_events_total 10\n",
        "inspector_events_dropped_total 4\n",
        "inspector_kernel_errors_total{kind=\"read_sock\"} 0\n",
        "inspector_bpf_program_run_seconds_total{program=\"sys_exit\"} 1.5\n",
        "# TYPE inspector_timewait_sockets gauge\n",
    ] {
        assert!(om.contains(line), "missing {line:?} in\n{om}");
    }
}

#[test]
fn timewait_counted_in_the_kernel_adds_to_the_records_and_never_goes_back() {
    let mut m = Metrics::new(Limits::default());
    m.apply(&expired());
    let totals = |entered, expired, killed, reused| inspector_common::TwTotals {
        entered,
        expired,
        killed,
        reused,
    };
    m.set_kernel(KernelView {
        timewait_counted: Some(totals(10, 4, 2, 3)),
        ..KernelView::default()
    });
    let om = m.encode_openmetrics();
    for line in [
        "inspector_timewait_entries_total 10\n",
        "inspector_timewait_exits_total{reason=\"expired\"} 5\n",
        "inspector_timewait_exits_total{reason=\"killed\"} 2\n",
        "inspector_timewait_exits_total{reason=\"reused\"} 3\n",
    ] {
        assert!(om.contains(line), "missing {line:?} in\n{om}");
    }
    // A read between a detach and its follow-up saw one kill too many:
    // the counter stays where it was.
    m.set_kernel(KernelView {
        timewait_counted: Some(totals(11, 5, 1, 3)),
        ..KernelView::default()
    });
    let om = m.encode_openmetrics();
    assert!(
        om.contains("inspector_timewait_exits_total{reason=\"killed\"} 2\n"),
        "{om}"
    );
    assert!(om.contains("inspector_timewait_entries_total 11\n"), "{om}");
}

#[test]
fn every_metric_is_prefixed() {
    let mut m = Metrics::new(Limits::default());
    m.apply(&bind(1, Some(Errno::EADDRINUSE)));
    m.apply(&delivery(1, 1, 1));
    let text = m.encode_text();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("inspector_") || line.starts_with("process_"),
            "{line}"
        );
    }
}

#[test]
fn kernel_counts_give_decisions_and_deliveries_and_closed_members_are_forgotten() {
    let mut m = Metrics::new(Limits::default());
    m.count_decisions_in_kernel();
    // A failed bind still arrives as a record: its failure series, not a
    // second decision.
    m.apply(&bind(8080, Some(Errno::EADDRINUSE)));
    let outcome = |phase: u8, errno: i32| inspector_common::Outcome {
        kind: inspector_common::kind::BIND,
        proto: inspector_common::IPPROTO_TCP,
        phase,
        _pad: 0,
        errno,
    };
    let member = |sock: u64, n: u64| KernelMember {
        sock,
        proto: Some(Proto::Tcp),
        lport: 8080,
        netns: INIT_NETNS,
        ino: sock + 1000,
        pid: Some(42),
        comm: Some("srv".into()),
        container: None,
        pod: None,
        deliveries: n,
    };
    let view = |n: u64| KernelView {
        outcomes: Some(vec![
            (outcome(inspector_common::phase::BIND, 0), 3),
            (outcome(inspector_common::phase::BIND, 98), 1),
        ]),
        members: vec![member(1, n), member(2, 2 * n)],
        ..KernelView::default()
    };
    m.set_kernel(view(5));
    let om = m.encode_openmetrics();
    for line in [
        "inspector_bind_decisions_total{proto=\"tcp\",phase=\"bind\",result=\"ok\"} 3\n",
        "inspector_bind_decisions_total{proto=\"tcp\",phase=\"bind\",result=\"EADDRINUSE\"} 1\n",
        "inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\"} 1\n",
        "member=\"0\",pid=\"42\",comm=\"srv\"} 5\n",
        "member=\"1\",pid=\"42\",comm=\"srv\"} 10\n",
    ] {
        assert!(om.contains(line), "missing {line:?} in\n{om}");
    }
    assert!(m.take_forgotten().is_empty());
    // Member 1's listener closes: shown once more, then forgotten.
    let mut close = Record::from_event(
        &EventBuilder::new(inspector_common::kind::STATE)
            .sock(1)
            .build(),
        RecordType::State,
    );
    close.old_state = Some(TcpState::LISTEN);
    close.new_state = Some(TcpState::CLOSE);
    m.apply(&close);
    m.set_kernel(view(6));
    let om = m.encode_openmetrics();
    assert!(
        om.contains("member=\"0\",pid=\"42\",comm=\"srv\"} 6\n"),
        "{om}"
    );
    assert_eq!(m.take_forgotten(), vec![1]);
    m.set_kernel(KernelView {
        members: vec![member(2, 20)],
        ..KernelView::default()
    });
    let om = m.encode_openmetrics();
    assert!(!om.contains("member=\"0\""), "{om}");
    assert!(
        om.contains("member=\"1\",pid=\"42\",comm=\"srv\"} 20\n"),
        "{om}"
    );
}

fn connect(sock: u64, to: u16, lport: u16, errno: i32) -> Record {
    let mut b = EventBuilder::connect(to).lport(lport).sock(sock);
    if errno != 0 {
        b = b.errno(errno).lport(0).rport(0).requested(to);
    }
    crate::model::record::decode_bind(&b.build(), RecordType::Connect)
}

#[test]
fn ephemeral_ports_per_destination_and_the_range_size() {
    use crate::model::ephemeral::PortRange;
    let mut m = Metrics::new(Limits::default());
    for i in 0..3u16 {
        m.apply(&connect(u64::from(i) + 1, 8018, 40000 + i, 0));
    }
    m.apply(&connect(9, 8018, 0, libc::EADDRNOTAVAIL));
    m.apply(&connect(10, 9090, 40000, 0));
    assert_eq!(
        m.client_namespaces().into_iter().collect::<Vec<_>>(),
        vec![INIT_NETNS]
    );
    m.set_kernel(KernelView {
        port_ranges: vec![(
            INIT_NETNS,
            PortRange::parse("40000 40009", "40009").expect("range"),
        )],
        ..KernelView::default()
    });
    let om = m.encode_openmetrics();
    for line in [
        "# TYPE inspector_ephemeral_ports_in_use gauge\n",
        &format!(
            "inspector_ephemeral_ports_in_use{{netns=\"{INIT_NETNS}\",destination=\"127.0.0.1:8018\"}} 3\n"
        ),
        &format!(
            "inspector_ephemeral_ports_in_use{{netns=\"{INIT_NETNS}\",destination=\"127.0.0.1:9090\"}} 1\n"
        ),
        &format!("inspector_ephemeral_port_range_size{{netns=\"{INIT_NETNS}\"}} 9\n"),
        &format!(
            "inspector_connect_failures_total{{proto=\"tcp\",errno=\"EADDRNOTAVAIL\",netns=\"{INIT_NETNS}\",destination=\"127.0.0.1:8018\"}} 1\n"
        ),
    ] {
        assert!(om.contains(line), "missing {line:?} in\n{om}");
    }
    // Both ports toward 8018 close: the gauge drops.
    for sock in [1, 2] {
        let ev = EventBuilder::state(TcpState::ESTABLISHED, TcpState::CLOSE)
            .sock(sock)
            .build();
        m.apply(&crate::model::record::decode_state(&ev));
    }
    let text = m.encode_text();
    assert!(
        text.contains("# TYPE inspector_ephemeral_ports_in_use gauge\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "inspector_ephemeral_ports_in_use{{netns=\"{INIT_NETNS}\",destination=\"127.0.0.1:8018\"}} 1\n"
        )),
        "{text}"
    );
}

#[test]
fn ephemeral_destinations_past_the_series_cap_fold_into_other() {
    let mut m = Metrics::new(Limits {
        max_ports: 1000,
        max_series: 2,
        ..Limits::default()
    });
    // 4 destinations: 3, 2, 1 and 1 ports in use.
    let mut sock = 0;
    for (to, n) in [(7001u16, 3u16), (7002, 2), (7003, 1), (7004, 1)] {
        for i in 0..n {
            sock += 1;
            m.apply(&connect(sock, to, 40000 + i, 0));
        }
    }
    let om = m.encode_openmetrics();
    let series = samples(&om, "inspector_ephemeral_ports_in_use");
    assert_eq!(series.len(), 3, "{om}");
    assert!(
        series
            .iter()
            .any(|l| l.contains("127.0.0.1:7001") && l.ends_with(" 3"))
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains("127.0.0.1:7002") && l.ends_with(" 2"))
    );
    assert!(
        series
            .contains(&"inspector_ephemeral_ports_in_use{netns=\"other\",destination=\"other\"} 2")
    );
    // Two destinations fold: each counted once.
    assert!(
        om.contains(
            "inspector_series_folded_total{metric=\"inspector_ephemeral_ports_in_use\"} 2\n"
        ),
        "{om}"
    );
}

#[test]
fn accept_queues_follow_their_members_labels_and_only_members_read() {
    let mut m = Metrics::new(Limits::default());
    let member = |sock: u64| KernelMember {
        sock,
        proto: Some(Proto::Tcp),
        lport: 8080,
        netns: INIT_NETNS,
        ino: sock + 1000,
        pid: Some(42),
        comm: Some("srv".into()),
        deliveries: 3,
        ..KernelMember::default()
    };
    let queue = |length: u32, drops: u64| AcceptQueue {
        length,
        limit: 4,
        drops,
    };
    // Member 1 is stuck (a full queue, drops); member 2 accepts; a
    // listener that is no member (no delivery yet) shows nothing.
    let queues = |q1: AcceptQueue| {
        HashMap::from([
            ((INIT_NETNS, 1001), q1),
            ((INIT_NETNS, 1002), queue(0, 0)),
            ((INIT_NETNS, 1003), queue(2, 0)),
        ])
    };
    m.set_kernel(KernelView {
        members: vec![member(1), member(2)],
        accept_queues: queues(queue(5, 7)),
        ..KernelView::default()
    });
    let text = m.encode_text();
    let labels = |i: u32| {
        format!(
            "{{proto=\"tcp\",port=\"8080\",netns=\"{INIT_NETNS}\",member=\"{i}\",pid=\"42\",comm=\"srv\"}}"
        )
    };
    for line in [
        "# TYPE inspector_accept_queue_length gauge".to_owned(),
        "# TYPE inspector_accept_queue_limit gauge".to_owned(),
        "# TYPE inspector_accept_queue_drops_total counter".to_owned(),
        format!("inspector_accept_queue_length{} 5", labels(0)),
        format!("inspector_accept_queue_limit{} 4", labels(0)),
        format!("inspector_accept_queue_drops_total{} 7", labels(0)),
        format!("inspector_accept_queue_length{} 0", labels(1)),
        format!("inspector_reuseport_deliveries_total{} 3", labels(0)),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let samples = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("inspector_accept_queue_length{"))
            .count()
    };
    assert_eq!(samples(&text), 2, "{text}");
    // The next scrape could not read the namespace: no queue is shown
    // rather than the last one.
    m.set_kernel(KernelView {
        members: vec![member(1), member(2)],
        ..KernelView::default()
    });
    let text = m.encode_text();
    assert_eq!(samples(&text), 0, "{text}");
    // UDP members have no accept queue.
    let mut udp = member(3);
    udp.proto = Some(Proto::Udp);
    m.set_kernel(KernelView {
        members: vec![udp],
        accept_queues: HashMap::from([((INIT_NETNS, 1003), queue(1, 0))]),
        ..KernelView::default()
    });
    assert_eq!(samples(&m.encode_text()), 0);
}

#[test]
fn accepts_per_process_carry_the_members_labels_and_fold_past_the_limit() {
    use inspector_common::{AcceptCount, AcceptKey};
    let mut m = Metrics::new(Limits {
        max_series: 2,
        ..Limits::default()
    });
    let member = |sock: u64| KernelMember {
        sock,
        proto: Some(Proto::Tcp),
        lport: 8080,
        netns: INIT_NETNS,
        ino: sock + 1000,
        pid: Some(42),
        comm: Some("master".into()),
        deliveries: 9,
        ..KernelMember::default()
    };
    let accepts = |listener: u64, tgid: u32, comm: &str, count: u64| {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        (
            AcceptKey {
                listener,
                tgid,
                _pad: 0,
            },
            AcceptCount {
                count,
                netns: INIT_NETNS,
                lport: 8080,
                _pad: 0,
                comm: c,
            },
        )
    };
    // Member 0's listener is shared by two forked workers; member 1 has
    // one; a listener outside any group (9), the busiest, shows under its
    // port with an empty member.
    let view = |listeners: &[u64]| KernelView {
        members: vec![member(1), member(2)],
        accepts: [
            accepts(1, 100, "worker\n", 7),
            accepts(1, 101, "worker", 2),
            accepts(2, 102, "other", 1),
            accepts(9, 103, "plain", 50),
        ]
        .into_iter()
        .filter(|(k, _)| listeners.contains(&k.listener))
        .collect(),
        ..KernelView::default()
    };
    m.set_kernel(view(&[1, 2, 9]));
    let text = m.encode_text();
    for line in [
        format!(
            "inspector_accepts_total{{proto=\"tcp\",port=\"8080\",netns=\"{INIT_NETNS}\",member=\"\",pid=\"103\",comm=\"plain\"}} 50"
        ),
        format!(
            "inspector_accepts_total{{proto=\"tcp\",port=\"8080\",netns=\"{INIT_NETNS}\",member=\"0\",pid=\"100\",comm=\"worker\\\\x0a\"}} 7"
        ),
        "inspector_series_folded_total{metric=\"inspector_accepts\"} 2".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // The busiest two pairs; the others are forgotten in the kernel
    // rather than summed.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("inspector_accepts_total{"))
            .count(),
        2,
        "{text}"
    );
    let mut forgotten: Vec<_> = m
        .take_forgotten_accepts()
        .iter()
        .map(|k| (k.listener, k.tgid))
        .collect();
    forgotten.sort_unstable();
    assert_eq!(forgotten, [(1, 101), (2, 102)]);
    // The plain listener closes: its counts are forgotten, not inherited
    // by a later listener at the same address.
    let mut close = Record::from_event(
        &EventBuilder::state(TcpState::LISTEN, TcpState::CLOSE)
            .sock(9)
            .lport(8080)
            .build(),
        RecordType::State,
    );
    close.netns = INIT_NETNS;
    (close.old_state, close.new_state) = (Some(TcpState::LISTEN), Some(TcpState::CLOSE));
    m.apply(&close);
    m.set_kernel(view(&[1, 9]));
    let forgotten: Vec<_> = m
        .take_forgotten_accepts()
        .iter()
        .map(|k| (k.listener, k.tgid))
        .collect();
    assert!(forgotten.contains(&(9, 103)), "{forgotten:?}");
    assert!(
        !m.encode_text().contains("comm=\"plain\""),
        "{}",
        m.encode_text()
    );
}
