//! The real dashboard loop on a `TestBackend`, with the real probes: keys
//! enter through the dashboard's event channel as a terminal's would, a
//! scenario runs from the Scenarios pane, and its failed bind and its
//! reuseport bars show on the drawn screen. No terminal, no tmux.

mod common;

use std::time::{Duration, Instant};

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
