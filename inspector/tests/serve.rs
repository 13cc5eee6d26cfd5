//! `inspector serve` end to end: the real binary exports what a workload in
//! a fresh network namespace did, `promtool` accepts the exposition, and a
//! real Prometheus server scrapes the same numbers.

mod common;

use std::{
    collections::HashMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    TempDir, addr, inode, needs_root,
    serve::{get, start_prometheus, start_serve_with, tool},
    tcp,
};
use inspector::kernel::netns::in_new_netns;

const CONNECTIONS: usize = 300;
const PORT: u16 = 7011;

/// In a fresh namespace: three SO_REUSEPORT listeners accept
/// [`CONNECTIONS`] connections, then a plain socket fails to bind their
/// port. Returns the namespace inode, accepts per listener inode and the
/// sockets: a listener that closes leaves the metrics after one scrape, so
/// the caller keeps them open while it scrapes.
fn workload() -> (u32, HashMap<u64, u64>, Vec<socket2::Socket>) {
    in_new_netns(|netns| {
        let target = addr(&format!("127.0.0.1:{PORT}"));
        let listeners: Vec<_> = (0..3)
            .map(|_| {
                let s = tcp();
                s.set_reuse_port(true).expect("SO_REUSEPORT");
                s.bind(&target).expect("bind");
                s.listen(1024).expect("listen");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        let mut clients = Vec::new();
        let mut accepted: HashMap<u64, u64> = HashMap::new();
        let mut total = 0;
        let drain = |accepted: &mut HashMap<u64, u64>, total: &mut usize| {
            for l in &listeners {
                while let Ok((_conn, _)) = l.accept() {
                    *accepted.entry(inode(l)).or_default() += 1;
                    *total += 1;
                }
            }
        };
        for _ in 0..CONNECTIONS {
            let c = tcp();
            c.connect(&target).expect("connect");
            clients.push(c);
            drain(&mut accepted, &mut total);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while total < CONNECTIONS && Instant::now() < deadline {
            drain(&mut accepted, &mut total);
        }
        let clash = tcp();
        let refused = clash.bind(&target).expect_err("the port is taken");
        assert_eq!(refused.raw_os_error(), Some(libc::EADDRINUSE));
        let mut open = listeners;
        open.extend(clients);
        (netns, accepted, open)
    })
    .expect("netns")
}

/// `inspector_reuseport_deliveries_total` samples of namespace `netns`:
/// socket inode -> count.
fn deliveries(exposition: &str, netns: u32) -> HashMap<u64, u64> {
    let ns = format!("netns=\"{netns}\"");
    exposition
        .lines()
        .filter(|l| l.starts_with("inspector_reuseport_deliveries_total{") && l.contains(&ns))
        .filter_map(|l| {
            let ino = l
                .split("socket=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((ino, n))
        })
        .collect()
}

/// Scrapes until `done` holds (or 15 s pass); the last exposition.
fn scrape_until(port: u16, accept: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = get(port, "/metrics", accept).unwrap_or_default();
        if done(&body) || Instant::now() >= deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_count_each_member_and_the_failed_bind_and_promtool_accepts_them() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    // Members by inode, to compare with each listener's accepts.
    let Some((mut serve, port)) = start_serve_with(&["--label-socket-inode"]) else {
        return;
    };
    let (netns, accepted, _open) = workload();
    assert_eq!(accepted.values().sum::<u64>(), CONNECTIONS as u64);
    let failure = format!(
        "inspector_bind_failures_total{{proto=\"tcp\",port=\"{PORT}\",errno=\"EADDRINUSE\"}}"
    );
    let text = scrape_until(port, "text/plain", |b| {
        deliveries(b, netns) == accepted && b.contains(&failure)
    });
    assert_eq!(
        deliveries(&text, netns),
        accepted,
        "per-member deliveries equal per-listener accepts\n{text}"
    );
    assert!(text.contains(&failure), "{text}");
    assert!(text.contains("# TYPE inspector_bind_failures_total counter"));
    // The three members of one process: indexes 0, 1 and 2 of the group.
    for member in 0..3 {
        let label = format!("netns=\"{netns}\",member=\"{member}\",");
        assert!(
            text.lines()
                .any(|l| l.starts_with("inspector_reuseport_deliveries_total{")
                    && l.contains(&label)),
            "{label}\n{text}"
        );
    }

    let om = get(
        port,
        "/metrics",
        "application/openmetrics-text; version=1.0.0",
    )
    .expect("OpenMetrics scrape");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(deliveries(&om, netns), accepted);

    if let Some(promtool) = tool("promtool") {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let out = check.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
}

/// Client connections kept open toward one destination are the ports in
/// use toward it (from the kernel's socket table of the namespace the
/// agent watches, which also exports its range size).
#[test]
fn ports_in_use_toward_one_destination_show_per_destination() {
    const N: usize = 20;
    const DEST_PORT: u16 = 7012;
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    // The namespace lives on a thread that holds it until told to end:
    // the agent reads its tables through /proc/PID/task/TID/ns/net.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (end, end_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("netns");
        let netns = inspector::kernel::netns::current_netns().expect("netns inode");
        let target = addr(&format!("127.0.0.1:{DEST_PORT}"));
        let listener = tcp();
        listener.bind(&target).expect("bind");
        listener.listen(64).expect("listen");
        let mut open = vec![];
        for _ in 0..N {
            let c = tcp();
            c.connect(&target).expect("connect");
            open.push(c);
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        ready_tx.send((netns, path)).expect("send");
        let _ = end_rx.recv_timeout(Duration::from_secs(120));
        drop((open, listener));
    });
    let (netns, path) = ready.recv().expect("namespace ready");
    let Some((mut serve, port)) = start_serve_with(&["--netns", &path]) else {
        let _ = end.send(());
        let _ = worker.join();
        return;
    };
    let want = format!(
        "inspector_ephemeral_ports_in_use{{netns=\"{netns}\",destination=\"127.0.0.1:{DEST_PORT}\"}} {N}"
    );
    let text = scrape_until(port, "text/plain", |b| {
        b.lines().any(|l| l == want) && b.contains("inspector_ephemeral_port_range_size{")
    });
    assert!(text.lines().any(|l| l == want), "{want}\n{text}");
    // What the agent is and costs.
    for prefix in [
        "inspector_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "{prefix}\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "inspector_ephemeral_port_range_size{{netns=\"{netns}\"}}"
        )),
        "{text}"
    );
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
    let _ = end.send(());
    worker.join().expect("namespace thread");
}

/// SO_REUSEPORT listeners opened before the agent started (it saw no bind
/// of theirs) still show their owner: from the socket files, as `explain`
/// finds holders.
#[test]
fn listeners_older_than_the_agent_show_their_owner() {
    const DEST_PORT: u16 = 7014;
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let (end, end_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("netns");
        let netns = inspector::kernel::netns::current_netns().expect("netns inode");
        let target = addr(&format!("127.0.0.1:{DEST_PORT}"));
        let listeners: Vec<_> = (0..2)
            .map(|_| {
                let s = tcp();
                s.set_reuse_port(true).expect("SO_REUSEPORT");
                s.bind(&target).expect("bind");
                s.listen(64).expect("listen");
                s
            })
            .collect();
        ready_tx.send(netns).expect("send");
        let _ = go_rx.recv_timeout(Duration::from_secs(120));
        let clients: Vec<_> = (0..40)
            .map(|_| {
                let c = tcp();
                c.connect(&target).expect("connect");
                c
            })
            .collect();
        let _ = done_tx.send(());
        let _ = end_rx.recv_timeout(Duration::from_secs(120));
        drop((clients, listeners));
    });
    let netns = ready.recv().expect("namespace ready");
    let Some((mut serve, port)) = start_serve_with(&[]) else {
        let _ = (go.send(()), end.send(()));
        let _ = worker.join();
        return;
    };
    go.send(()).expect("go");
    done.recv().expect("connected");
    let owned = format!("netns=\"{netns}\",member=");
    let pid = format!(",pid=\"{}\",comm=\"", std::process::id());
    let members = |b: &str| -> Vec<String> {
        b.lines()
            .filter(|l| {
                l.starts_with("inspector_reuseport_deliveries_total{")
                    && l.contains(&owned)
                    && l.contains(&format!("port=\"{DEST_PORT}\""))
            })
            .map(str::to_owned)
            .collect()
    };
    let text = scrape_until(port, "text/plain", |b| {
        let m = members(b);
        m.len() == 2
            && m.iter()
                .all(|l| l.contains(&pid) && !l.contains("comm=\"\""))
    });
    let m = members(&text);
    assert_eq!(m.len(), 2, "{text}");
    for line in m {
        assert!(
            line.contains(&pid) && !line.contains("comm=\"\""),
            "owner of a listener older than the agent: {line}"
        );
    }
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
    let _ = end.send(());
    worker.join().expect("namespace thread");
}

/// Prometheus's instant query: socket inode -> value, for `netns`.
fn query(prom_port: u16, netns: u32) -> HashMap<u64, u64> {
    let Some(body) = get(
        prom_port,
        "/api/v1/query?query=inspector_reuseport_deliveries_total",
        "application/json",
    ) else {
        return HashMap::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return HashMap::new();
    };
    let ns = netns.to_string();
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["metric"]["netns"].as_str() == Some(&ns))
        .filter_map(|s| {
            let ino = s["metric"]["socket"].as_str()?.parse().ok()?;
            let n = s["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((ino, n as u64))
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_the_same_per_member_counts() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let Some((mut serve, port)) = start_serve_with(&["--label-socket-inode"]) else {
        return;
    };
    let (netns, accepted, _open) = workload();
    let tmp = TempDir::new("prometheus");
    let (mut prom, prom_port) = start_prometheus(
        &prometheus,
        &format!(
            "  - job_name: inspector\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
        &tmp.0,
    );
    let data = tmp.0.join("data");
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut seen = HashMap::new();
    while Instant::now() < deadline {
        seen = query(prom_port, netns);
        if seen == accepted {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    prom.stop();
    assert_eq!(
        seen, accepted,
        "Prometheus reports the per-member deliveries the listeners accepted"
    );
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
    drop(tmp);
    assert!(!Path::new(&data).exists());
}

/// What the kernel of the calling thread's namespace says now about the
/// listener with inode `ino`: its accept queue (`rx_queue` of
/// `/proc/net/tcp`, `sk_ack_backlog` for a listener, `get_tcp4_sock()`)
/// and the namespace's `TcpExt` `ListenDrops`, which `tcp_listendrop()`
/// counts with the listener's `sk_drops`.
fn kernel_says(ino: u64) -> (u64, u64) {
    let tcp = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("/proc/net/tcp");
    let queued = tcp
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A") && f.get(9) == Some(&ino.to_string().as_str()))
                .then(|| u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok())
                .flatten()
        })
        .expect("the listener in /proc/net/tcp");
    let drops = common::listen_drops();
    (queued, drops)
}

/// The value of the `metric` sample whose labels hold `socket="ino"`.
fn sample(exposition: &str, metric: &str, ino: u64) -> Option<u64> {
    let socket = format!("socket=\"{ino}\"");
    exposition
        .lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&socket))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// A SO_REUSEPORT worker that never accepts: its accept queue, as the
/// agent exports it, is what the kernel says (`/proc/net/tcp` of its
/// namespace), its limit what listen() was given, and once the queue is
/// full the kernel's drops appear as the member's
/// `inspector_accept_queue_drops_total`. Its partner accepts everything,
/// and `inspector_accepts_total` counts what it accepted.
#[test]
fn a_worker_that_does_not_accept_shows_its_full_queue_and_drops() {
    const DEST_PORT: u16 = 7016;
    const CLIENTS: usize = 40;
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    // (the namespace's path, the stuck and the accepting listener's
    // inodes, somaxconn) once ready; then, on each request, what the
    // kernel says and how many connections the worker accepted.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let (ask, ask_rx) = std::sync::mpsc::channel::<bool>();
    let (said_tx, said) = std::sync::mpsc::channel::<(u64, u64, u64)>();
    let worker = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("netns");
        let target = addr(&format!("127.0.0.1:{DEST_PORT}"));
        let listener = |backlog: i32| {
            let s = tcp();
            s.set_reuse_port(true).expect("SO_REUSEPORT");
            s.bind(&target).expect("bind");
            s.listen(backlog).expect("listen");
            s.set_nonblocking(true).expect("nonblocking");
            s
        };
        // The stuck worker's queue holds what a backlog of 1 allows; the
        // accepting one has room to spare.
        let stuck = listener(1);
        let accepting = listener(128);
        let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .expect("somaxconn")
            .trim()
            .parse()
            .expect("somaxconn");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        ready_tx
            .send((path, inode(&stuck), inode(&accepting), somaxconn))
            .expect("send");
        let _ = go_rx.recv_timeout(Duration::from_secs(120));
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..CLIENTS {
            let c = tcp();
            c.set_nonblocking(true).expect("nonblocking");
            // In progress (EINPROGRESS) until the handshake completes; a
            // SYN the stuck member drops is sent again by the kernel.
            let _ = c.connect(&target);
            clients.push(c);
            while let Ok((conn, _)) = accepting.accept() {
                served.push(conn);
            }
        }
        // Answer until told to end, accepting on the way.
        while let Ok(more) = ask_rx.recv_timeout(Duration::from_secs(120)) {
            while let Ok((conn, _)) = accepting.accept() {
                served.push(conn);
            }
            if !more {
                break;
            }
            let (queued, drops) = kernel_says(inode(&stuck));
            said_tx
                .send((queued, drops, served.len() as u64))
                .expect("send");
        }
        drop((clients, served, accepting, stuck));
    });
    let (path, stuck, accepting, somaxconn) = ready.recv().expect("namespace ready");
    let end = || {
        let _ = ask.send(false);
    };
    let Some((mut serve, port)) = start_serve_with(&["--netns", &path, "--label-socket-inode"])
    else {
        let _ = go.send(());
        end();
        let _ = worker.join();
        return;
    };
    go.send(()).expect("go");
    let kernel = || {
        ask.send(true).expect("ask");
        said.recv().expect("kernel's answer")
    };
    // Ask the kernel around each scrape: the queue must read the same
    // before and after (nobody accepts, nobody gives up); the member's
    // drops include every ListenDrop the namespace counted before it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, before, after) = loop {
        let before = kernel();
        let text = get(port, "/metrics", "text/plain").unwrap_or_default();
        let after = kernel();
        let length = sample(&text, "inspector_accept_queue_length", stuck);
        let drops = sample(&text, "inspector_accept_queue_drops_total", stuck);
        let took = sample(&text, "inspector_accepts_total", accepting);
        let settled = before.0 == after.0 && length == Some(after.0) && before.2 == after.2;
        if (settled && drops.is_some_and(|d| d > 0) && took == Some(after.2))
            || Instant::now() >= deadline
        {
            break (text, before, after);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let length = sample(&text, "inspector_accept_queue_length", stuck);
    let limit = sample(&text, "inspector_accept_queue_limit", stuck);
    let drops = sample(&text, "inspector_accept_queue_drops_total", stuck);
    eprintln!(
        "stuck member: queue {length:?}/{limit:?}, drops {drops:?}; kernel: queue {} then {}, ListenDrops {} then {}",
        before.0, after.0, before.1, after.1
    );
    assert_eq!(before.0, after.0, "the stuck queue stays as it is");
    assert_eq!(length, Some(after.0), "queue as /proc/net/tcp says\n{text}");
    assert_eq!(limit, Some(1.min(somaxconn)), "limit as listen() set it");
    // Full: the kernel holds one more than the limit
    // (`sk_acceptq_is_full()` is `ack_backlog > max_ack_backlog`).
    assert_eq!(length, limit.map(|l| l + 1), "the queue is full");
    let drops = drops.expect("a drops sample");
    assert!(drops > 0, "drops once the queue is full\n{text}");
    assert!(
        drops >= before.1,
        "every ListenDrop of the namespace is the stuck member's: {drops} < {}",
        before.1
    );
    // The accepting worker's accepts, counted in the kernel by listener
    // and process, are the ones it made; the stuck one has none.
    let pid = format!("pid=\"{}\"", std::process::id());
    let took: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("inspector_accepts_total{"))
        .filter(|l| l.contains(&format!("socket=\"{accepting}\"")))
        .collect();
    eprintln!(
        "accepting member: {took:?}; its process accepted {}",
        after.2
    );
    assert!(after.2 > 0, "the accepting member got connections");
    assert_eq!(took.len(), 1, "one accepting process\n{text}");
    assert!(took[0].contains(&pid), "{}", took[0]);
    assert_eq!(
        sample(&text, "inspector_accepts_total", accepting),
        Some(after.2),
        "accepts as the worker counted them\n{text}"
    );
    assert_eq!(sample(&text, "inspector_accepts_total", stuck), None);
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
    end();
    worker.join().expect("namespace thread");
}

/// A listener in no SO_REUSEPORT group (one listener shared by forked
/// workers, the shared accept queue) shows its accepts by process under
/// its port with an empty member: as many as the process made.
#[test]
fn accepts_from_a_plain_listener_show_under_its_port() {
    const PLAIN_PORT: u16 = 7017;
    const CLIENTS: u64 = 12;
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<bool>();
    let (done_tx, done) = std::sync::mpsc::channel::<u64>();
    let (end, end_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("netns");
        let target = addr(&format!("127.0.0.1:{PLAIN_PORT}"));
        let listener = tcp();
        listener.bind(&target).expect("bind");
        listener.listen(64).expect("listen");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        ready_tx.send(path).expect("send");
        if !go_rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or(false)
        {
            return;
        }
        let mut held = Vec::new();
        for _ in 0..CLIENTS {
            let c = tcp();
            c.connect(&target).expect("connect");
            let (conn, _) = listener.accept().expect("accept");
            held.push((c, conn));
        }
        done_tx.send(held.len() as u64).expect("send");
        let _ = end_rx.recv_timeout(Duration::from_secs(120));
        drop((held, listener));
    });
    let path = ready.recv().expect("namespace ready");
    let Some((mut serve, port)) = start_serve_with(&["--netns", &path]) else {
        let _ = go.send(false);
        let _ = worker.join();
        return;
    };
    go.send(true).expect("go");
    let accepted = done.recv().expect("accepted");
    let want = format!(
        "port=\"{PLAIN_PORT}\",netns=\"{}\",member=\"\",pid=\"{}\",",
        inode(&std::fs::File::open(&path).expect("ns")),
        std::process::id()
    );
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("inspector_accepts_total{") && l.contains(&want))
            .map(str::to_owned)
    };
    let text = scrape_until(port, "text/plain", |t| {
        line(t).is_some_and(|l| l.ends_with(&format!(" {accepted}")))
    });
    assert_eq!(accepted, CLIENTS);
    assert!(
        line(&text).is_some_and(|l| l.ends_with(&format!(" {accepted}"))),
        "{want} with {accepted} accepts in\n{text}"
    );
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
    let _ = end.send(());
    worker.join().expect("namespace thread");
}
