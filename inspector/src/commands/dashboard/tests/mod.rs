//! Snapshots of every pane, stepped with fixture inputs (no terminal, no
//! sleeps): kernel events go through the real tracker into the app.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use inspector_common::{flag, kind, phase};
use ratatui::{Terminal, backend::TestBackend};

use super::{
    app::{App, Header, Input, Pane, SortKey, ViewFilter},
    ui,
};
use crate::{
    fixture::EventBuilder,
    kernel::probe::{Counters, Mode},
    kernel::{Phase, TcpState},
    model::record::Record,
    model::tracker::Tracker,
    scenario::{CATALOG, EvidenceCheck, ScenarioResult, Verdict},
};

mod ephemeral;

const NS: u32 = 4026532999;
const SEC: u64 = 1_000_000_000;

/// Every fixture socket lives in one namespace, its file inode derived
/// from its id.
fn on(b: EventBuilder, sock: u64, ts: u64) -> EventBuilder {
    b.netns(NS).sock(sock).ino(sock & 0xffff).at(ts)
}

/// Raised inside `name`'s own syscall.
fn by(b: EventBuilder, pid: u32, name: &str) -> EventBuilder {
    b.owner(pid, name).tid(pid).flags(flag::SYSCALL)
}

/// `name` binding 127.0.0.1:`port`.
fn bind(sock: u64, ts: u64, port: u16, pid: u32, name: &str) -> EventBuilder {
    by(on(EventBuilder::bind(port), sock, ts), pid, name)
}

/// The call failed with `errno`: the socket got no local port.
fn failed(b: EventBuilder, errno: i32) -> EventBuilder {
    b.errno(errno).lport(0)
}

/// A server restarted over its TIME_WAIT, a reuseport group, UDP binds.
fn fixture() -> Vec<Record> {
    let mut events = vec![
        bind(0x1001, SEC, 8080, 4242, "server").build(),
        bind(0x1001, SEC + 1000, 8080, 4242, "server")
            .phase(phase::LISTEN)
            .build(),
        by(
            on(
                EventBuilder::state(TcpState::CLOSE, TcpState::LISTEN).lport(8080),
                0x1001,
                SEC + 2000,
            ),
            4242,
            "server",
        )
        .build(),
        by(
            on(EventBuilder::connect(8080).lport(40100), 0x2001, 2 * SEC),
            77,
            "curl",
        )
        .build(),
        on(
            EventBuilder::state(TcpState::SYN_RECV, TcpState::ESTABLISHED).ports(8080, 40100),
            0x3001,
            2 * SEC + 10,
        )
        .build(),
        // The server's side of that connection ends in TIME_WAIT.
        on(
            EventBuilder::time_wait(kind::TW_ARM, TcpState::TIME_WAIT).ports(8080, 40100),
            0x4001,
            3 * SEC,
        )
        .build(),
        failed(
            bind(0x5001, 4 * SEC, 8080, 4243, "server"),
            libc::EADDRINUSE,
        )
        .build(),
        bind(0x5002, 4 * SEC + 5, 8080, 4244, "server")
            .flags(flag::REUSEADDR)
            .build(),
        failed(
            bind(0x5002, 4 * SEC + 9, 8080, 4244, "server"),
            libc::EADDRINUSE,
        )
        .phase(phase::LISTEN)
        .flags(flag::REUSEADDR)
        .build(),
    ];
    // A UDP SO_REUSEPORT group of three workers.
    for (i, n) in [(0u64, 40u32), (1, 25), (2, 35)] {
        let sock = 0x6000 + i;
        let pid = 900 + i as u32;
        events.push(
            bind(sock, 5 * SEC + i, 5353, pid, "worker")
                .udp()
                .flags(flag::REUSEPORT)
                .build(),
        );
        for j in 0..n {
            let delivery = EventBuilder::new(kind::REUSEPORT)
                .udp()
                .ports(5353, 30000 + j as u16)
                .flags(flag::OWNER_KNOWN)
                .owner(pid, "worker")
                .aux(0xabc);
            events.push(on(delivery, sock, 6 * SEC + u64::from(j)).build());
        }
    }
    let mut tracker = Tracker::new();
    let mut out = Vec::new();
    for e in &events {
        tracker.apply(e, &mut out);
    }
    // What the annotator attaches to a failure on a live system.
    for r in out
        .iter_mut()
        .filter(|r| r.is_failure() && r.phase == Some(Phase::Listen))
    {
        r.explanation = Some(
            "inet_csk_get_port: a LISTEN holder conflicts even with SO_REUSEADDR on both; \
             held by LISTEN 127.0.0.1:8080 (pid 4242 server)"
                .into(),
        );
    }
    out
}

fn app_with(records: Vec<Record>) -> App {
    let header = Header {
        mode: Mode::Tracepoint,
        probes: 7,
        filters: "none".into(),
    };
    let mut app = App::new(header, true);
    app.update(Input::Records(records));
    app.update(Input::Tick {
        counters: Counters {
            emitted: 120,
            dropped: 0,
            read_errors: 0,
            ..Counters::default()
        },
        now_ns: 1,
    });
    app
}

fn key(app: &mut App, code: KeyCode) {
    app.update(Input::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| ui::render(app, f)).expect("draw");
    format!("{}", t.backend())
}

fn scenario_result() -> ScenarioResult {
    let s = &CATALOG[0];
    ScenarioResult {
        number: s.number,
        name: s.name,
        title: s.title,
        claim: s.claim,
        source: s.source,
        verdict: Some(Verdict::Confirmed),
        reason: None,
        advice: None,
        observed: serde_json::json!({ "summary": "restart without SO_REUSEADDR: EADDRINUSE" }),
        evidence: Vec::new(),
        evidence_total: 19,
        evidence_check: EvidenceCheck {
            agrees: true,
            checked: 2,
            mismatches: Vec::new(),
            unchecked: Vec::new(),
        },
        explanation:
            "inet_csk_get_port() finds the port's bind bucket still owned by the timewait socket."
                .into(),
        namespaces: vec![NS],
        duration_ms: 180,
        error: None,
    }
}

#[test]
fn empty_dashboard() {
    let app = app_with(Vec::new());
    insta::assert_snapshot!("empty_80x24", screen(&app, 80, 24));
}

#[test]
fn every_pane_at_both_sizes() {
    let mut app = app_with(fixture());
    app.update(Input::ScenarioFinished(Box::new(scenario_result())));
    app.namespaces = None;
    for (i, pane) in Pane::ALL.iter().enumerate() {
        key(&mut app, KeyCode::Char(char::from(b'1' + i as u8)));
        assert_eq!(app.pane, *pane);
        for (w, h) in [(80, 24), (160, 48)] {
            let name = format!(
                "{}_{w}x{h}",
                pane.title().replace([' ', '&'], "_").to_lowercase()
            );
            insta::assert_snapshot!(name, screen(&app, w, h));
        }
    }
}

#[test]
fn failures_stand_out_and_the_detail_follows_the_selection() {
    let mut app = app_with(fixture());
    let s = screen(&app, 100, 30);
    // The two failures are pinned above the list: the newest decision
    // comes after them.
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char('j'));
    let s2 = screen(&app, 100, 30);
    assert!(s.contains("EADDRINUSE"), "{s}");
    assert!(s.contains("2 failed"), "{s}");
    // The newest list row is selected now; three down is the
    // listen-phase failure, and the detail follows.
    let s = s2;
    assert!(s.contains("udp bind() asked 127.0.0.1:5353 -> ok"), "{s}");
    for _ in 0..3 {
        key(&mut app, KeyCode::Char('j'));
    }
    let s = screen(&app, 100, 30);
    assert!(
        s.contains("tcp listen() asked 127.0.0.1:8080 -> EADDRINUSE"),
        "{s}"
    );
    assert!(s.contains("why: inet_csk_get_port: a LISTEN holder"), "{s}");
}

#[test]
fn filter_prompt_pause_clear_and_help() {
    let mut app = app_with(fixture());
    key(&mut app, KeyCode::Char('/'));
    for c in "pid 4243".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.view, Some(ViewFilter::Pid(4243)));
    assert_eq!(app.visible_decisions().len(), 1);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.view, None);
    key(&mut app, KeyCode::Char('p'));
    let before = app.model.records;
    app.update(Input::Records(fixture()));
    assert_eq!(app.model.records, before, "paused: nothing taken in");
    key(&mut app, KeyCode::Char('p'));
    key(&mut app, KeyCode::Char('c'));
    assert!(app.model.decisions.is_empty());
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24));
    key(&mut app, KeyCode::Char('x'));
    assert!(!app.help);
}

#[test]
fn enter_on_a_scenario_asks_to_run_it_once() {
    let mut app = app_with(Vec::new());
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('j'));
    let actions = app.update(Input::Key(KeyEvent::new(
        KeyCode::Enter,
        KeyModifiers::NONE,
    )));
    assert!(matches!(actions.as_slice(), [super::app::Action::RunScenario(s)] if s.number == 2));
    let again = app.update(Input::Key(KeyEvent::new(
        KeyCode::Enter,
        KeyModifiers::NONE,
    )));
    assert!(again.is_empty(), "one scenario at a time");
    app.update(Input::ScenarioStarted {
        namespaces: vec![7],
    });
    let mut other = fixture();
    other.truncate(3);
    app.update(Input::Records(other));
    assert!(
        app.visible_decisions().is_empty(),
        "records of other namespaces are not shown"
    );
    let q = app.update(Input::Key(KeyEvent::new(
        KeyCode::Char('q'),
        KeyModifiers::NONE,
    )));
    assert!(matches!(q.as_slice(), [super::app::Action::Quit]));
}

#[test]
fn a_burst_keeps_memory_bounded() {
    let mut app = app_with(Vec::new());
    let one = fixture();
    for _ in 0..2_000 {
        app.update(Input::Records(one.clone()));
    }
    assert!(app.model.decisions.len() <= super::model::RECENT);
    assert!(app.model.groups.values().all(|m| m.len() == 3));
}

fn enter(app: &mut App) {
    key(app, KeyCode::Enter);
}

#[test]
fn detail_view_of_a_failed_bind_over_a_listener() {
    let mut app = app_with(fixture());
    // The newest failure is pinned first and selected.
    enter(&mut app);
    assert!(app.detail.is_some());
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("Holders of tcp port 8080"), "{s}");
        assert!(s.contains("LISTEN"), "{s}");
        insta::assert_snapshot!(format!("detail_listener_{w}x{h}"), s);
    }
    // It scrolls, and Esc goes back to the list.
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.detail.as_ref().map(|d| d.scroll), Some(1));
    key(&mut app, KeyCode::PageUp);
    assert_eq!(app.detail.as_ref().map(|d| d.scroll), Some(0));
    key(&mut app, KeyCode::Esc);
    assert!(app.detail.is_none());
    assert_eq!(app.pane, Pane::Binds);
}

/// A client that bound source port 8090 explicitly closed first: its side
/// of the connection sits in TIME_WAIT, and binding 8090 again fails.
fn time_wait_fixture() -> Vec<Record> {
    let events = [
        by(
            on(EventBuilder::connect(9000).lport(8090), 0x7001, SEC),
            55,
            "client",
        )
        .build(),
        on(
            EventBuilder::state(TcpState::FIN_WAIT2, TcpState::CLOSE).ports(8090, 9000),
            0x7001,
            2 * SEC,
        )
        .build(),
        on(
            EventBuilder::time_wait(kind::TW_ARM, TcpState::TIME_WAIT).ports(8090, 9000),
            0x7002,
            2 * SEC,
        )
        .build(),
        failed(bind(0x7003, 3 * SEC, 8090, 56, "client"), libc::EADDRINUSE).build(),
    ];
    let mut tracker = Tracker::new();
    let mut out = Vec::new();
    for e in &events {
        tracker.apply(e, &mut out);
    }
    for r in out.iter_mut().filter(|r| r.is_failure()) {
        r.explanation = Some(
            "inet_csk_get_port: a TIME_WAIT holder conflicts unless both have SO_REUSEADDR; \
             held by TIME_WAIT 127.0.0.1:8090 (no owner); set SO_REUSEADDR on the new socket \
             (the timewait socket kept the flags of the closed one)"
                .into(),
        );
    }
    out
}

#[test]
fn detail_view_of_a_failed_bind_over_time_wait_names_the_last_owner() {
    let mut app = app_with(time_wait_fixture());
    enter(&mut app);
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("last owner pid 55 client"), "{s}");
        assert!(s.contains("(was 55 client)"), "{s}");
        insta::assert_snapshot!(format!("detail_time_wait_{w}x{h}"), s);
    }
}

#[test]
fn identical_decisions_fold_and_failures_stay_pinned() {
    let mut records = fixture();
    let mut tracker = Tracker::new();
    for i in 0..88u64 {
        let ev = by(
            on(
                EventBuilder::connect(8080).lport(41000 + i as u16),
                0x8000 + i,
                7 * SEC + i,
            ),
            77,
            "curl",
        )
        .build();
        tracker.apply(&ev, &mut records);
    }
    let mut app = app_with(records);
    let rows = app.decision_rows();
    assert_eq!(
        (rows[0].count, rows[0].record.comm.as_deref()),
        (88, Some("curl"))
    );
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("x88"), "{s}");
        assert!(s.contains("Failures, last 5 min: EADDRINUSE x2"), "{s}");
        insta::assert_snapshot!(format!("folded_{w}x{h}"), s);
    }
    // The filter takes several terms at once.
    key(&mut app, KeyCode::Char('/'));
    for c in "port 8080 errno eaddrinuse".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.visible_decisions().len(), 2);
    assert_eq!(
        ViewFilter::parse("netns blue pid 7"),
        Some(ViewFilter::All(vec![
            ViewFilter::Netns("blue".into()),
            ViewFilter::Pid(7)
        ]))
    );
}

#[test]
fn same_port_groups_in_two_namespaces_are_told_apart() {
    const OTHER: u32 = 4026533111;
    let mut records = Vec::new();
    let mut tracker = Tracker::new();
    for (netns, n) in [(NS, 5u64), (OTHER, 3)] {
        for i in 0..n {
            let delivery = EventBuilder::new(kind::REUSEPORT)
                .ports(8020, 40000 + i as u16)
                .flags(flag::OWNER_KNOWN)
                .owner(300, "scenario-11")
                .aux(0xabc)
                .netns(netns)
                .sock(0x9000 + u64::from(netns & 0xf) * 16 + i % 2)
                .ino(100 + i % 2)
                .at(SEC + i)
                .build();
            tracker.apply(&delivery, &mut records);
        }
    }
    let mut app = app_with(records);
    app.update(Input::NetnsNames([(OTHER, "blue".to_owned())].into()));
    assert!(app.multi_ns);
    key(&mut app, KeyCode::Char('3'));
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("tcp 127.0.0.1:8020 netns blue"), "{s}");
        assert!(s.contains("tcp 127.0.0.1:8020 netns 4026532999"), "{s}");
        insta::assert_snapshot!(format!("two_namespaces_{w}x{h}"), s);
    }
    // A group's detail: per-member deliveries over time.
    enter(&mut app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("Reuseport group tcp 127.0.0.1:8020"), "{s}");
    assert!(s.contains("delivered"), "{s}");
}

/// The header counts the failures of the namespaces the view follows;
/// every namespace's count is in the help.
#[test]
fn the_header_counts_the_failures_of_the_namespaces_it_follows() {
    const OTHER: u32 = 4026533111;
    let mut records = Vec::new();
    let mut tracker = Tracker::new();
    for (netns, n) in [(NS, 2u64), (OTHER, 19)] {
        for i in 0..n {
            let e = failed(
                bind(
                    0x7000 + u64::from(netns & 0xff) * 64 + i,
                    SEC + i,
                    8080,
                    50,
                    "server",
                ),
                libc::EADDRINUSE,
            )
            .netns(netns)
            .build();
            tracker.apply(&e, &mut records);
        }
    }
    let mut app = app_with(records);
    let header = |app: &App| {
        screen(app, 80, 24)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header(&app).contains(" 21 failed "), "{}", header(&app));
    app.update(Input::FollowNamespaces(vec![NS]));
    assert!(header(&app).contains(" 2 failed "), "{}", header(&app));
    for (w, h) in [(80, 24), (160, 48)] {
        insta::assert_snapshot!(format!("header_scoped_{w}x{h}"), screen(&app, w, h));
    }
    key(&mut app, KeyCode::Char('?'));
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("failed calls: 2 in the namespaces shown, 21 in all namespaces"),
        "{s}"
    );
}

#[test]
fn sort_keys_show_in_the_titles() {
    let mut app = app_with(fixture());
    key(&mut app, KeyCode::Char('2'));
    assert_eq!(app.port_sort, SortKey::Busiest);
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.port_sort, SortKey::TimeWait);
    let s = screen(&app, 80, 24);
    assert!(s.contains("sort: TIME_WAIT (s)"), "{s}");
    insta::assert_snapshot!("sort_ports_80x24", s);
    // A port's detail lists its sockets.
    enter(&mut app);
    let s = screen(&app, 160, 48);
    assert!(s.contains("TIME_WAIT"), "{s}");
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.group_sort, SortKey::Imbalance);
    let s = screen(&app, 160, 48);
    assert!(s.contains("sort: imbalance (s)"), "{s}");
    insta::assert_snapshot!("sort_groups_160x48", s);
}

#[test]
fn the_header_says_why_auto_fell_back() {
    let mut app = app_with(Vec::new());
    app.fallback = Some(
        "fentry/fexit refused by this kernel (inet_csk_get_port: Operation not permitted \
         (os error 1)); using tracepoints"
            .into(),
    );
    let s = screen(&app, 80, 24);
    assert!(s.contains("tracepoint(7) EPERM"), "{s}");
    let s = screen(&app, 160, 48);
    assert!(s.contains("auto: fentry refused: EPERM"), "{s}");
    key(&mut app, KeyCode::Char('?'));
    let s = screen(&app, 160, 48);
    assert!(s.contains("Operation not permitted (os error 1)"), "{s}");
}

/// The screen's rows, without the quotes the test backend puts around
/// them.
fn rows(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.trim_matches('"').trim_end().to_owned())
        .collect()
}

#[test]
fn header_footer_and_help_fit_80x24_paused_or_not() {
    let mut app = app_with(fixture());
    app.header.filters = "netns 4026532999 port 8080".into();
    app.fallback = Some(
        "fentry/fexit refused by this kernel (inet_csk_get_port: Operation not permitted \
         (os error 1)); using tracepoints; the tracepoint routes are less precise for \
         TIME_WAIT, see docs/kernel.md for what each route sees and what it misses"
            .into(),
    );
    for paused in [false, true] {
        if paused {
            key(&mut app, KeyCode::Char('p'));
            app.update(Input::Records(fixture()));
        }
        for (i, pane) in Pane::ALL.iter().enumerate() {
            key(&mut app, KeyCode::Char(char::from(b'1' + i as u8)));
            let s = rows(&screen(&app, 80, 24));
            let (header, footer) = (&s[0], &s[23]);
            assert!(footer.ends_with("q quit"), "{pane:?}: {footer}");
            assert!(header.contains("netns"), "{header}");
            assert_eq!(header.contains("PAUSED +"), paused, "{header}");
        }
        key(&mut app, KeyCode::Char('1'));
        insta::assert_snapshot!(
            format!("header_footer_paused_{paused}_80x24"),
            screen(&app, 80, 24)
        );
        key(&mut app, KeyCode::Char('?'));
        let s = screen(&app, 80, 24);
        let r = rows(&s);
        assert!(
            r.iter().any(|l| l.starts_with('└')),
            "the help box closes on screen: {s}"
        );
        assert!(s.contains("any key closes this help"), "{s}");
        insta::assert_snapshot!(format!("help_paused_{paused}_80x24"), s);
        key(&mut app, KeyCode::Char('x'));
    }
    // The filter prompt keeps what is typed on screen.
    key(&mut app, KeyCode::Char('/'));
    for c in "port 8080 comm a-long-process-name errno".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    let s = rows(&screen(&app, 80, 24));
    assert!(s[23].ends_with("errno_"), "{}", s[23]);
}

#[test]
fn ages_and_time_left_follow_the_clock_not_the_newest_record() {
    let mut app = app_with(time_wait_fixture());
    // The TIME_WAIT socket entered at 2 s; 19 s later, and no record since.
    app.update(Input::Clock(21 * SEC));
    let row = app
        .port_rows()
        .into_iter()
        .find(|r| r.key.port == 8090)
        .expect("port 8090");
    assert_eq!(row.tw_left_max, Some(41 * SEC));
    let s = screen(&app, 100, 30);
    assert!(s.contains("18.0s"), "the failure at 3 s is 18 s old: {s}");
    key(&mut app, KeyCode::Char('2'));
    let s = screen(&app, 100, 30);
    assert!(s.contains("41s/41s"), "{s}");
    // A timewait socket re-armed by a substate change starts over.
    let mut rearm = app
        .model
        .decisions
        .back()
        .cloned()
        .expect("a decision to copy");
    rearm.kind = crate::model::record::RecordType::State;
    rearm.sock = 0x7002;
    rearm.lport = 8090;
    rearm.errno = None;
    rearm.ts_ns = 21 * SEC;
    rearm.old_state = Some(TcpState::FIN_WAIT2);
    rearm.new_state = Some(TcpState::TIME_WAIT);
    app.update(Input::Records(vec![rearm]));
    let row = app
        .port_rows()
        .into_iter()
        .find(|r| r.key.port == 8090)
        .expect("port 8090");
    assert_eq!((row.time_wait, row.tw_left_max), (1, Some(60 * SEC)));
    assert!(
        row.states.is_empty(),
        "the re-arm is no live socket: {row:?}"
    );
}

#[test]
fn closed_bound_and_udp_sockets_leave_pane_2() {
    use super::model::KernelFiles;
    use crate::kernel::Proto;
    let mut records = fixture();
    let mut tracker = Tracker::new();
    for e in [
        // Bound, never listening: its close changes no TCP state.
        bind(0x8001, 7 * SEC, 9100, 31, "tool").build(),
        bind(0x8002, 7 * SEC, 9200, 31, "tool").udp().build(),
    ] {
        tracker.apply(&e, &mut records);
    }
    let mut app = app_with(records);
    let ports = |app: &App| -> Vec<u16> { app.port_rows().iter().map(|r| r.key.port).collect() };
    assert!(ports(&app).contains(&9100) && ports(&app).contains(&9200));
    let mut files = KernelFiles {
        netns: NS,
        taken_ns: 8 * SEC,
        ..KernelFiles::default()
    };
    files
        .ports
        .extend([(Proto::Tcp, 9100), (Proto::Udp, 9200), (Proto::Udp, 5353)]);
    app.update(Input::KernelFiles(files.clone()));
    assert!(ports(&app).contains(&9100) && ports(&app).contains(&9200));
    // A snapshot that started before a socket was made says nothing of it.
    files.ports.clear();
    files.taken_ns = 4 * SEC;
    app.update(Input::KernelFiles(files.clone()));
    assert!(ports(&app).contains(&9100));
    // The process exited: both are gone from the kernel, and from pane 2.
    files.ports.extend([(Proto::Udp, 5353), (Proto::Tcp, 8080)]);
    // (8080 has a socket only bound too: the server's second, whose
    // listen() failed.)
    files.taken_ns = 9 * SEC;
    let before = app.model.reconciled;
    app.update(Input::KernelFiles(files));
    let left = ports(&app);
    assert!(!left.contains(&9100) && !left.contains(&9200), "{left:?}");
    assert!(left.contains(&5353), "still open: {left:?}");
    assert!(
        left.contains(&8080),
        "a listener closes with an event: {left:?}"
    );
    assert_eq!(app.model.reconciled - before, 2);
    key(&mut app, KeyCode::Char('2'));
    let s = screen(&app, 100, 30);
    assert!(!s.contains("9100") && !s.contains("9200"), "{s}");
}

#[test]
fn records_that_arrive_while_paused_appear_on_resume() {
    let mut app = app_with(Vec::new());
    key(&mut app, KeyCode::Char('p'));
    app.update(Input::Records(fixture()));
    let s = screen(&app, 100, 30);
    assert!(!s.contains("EADDRINUSE"), "the display is frozen: {s}");
    assert!(s.contains("PAUSED +"), "{s}");
    key(&mut app, KeyCode::Char('p'));
    assert!(app.held.is_empty());
    let s = screen(&app, 100, 30);
    assert!(s.contains("EADDRINUSE"), "{s}");
    assert_eq!(app.model.records as usize, fixture().len());
}

#[test]
fn a_scenario_keeps_what_came_before() {
    let mut app = app_with(fixture());
    let before = app.model.decisions.len();
    app.update(Input::ScenarioStarted {
        namespaces: vec![7],
    });
    app.update(Input::ScenarioFinished(Box::new(ScenarioResult {
        namespaces: vec![7],
        ..scenario_result()
    })));
    assert!(app.visible_decisions().is_empty(), "the scenario's view");
    key(&mut app, KeyCode::Char('a'));
    assert_eq!(app.visible_decisions().len(), before);
}

#[test]
fn pre_existing_sockets_are_marked_with_their_time_left() {
    use super::model::{SeedSock, SockAddr};
    use crate::kernel::Proto;
    let mut app = app_with(Vec::new());
    app.update(Input::Clock(100 * SEC));
    let addr = |port| SockAddr {
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        reuseaddr: false,
        reuseport: false,
        v6only: false,
    };
    app.update(Input::Seed(vec![
        SeedSock {
            proto: Proto::Tcp,
            netns: NS,
            addr: addr(7000),
            cookie: 11,
            owner: Some((300, "nginx".into())),
            state: TcpState::LISTEN,
            tw_left_ns: None,
            peer: None,
        },
        SeedSock {
            proto: Proto::Tcp,
            netns: NS,
            addr: addr(7001),
            cookie: 12,
            owner: None,
            state: TcpState::TIME_WAIT,
            tw_left_ns: Some(26 * SEC),
            peer: None,
        },
    ]));
    app.update(Input::Clock(101 * SEC));
    key(&mut app, KeyCode::Char('2'));
    let s = screen(&app, 100, 30);
    assert!(s.contains("pre 300 nginx"), "{s}");
    assert!(s.contains("25s/25s"), "{s}");
    // The listener's close names its cookie: it leaves.
    let mut close = crate::model::record::decode_state(
        &on(
            EventBuilder::state(TcpState::LISTEN, TcpState::CLOSE).lport(7000),
            0xdead,
            102 * SEC,
        )
        .build(),
    );
    close.cookie = Some(11);
    app.update(Input::Records(vec![close]));
    assert!(app.port_rows().iter().all(|r| r.key.port != 7000));
}

/// A client that used up a 4-port range toward one server (one port in
/// TIME_WAIT, a fifth connect() refused) while a second destination still
/// connects from a port already in use toward the first.
fn ephemeral_fixture() -> Vec<Record> {
    let mut events = Vec::new();
    for i in 0..4u16 {
        events.push(
            by(
                on(
                    EventBuilder::connect(8018).lport(40000 + i),
                    0xa000 + u64::from(i),
                    SEC + u64::from(i),
                ),
                600,
                "loadgen",
            )
            .build(),
        );
    }
    // The first closes first: its side of the connection waits.
    events.push(
        on(
            EventBuilder::time_wait(kind::TW_ARM, TcpState::TIME_WAIT).ports(40000, 8018),
            0xb000,
            2 * SEC,
        )
        .build(),
    );
    events.push(
        on(
            EventBuilder::state(TcpState::FIN_WAIT2, TcpState::CLOSE).ports(40000, 8018),
            0xa000,
            2 * SEC,
        )
        .build(),
    );
    for i in 0..3u64 {
        events.push(
            failed(
                by(
                    on(EventBuilder::connect(8018), 0xc000 + i, 3 * SEC + i),
                    601,
                    "worker",
                ),
                libc::EADDRNOTAVAIL,
            )
            .rport(0)
            .requested(8018)
            .build(),
        );
    }
    events.push(
        by(
            on(EventBuilder::connect(9090).lport(40001), 0xd000, 4 * SEC),
            601,
            "worker",
        )
        .build(),
    );
    let mut tracker = Tracker::new();
    let mut out = Vec::new();
    for e in &events {
        tracker.apply(e, &mut out);
    }
    out
}

#[test]
fn ephemeral_ports_per_destination_against_the_range() {
    use crate::model::ephemeral::PortRange;
    let mut app = app_with(ephemeral_fixture());
    key(&mut app, KeyCode::Char('5'));
    assert_eq!(app.pane, Pane::Ephemeral);
    let s = screen(&app, 80, 24);
    assert!(s.contains("4/?"), "the range is not read yet: {s}");
    app.update(Input::PortRanges(vec![(
        NS,
        PortRange::parse("40000 40004", "40004").expect("range"),
    )]));
    let rows = app.ephemeral_rows();
    assert_eq!(
        rows.iter()
            .map(|r| (r.key.port, r.in_use, r.time_wait, r.failed()))
            .collect::<Vec<_>>(),
        vec![(8018, 4, 1, 3), (9090, 1, 0, 0)]
    );
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("4/4"), "{s}");
        assert!(s.contains("EADDRNOTAVAIL x3"), "{s}");
        assert!(
            s.contains("ip_local_port_range 40000-40004 less 1 reserved = 4 ports"),
            "{s}"
        );
        insta::assert_snapshot!(format!("ephemeral_{w}x{h}"), s);
    }
    // The selection moves to the second destination; the filter keeps
    // the destinations a process connected to.
    key(&mut app, KeyCode::Char('j'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("127.0.0.1:9090 netns"), "{s}");
    app.view = ViewFilter::parse("port 9090");
    assert_eq!(app.ephemeral_rows().len(), 1);
    app.view = ViewFilter::parse("comm loadgen");
    assert_eq!(app.ephemeral_rows().len(), 1);
    // Clearing keeps the ranges read.
    key(&mut app, KeyCode::Char('c'));
    assert!(app.ephemeral_rows().is_empty());
    assert!(app.model.ephemeral.range(NS).is_some());
}

/// A SO_REUSEPORT group on 8090 whose second member (pid 912) gets its
/// share and accepts nothing, with the port's sockets read at 10 s and
/// 14 s: its queue grew by what it got.
fn stuck_member() -> (Vec<Record>, [Input; 2]) {
    use crate::model::balance::window::{PortKey, Snapshot};
    let mut events = Vec::new();
    for j in 0..40u16 {
        let (sock, pid) = if j % 2 == 0 {
            (0x7000, 911)
        } else {
            (0x7001, 912)
        };
        let ts = 11 * SEC + u64::from(j) * 1_000_000;
        let delivery = EventBuilder::new(kind::REUSEPORT)
            .ports(8090, 31000 + j)
            .flags(flag::OWNER_KNOWN)
            .owner(pid, "worker")
            .aux(0xdef);
        events.push(on(delivery, sock, ts).build());
        if pid == 911 {
            let accept = by(
                EventBuilder::new(kind::ACCEPT).ports(8090, 31000 + j),
                911,
                "worker",
            );
            events.push(on(accept, 0x8000 + u64::from(j), ts + 1000).build());
        }
    }
    let mut tracker = Tracker::new();
    let mut out = Vec::new();
    for e in &events {
        tracker.apply(e, &mut out);
    }
    let listener = |ino: u64, pid: u32, queued: u32| {
        crate::fixture::listener(ino, 8090, queued, (pid, "worker"))
    };

    let key = PortKey {
        netns: NS,
        port: 8090,
        proto: crate::kernel::Proto::Tcp,
    };
    let snap = |taken_ns: u64, queued: u32| Snapshot {
        taken_ns,
        listeners: vec![listener(0x7000, 911, 0), listener(0x7001, 912, queued)],
        open: (0..20).map(|i| (911, 0x8000 + i)).collect(),
    };
    (
        out,
        [
            Input::Listeners(vec![(key, snap(10 * SEC, 0))]),
            Input::Listeners(vec![(key, snap(14 * SEC, 20))]),
        ],
    )
}

#[test]
fn pane_3_names_a_stuck_member_from_its_port_s_sockets() {
    let (records, [first, second]) = stuck_member();
    // The records arrive before the first read is handed over (it waits
    // for them): they are from after it all the same.
    let mut app = app_with(records);
    app.update(first);
    key(&mut app, KeyCode::Char('3'));
    let before = screen(&app, 100, 14);
    assert!(
        before.contains("cause: uniform (40 flows") && before.contains("accepts and queues"),
        "{before}"
    );
    app.update(second);
    let s = screen(&app, 100, 14);
    assert!(s.contains("cause: member_not_accepting"), "{s}");
    insta::assert_snapshot!("reuseport_verdict_100x14", s);
    enter(&mut app);
    let detail = screen(&app, 120, 30);
    assert!(
        detail.contains("advice: the kernel keeps hashing"),
        "{detail}"
    );
}
