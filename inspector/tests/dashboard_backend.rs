//! The real dashboard loop on a `TestBackend`, with the real probes: keys
//! enter through the dashboard's event channel as a terminal's would, a
//! scenario runs from the Scenarios pane, and its failed bind and its
//! reuseport bars show on the drawn screen; workers that make an uneven
//! split have its cause named in pane 3. No terminal, no tmux.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::workers::{acceptor, connect, in_netns, listener, stuck_worker};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use inspector::{
    commands::dashboard::{Dashboard, Event},
    model::filter::Filter,
    pipeline::{
        drive::{Driver, Flow, Stop},
        source::Source,
    },
};
use ratatui::{Terminal, backend::TestBackend};
use tokio::sync::mpsc::{self, UnboundedSender};

fn press(tx: &UnboundedSender<Event>, code: KeyCode) {
    tx.send(Event::Terminal(TermEvent::Key(KeyEvent::new(
        code,
        KeyModifiers::NONE,
    ))))
    .expect("the dashboard holds the receiver");
}

/// The last drawn frame, one line per row.
fn screen(terminal: &Terminal<TestBackend>) -> String {
    let buf = terminal.backend().buffer();
    let width = usize::from(buf.area.width.max(1));
    buf.content
        .chunks(width)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Steps the loop until `want` is on the screen, or fails after `limit`.
/// The dashboard on its source, stepped by the test.
struct Run {
    src: Source,
    dashboard: Dashboard<TestBackend>,
    driver: Driver,
    stop: Stop,
}

async fn step_until(run: &mut Run, want: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let shown = screen(run.dashboard.terminal());
        if shown.contains(want) {
            return shown;
        }
        assert!(start.elapsed() < limit, "{want:?} never appeared:\n{shown}");
        let flow = run
            .driver
            .step(&mut run.src, &mut run.dashboard, &mut run.stop)
            .await
            .expect("a dashboard step");
        assert_eq!(flow, Flow::Continue, "the dashboard quit early:\n{shown}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_scenario_started_by_keys_shows_its_failure_and_bars() {
    let Some(pipeline) = common::pipeline(Filter::default()) else {
        return;
    };
    let terminal = Terminal::new(TestBackend::new(120, 40)).expect("a test terminal");
    let (tx, events) = mpsc::unbounded_channel();
    let (src, dashboard) =
        Dashboard::live(pipeline, terminal, events, true).expect("the ring buffer registers");
    let run = &mut Run {
        src,
        dashboard,
        driver: Driver::default(),
        stop: Stop::new(None).expect("signals"),
    };

    step_until(run, "Bind decisions", Duration::from_secs(5)).await;
    // Scenarios pane, down to 11 (tcp-reuseport-distribution), run it.
    press(&tx, KeyCode::Char('4'));
    for _ in 0..10 {
        press(&tx, KeyCode::Down);
    }
    press(&tx, KeyCode::Enter);
    let shown = step_until(run, "evidence agrees", Duration::from_secs(60)).await;
    assert!(shown.contains("11 tcp-reuseport-distribution"), "{shown}");
    assert!(
        shown.contains("REFUTED") || shown.contains("CONFIRMED") || shown.contains("PARTLY"),
        "{shown}"
    );

    // Pane 1: its failed bind, the worker without SO_REUSEPORT.
    press(&tx, KeyCode::Char('1'));
    press(&tx, KeyCode::Char('f'));
    let shown = step_until(run, "failures only", Duration::from_secs(5)).await;
    assert!(shown.contains("(1 shown"), "{shown}");
    let row = shown
        .lines()
        .find(|l| l.contains("bind     EADDRINUSE"))
        .unwrap_or_default();
    assert!(
        row.contains("127.0.0.1:8012") && row.contains("scenario-11"),
        "{shown}"
    );
    assert!(shown.contains("1 failed"), "{shown}");

    // Pane 3: its reuseport bars, one group of three members.
    press(&tx, KeyCode::Char('3'));
    let shown = step_until(run, "tcp 127.0.0.1:8012  3 members", Duration::from_secs(5)).await;
    let bars = shown.lines().filter(|l| l.contains('█')).count();
    assert_eq!(bars, 3, "{shown}");

    // `q` ends the loop.
    press(&tx, KeyCode::Char('q'));
    let start = Instant::now();
    while run
        .driver
        .step(&mut run.src, &mut run.dashboard, &mut run.stop)
        .await
        .expect("a dashboard step")
        == Flow::Continue
    {
        assert!(start.elapsed() < Duration::from_secs(5), "q did not quit");
    }
}

/// The live dashboard on pane 3, on a 120x40 test terminal; `None` where
/// the probes cannot load (a skip outside CI).
fn pane_3() -> Option<(Run, UnboundedSender<Event>)> {
    if !common::needs_root("create network namespaces") {
        return None;
    }
    let pipeline = common::pipeline(Filter::default())?;
    let terminal = Terminal::new(TestBackend::new(120, 40)).expect("a test terminal");
    let (tx, events) = mpsc::unbounded_channel();
    let (src, dashboard) =
        Dashboard::live(pipeline, terminal, events, true).expect("the ring buffer registers");
    press(&tx, KeyCode::Char('3'));
    let run = Run {
        src,
        dashboard,
        driver: Driver::default(),
        stop: Stop::new(None).expect("signals"),
    };
    Some((run, tx))
}

/// Clients toward `port`, 4 every 250 ms until `stop` (100 at most: a
/// queue nobody accepts from stays below its limit), kept open.
fn clients(port: u16, stop: &AtomicBool) -> Vec<socket2::Socket> {
    let mut clients = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if clients.len() < 100 {
            clients.extend(connect(port, 4));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    clients
}

#[tokio::test(flavor = "current_thread")]
async fn pane_3_names_a_member_that_does_not_accept() {
    const PORT: u16 = 8472;
    let Some((mut run, _tx)) = pane_3() else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let workload = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            in_netns(move |_| {
                let good = acceptor(listener(PORT, true), stop.clone(), usize::MAX);
                let stuck = stuck_worker(PORT, "stuck-worker");
                pid_tx.send(stuck.pid).expect("the test waits");
                let held = clients(PORT, &stop);
                let accepted = good.join().expect("acceptor").len();
                (held.len(), accepted)
            })
        })
    };
    let pid = pid_rx.recv().expect("the stuck worker's pid");
    let shown = step_until(
        &mut run,
        &format!("(pid {pid} stuck-worker) got"),
        Duration::from_secs(60),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (made, accepted) = workload.join().expect("workload");
    eprintln!("{made} connections, {accepted} accepted by the good worker:\n{shown}");
    assert!(shown.contains("cause: member_not_accepting"), "{shown}");
    // Its row: what it got, nothing accepted, the rest in its queue.
    let row = shown
        .lines()
        .find(|l| l.contains(&format!("{pid} stuck-worker ino")))
        .expect("the stuck member's row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    let n = cols.len();
    let (delivered, accepted_col, queue) = (cols[n - 5], cols[n - 3], cols[n - 2]);
    assert_eq!(accepted_col, "0", "{row}");
    assert!(queue.ends_with("/128") && queue != "0/128", "{row}");
    assert!(delivered.parse::<u64>().is_ok_and(|d| d > 0), "{row}");
}

#[tokio::test(flavor = "current_thread")]
async fn pane_3_names_a_queue_that_two_threads_accept_from() {
    const PORT: u16 = 8473;
    let Some((mut run, _tx)) = pane_3() else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            in_netns(move |_| {
                let l = listener(PORT, false);
                let twin = l.try_clone().expect("a second descriptor");
                let a = acceptor(l, stop.clone(), usize::MAX);
                let b = acceptor(twin, stop.clone(), usize::MAX);
                let held = clients(PORT, &stop);
                let got = [a, b].map(|h| h.join().expect("acceptor").len());
                (held.len(), got)
            })
        })
    };
    let shown = step_until(
        &mut run,
        "cause: shared_accept_queue",
        Duration::from_secs(60),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (made, got) = workload.join().expect("workload");
    eprintln!("{made} connections, accepted {got:?}:\n{shown}");
    assert!(
        shown.contains(&format!("127.0.0.1:{PORT}")) && shown.contains("1 listener, 2 tasks"),
        "{shown}"
    );
}
