//! Label hygiene: which values keep their own series, what folds, how
//! folds are counted, and that no label value grows without bound.

use super::*;

/// The value of the sample `line` (the text after the last space).
fn value(line: &str) -> u64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer value: {line}"))
}

fn folded(om: &str, metric: &str) -> u64 {
    let prefix = format!("inspector_series_folded_total{{metric=\"{metric}\"}} ");
    om.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().expect("a count"))
}

/// Label values of every sample line, unescaped (`\"`, `\\`, `\n`).
fn label_values(om: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in om.lines().filter(|l| !l.starts_with('#')) {
        let mut chars = line.chars();
        let mut current: Option<String> = None;
        while let Some(c) = chars.next() {
            match (&mut current, c) {
                (None, '"') => current = Some(String::new()),
                (Some(v), '\\') => v.push(chars.next().unwrap_or('\\')),
                (Some(_), '"') => out.extend(current.take()),
                (Some(v), c) => v.push(c),
                (None, _) => {}
            }
        }
    }
    out
}

#[test]
fn a_newly_failing_port_gets_its_own_label_after_300_other_ports_failed() {
    let mut m = Metrics::new(Limits::default());
    // One tenant's 300 ports fail, one after the other.
    for port in 20_000..20_300 {
        m.apply(&bind(port, Some(Errno::EADDRINUSE)));
    }
    // Then another tenant's service cannot get its port.
    m.apply(&bind(8080, Some(Errno::EADDRINUSE)));
    let om = m.encode_openmetrics();
    let failures = samples(&om, "inspector_bind_failures_total");
    assert!(
        failures.contains(
            &"inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\"} 1"
        ),
        "{om}"
    );
    // 256 ports by number (the 255 latest of the tenant and 8080), the 45
    // oldest folded.
    assert_eq!(failures.len(), 257, "{om}");
    let other = failures
        .iter()
        .find(|l| l.contains("port=\"other\""))
        .expect("an other series");
    assert_eq!(value(other), 45);
    assert!(!om.contains("port=\"20000\""));
    assert!(om.contains("port=\"20299\""));
    assert_eq!(folded(&om, "inspector_bind_failures"), 45);
    // Nothing is lost: the series add up to every failure.
    assert_eq!(failures.iter().map(|l| value(l)).sum::<u64>(), 301);
}

#[test]
fn a_port_that_fails_again_is_kept_over_one_that_failed_once() {
    let mut m = Metrics::new(Limits {
        max_ports: 2,
        ..Limits::default()
    });
    for port in [1, 2, 1, 3] {
        m.apply(&bind(port, Some(Errno::EADDRINUSE)));
    }
    let om = m.encode_openmetrics();
    assert!(om.contains("port=\"1\",errno=\"EADDRINUSE\"} 2\n"), "{om}");
    assert!(om.contains("port=\"3\",errno=\"EADDRINUSE\"} 1\n"), "{om}");
    assert!(
        om.contains("port=\"other\",errno=\"EADDRINUSE\"} 1\n"),
        "{om}"
    );
}

#[test]
fn a_reconnecting_reuseport_workload_keeps_its_series_count() {
    let mut m = Metrics::new(Limits::default());
    let mut live: std::collections::VecDeque<u64> = (1..=3).collect();
    let mut next = 4;
    let mut label_sets = HashSet::new();
    for sock in &live {
        m.apply(&delivery(*sock, *sock + 100, 7000));
    }
    for _ in 0..20 {
        // One worker closes its listener and opens a new one.
        let gone = live.pop_front().expect("a member");
        m.apply(&close(gone));
        m.apply(&delivery(next, next + 100, 7000));
        live.push_back(next);
        next += 1;
        for _ in 0..2 {
            let om = m.encode_openmetrics();
            for l in samples(&om, "inspector_reuseport_deliveries_total") {
                label_sets.insert(l.rsplit_once(' ').expect("a sample").0.to_owned());
            }
        }
        let om = m.encode_openmetrics();
        assert_eq!(
            samples(&om, "inspector_reuseport_deliveries_total").len(),
            3,
            "{om}"
        );
    }
    // Three members and, while one is leaving, a fourth: 20 reconnects
    // make no new series.
    assert_eq!(label_sets.len(), 4, "{label_sets:#?}");
}

#[test]
fn the_socket_inode_is_a_label_only_when_asked() {
    let mut m = Metrics::new(Limits {
        socket_inode_label: true,
        ..Limits::default()
    });
    m.apply(&delivery(1, 11, 7000));
    let om = m.encode_openmetrics();
    assert!(
        om.contains("member=\"0\",pid=\"77\",comm=\"srv\",socket=\"11\"} 1\n"),
        "{om}"
    );
}

#[test]
fn no_label_value_is_longer_than_the_bound() {
    for kubernetes in [false, true] {
        no_label_value_is_longer_than_the_bound_with(kubernetes);
    }
}

fn no_label_value_is_longer_than_the_bound_with(kubernetes: bool) {
    let long = format!("a\"b\\c\n\u{1b}[2J{}", "é".repeat(300));
    let mut m = Metrics::new(Limits {
        container_label: true,
        kubernetes,
        ..Limits::default()
    });
    let from_pod = |r: &mut Record| {
        r.container = Some(long.clone());
        r.k8s_namespace = Some(long.clone());
        r.k8s_pod = Some(long.clone());
        r.k8s_container = Some(long.clone());
    };
    let mut r = bind(8080, Some(Errno::EADDRINUSE));
    from_pod(&mut r);
    r.comm = Some(long.clone());
    r.explanation = Some(long.clone());
    m.apply(&r);
    let mut c = connect(3, 7001, 0, libc::EADDRNOTAVAIL);
    from_pod(&mut c);
    m.apply(&c);
    let mut d = delivery(1, 11, 7000);
    d.comm = Some(long.clone());
    from_pod(&mut d);
    m.apply(&d);
    let mut view = KernelView {
        run_time_ns: vec![(long.clone(), 1)],
        timewait: Some(vec![(INIT_NETNS, Proto::Tcp, 8080, 1)]),
        members: vec![KernelMember {
            sock: 2,
            proto: Some(Proto::Tcp),
            lport: 7000,
            comm: Some(long.clone()),
            container: Some(long.clone()),
            pod: Some(std::sync::Arc::new(crate::kernel::pods::Pod {
                namespace: long.clone(),
                pod: long.clone(),
                container: Some(long.clone()),
            })),
            ..KernelMember::default()
        }],
        ..KernelView::default()
    };
    view.netns.names.insert(INIT_NETNS, long.clone());
    view.netns
        .pods
        .insert(INIT_NETNS, (long.clone(), long.clone()));
    m.set_kernel(view);
    m.set_owners(0, 7000, &[(0, 1, long.clone())]);
    m.set_build(BuildInfo {
        version: long.clone(),
        commit: long.clone(),
        mode: "fentry".into(),
        fallback_reason: "none".into(),
        kernel: long.clone(),
        missing_hooks: 0,
    });
    let om = m.encode_openmetrics();
    let values = label_values(&om);
    assert!(values.len() > 20, "{om}");
    for v in values {
        assert!(v.len() <= LABEL_MAX, "{} bytes: {v}", v.len());
        assert!(!v.chars().any(char::is_control), "{v:?}");
    }
}

#[test]
fn connect_failures_name_their_destination_up_to_a_bound() {
    let mut m = Metrics::new(Limits {
        max_destinations: 2,
        ..Limits::default()
    });
    for (i, to) in [7001u16, 7002, 7003, 7004, 7005].into_iter().enumerate() {
        m.apply(&connect(i as u64 + 1, to, 0, libc::EADDRNOTAVAIL));
    }
    let om = m.encode_openmetrics();
    let failures = samples(&om, "inspector_connect_failures_total");
    assert_eq!(failures.len(), 3, "{om}");
    for dest in ["127.0.0.1:7004", "127.0.0.1:7005"] {
        assert!(
            failures
                .iter()
                .any(|l| l.contains(&format!("destination=\"{dest}\"")) && value(l) == 1),
            "{dest}: {om}"
        );
    }
    assert!(failures.contains(
        &"inspector_connect_failures_total{proto=\"tcp\",errno=\"EADDRNOTAVAIL\",netns=\"other\",destination=\"other\"} 3"
    ));
    assert_eq!(folded(&om, "inspector_connect_failures"), 3);
}

#[test]
fn gauge_folds_count_once_per_label_set_whoever_scrapes() {
    let mut m = Metrics::new(Limits {
        max_ports: 1,
        ..Limits::default()
    });
    let view = |ports: &[u16]| KernelView {
        timewait: Some(
            ports
                .iter()
                .map(|&p| (INIT_NETNS, Proto::Tcp, p, 10 - u64::from(p % 10)))
                .collect(),
        ),
        ..KernelView::default()
    };
    m.set_kernel(view(&[8081, 8082, 8083]));
    let om = m.encode_openmetrics();
    assert!(om.contains(&format!(
        "inspector_timewait_sockets{{netns=\"{INIT_NETNS}\",proto=\"tcp\",port=\"8081\"}} 9\n"
    )));
    assert!(om.contains(&format!(
        "inspector_timewait_sockets{{netns=\"{INIT_NETNS}\",proto=\"tcp\",port=\"other\"}} 15\n"
    )));
    assert_eq!(folded(&om, "inspector_timewait_sockets"), 2, "{om}");
    // A second scraper sees the same folds: no new count.
    for _ in 0..3 {
        m.set_kernel(view(&[8081, 8082, 8083]));
        let om = m.encode_openmetrics();
        assert_eq!(folded(&om, "inspector_timewait_sockets"), 2);
    }
    // A new port folds: counted once.
    m.set_kernel(view(&[8081, 8082, 8083, 8084]));
    let om = m.encode_openmetrics();
    assert_eq!(folded(&om, "inspector_timewait_sockets"), 3);
}

#[test]
fn members_older_than_the_agent_get_their_owner_from_the_socket_files() {
    let mut m = Metrics::new(Limits::default());
    let old = |sock: u64| KernelMember {
        sock,
        proto: Some(Proto::Tcp),
        lport: 7000,
        netns: INIT_NETNS,
        ino: sock + 100,
        deliveries: 4,
        ..KernelMember::default()
    };
    m.set_kernel(KernelView {
        members: vec![old(1), old(2)],
        ..KernelView::default()
    });
    assert_eq!(m.members_without_owner(), vec![(INIT_NETNS, 7000)]);
    let om = m.encode_openmetrics();
    assert!(om.contains("member=\"0\",pid=\"\",comm=\"\"} 4\n"), "{om}");
    // The task_file walk found socket 101 in pid 9's files; 102 is in
    // none (a process gone, or another namespace's view).
    m.set_owners(INIT_NETNS, 7000, &[(101, 9, "nginx".into())]);
    let om = m.encode_openmetrics();
    assert!(
        om.contains("member=\"0\",pid=\"9\",comm=\"nginx\"} 4\n"),
        "{om}"
    );
    assert!(om.contains("member=\"1\",pid=\"\",comm=\"\"} 4\n"), "{om}");
    // Each group is looked for once.
    assert!(m.members_without_owner().is_empty());
}

#[test]
fn build_info_and_process_metrics() {
    let mut m = Metrics::new(Limits::default());
    m.set_build(BuildInfo {
        version: "1.2.3".into(),
        commit: "abc".into(),
        mode: "tracepoint".into(),
        fallback_reason: "fentry_refused".into(),
        kernel: "6.1.0-18-amd64".into(),
        missing_hooks: 2,
    });
    m.set_agent(AgentView {
        process: Some(ProcessStats {
            cpu_seconds: 1.5,
            resident_bytes: 4096,
            virtual_bytes: 8192,
            open_fds: 7,
            max_fds: 1024,
            start_time_seconds: 1.7e9,
        }),
        ..AgentView::default()
    });
    let text = m.encode_text();
    for line in [
        "inspector_build_info{version=\"1.2.3\",commit=\"abc\",mode=\"tracepoint\",fallback_reason=\"fentry_refused\",kernel=\"6.1.0-18-amd64\"} 1\n",
        "inspector_hooks_missing 2\n",
        "# TYPE process_cpu_seconds_total counter\n",
        "process_cpu_seconds_total 1.5\n",
        "process_resident_memory_bytes 4096\n",
        "process_virtual_memory_bytes 8192\n",
        "process_open_fds 7\n",
        "process_max_fds 1024\n",
        "process_start_time_seconds 1700000000.0\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
