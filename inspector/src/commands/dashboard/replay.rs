//! `dashboard --replay`: a recording instead of the kernel. A time cursor
//! walks the recorded records at `--speed` times real time (or one second
//! per `n` with `--step`); the app, its panes and the view are the live
//! dashboard's. Pausing (`p`) stops the cursor; `n` moves it one second.

use std::path::Path;

use anyhow::{Context as _, bail};

use super::{
    Dashboard,
    app::{App, Header, Input},
    terminal,
};
use crate::{
    model::filter::Filter,
    pipeline::{
        drive::{self, Stop},
        source::{Pace, Replay, Source},
    },
    recording::Window,
    util::escape,
};

/// The header's time: the recording's wall-clock time at the cursor, the
/// offset from its start, the speed, and `end` once every record is shown.
pub fn clock(r: &Replay) -> String {
    let Some(h) = &r.header else {
        return String::new();
    };
    let unix = h.unix_ns(r.now_ns) / 1_000_000_000;
    let day = unix % 86_400;
    let offset = r.now_ns.saturating_sub(h.start_mono_ns) as f64 / 1e9;
    let speed = match r.pace {
        Pace::Clock { speed, .. } => speed,
        Pace::Fast { .. } => 0.0,
    };
    let end = if r.at_end() { " end" } else { "" };
    format!(
        "replay {:02}:{:02}:{:02} UTC +{offset:.1}s x{speed}{end}",
        day / 3600,
        day / 60 % 60,
        day % 60,
    )
}

/// The app a replay of `src` starts with: the recording's mode and
/// filters, and its panes seeded from the snapshot the replay starts from
/// when it was read on opening (so the first frame shows it, as a live
/// dashboard seeds before its first frame).
pub fn app(src: &mut Source, filter: &Filter) -> App {
    let mut app = app_for(src, filter);
    if let Source::Replay(r) = src
        && let Some(snap) = r.take_snapshot()
    {
        app.update(Input::Snapshot {
            taken_ns: snap.ts_ns,
            socks: snap.socks,
        });
    }
    app
}

/// The app with the recording's mode and filters.
fn app_for(src: &Source, filter: &Filter) -> App {
    let recorded = match src {
        Source::Replay(r) => r.header.as_ref(),
        Source::Live(_) => None,
    };
    let mode = recorded
        .and_then(|h| clap::ValueEnum::from_str(&h.mode, true).ok())
        .unwrap_or_default();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    App::new(
        Header {
            mode,
            probes: 0,
            filters: format!(
                "{} (recorded: {})",
                filter.describe(),
                escape::text(recorded.map_or("", |h| h.filters.as_str()))
            ),
        },
        no_color,
    )
}

pub async fn run(
    path: &Path,
    filter: Filter,
    speed: f64,
    step: bool,
    window: Window,
) -> anyhow::Result<()> {
    if !(speed > 0.0 && speed.is_finite()) {
        bail!("--speed must be a positive number, got {speed}");
    }
    let mut src = Source::replay(
        path,
        filter.clone(),
        Pace::Clock {
            speed,
            paused: step,
        },
        window,
    )?;
    let mut app = app(&mut src, &filter);
    app.paused = step;
    let session = terminal::Session::start("for a headless replay use `inspector trace --replay`")
        .context("the replay's terminal")?;
    let mut dashboard = Dashboard::new(session.terminal, session.events, app);
    let mut stop = Stop::new(None)?;
    // A paced recording read to its end stays on screen until `q`.
    drive::run(&mut src, &mut dashboard, &mut stop).await
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;

    use super::*;
    use std::time::Instant;

    use crate::{
        fixture::EventBuilder,
        model::{
            seed::{SeedSock, SockAddr},
            tracker::Tracker,
        },
        recording::{self, Limits, Snapshot, Writer},
    };

    /// A small recording: a listener on 8080, a refused bind on it, a UDP
    /// bind two seconds later.
    fn fixture(dir: &Path) {
        let t0 = 1_000_000_000_000;
        let mut tracker = Tracker::new();
        let mut records = Vec::new();
        for ev in [
            EventBuilder::bind(8080)
                .sock(0x1001)
                .owner(100, "server")
                .at(t0 + 100_000_000)
                .build(),
            EventBuilder::bind(8080)
                .sock(0x1002)
                .owner(200, "second")
                .errno(libc::EADDRINUSE)
                .at(t0 + 200_000_000)
                .build(),
            EventBuilder::bind(5353)
                .udp()
                .sock(0x1003)
                .owner(300, "resolver")
                .at(t0 + 2_500_000_000)
                .build(),
        ] {
            tracker.apply(&ev, &mut records);
        }
        records[1].explanation = Some("held by LISTEN 127.0.0.1:8080 (pid 100 server)".into());
        let header = recording::Header {
            kind: "header".into(),
            v: 1,
            host: "fixture".into(),
            kernel: "6.18.0".into(),
            mode: "tracepoint".into(),
            start_unix_ns: 1_764_400_000_000_000_000,
            start_mono_ns: t0,
            filters: "none".into(),
        };
        let mut w = Writer::create(dir, Limits::default(), &header, false).expect("writer");
        for r in &records {
            crate::output::ndjson::write(r, &mut w.pending);
        }
        w.flush().expect("flush");
    }

    fn screen(d: &Dashboard<TestBackend>) -> String {
        format!("{}", d.terminal().backend())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_panes_rebuild_from_a_recording_as_the_cursor_moves() {
        use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};

        let dir =
            std::env::temp_dir().join(format!("inspector-dash-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fixture(&dir);
        let filter = Filter::default();
        let mut src = Source::replay(
            &dir,
            filter.clone(),
            Pace::Clock {
                speed: 1.0,
                paused: true,
            },
            Window::default(),
        )
        .expect("open");
        let mut app = app_for(&src, &filter);
        // Stepping: nothing moves until `n`.
        app.paused = true;
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let terminal = ratatui::Terminal::new(TestBackend::new(120, 14)).expect("test backend");
        let mut d = Dashboard::new(terminal, events, app);
        let mut stop = Stop::new(None).expect("signals");
        let mut driver = drive::Driver::default();
        let step = |code| {
            tx.send(super::super::Event::Terminal(TermEvent::Key(
                KeyEvent::new(code, KeyModifiers::NONE),
            )))
            .expect("the dashboard holds the receiver");
        };
        driver
            .step(&mut src, &mut d, &mut stop)
            .await
            .expect("step");
        assert_eq!(d.app.model.decisions.len(), 0);
        // `n`: one second on, then the records it passed are read. No
        // tick meanwhile, however slow the machine: the events/s figure is
        // sampled at the first step and at the one forced below.
        step(KeyCode::Char('n'));
        d.last_tick = Some(Instant::now());
        driver.step(&mut src, &mut d, &mut stop).await.expect("key");
        d.last_tick = Some(Instant::now());
        driver
            .step(&mut src, &mut d, &mut stop)
            .await
            .expect("step");
        assert_eq!(d.app.model.decisions.len(), 2, "the first second");
        d.last_draw = Instant::now() - std::time::Duration::from_secs(1);
        d.dirty = true;
        d.last_tick = None;
        driver
            .step(&mut src, &mut d, &mut stop)
            .await
            .expect("step");
        insta::assert_snapshot!("replay_after_one_second", screen(&d));
        step(KeyCode::Char('n'));
        step(KeyCode::Char('n'));
        for _ in 0..4 {
            driver
                .step(&mut src, &mut d, &mut stop)
                .await
                .expect("step");
        }
        assert_eq!(d.app.model.decisions.len(), 3);
        let Source::Replay(r) = &src else {
            panic!("a replay")
        };
        assert!(r.at_end());
        assert!(
            d.app
                .replay_clock
                .as_deref()
                .is_some_and(|c| c.starts_with("replay 07:06:43 UTC +3.0s") && c.ends_with("end")),
            "{:?}",
            d.app.replay_clock
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A socket of a snapshot.
    fn sock(port: u16, state: crate::kernel::TcpState, peer: Option<&str>) -> SeedSock {
        SeedSock {
            proto: crate::kernel::Proto::Tcp,
            netns: 7,
            addr: SockAddr {
                ip: "127.0.0.1".parse().expect("ip"),
                port,
                reuseaddr: false,
                reuseport: false,
                v6only: false,
            },
            cookie: u64::from(port),
            owner: (state != crate::kernel::TcpState::TIME_WAIT).then(|| (100, "server".into())),
            state,
            tw_left_ns: (state == crate::kernel::TcpState::TIME_WAIT).then_some(30_000_000_000),
            peer: peer.map(|p| p.parse().expect("peer")),
        }
    }

    /// Two files: the first opens with a listener on 9090, a TIME_WAIT
    /// socket on it and a client's connection to 10.0.0.1:443 (taken 50 ms
    /// in); the second (rotated at 5 s) with a listener on 9091 only. A
    /// bind on 7070 before the first snapshot is in it already; one on 8080
    /// comes after it, one on 8081 after the second.
    fn with_snapshots(dir: &Path) {
        use crate::kernel::TcpState;
        let t0 = 1_000_000_000_000;
        let mut taken = 0;
        let snapshots: crate::recording::TakeSnapshot = Box::new(move || {
            taken += 1;
            if taken == 1 {
                Snapshot::new(
                    t0 + 50_000_000,
                    vec![
                        sock(9090, TcpState::LISTEN, None),
                        sock(9090, TcpState::TIME_WAIT, None),
                        sock(40001, TcpState::ESTABLISHED, Some("10.0.0.1:443")),
                    ],
                )
            } else {
                Snapshot::new(t0 + 5_000_000_000, vec![sock(9091, TcpState::LISTEN, None)])
            }
        });
        let mut header = crate::recording::Header::new("tracepoint".into(), "none".into());
        header.start_mono_ns = t0;
        let mut w = Writer::with_snapshots(dir, Limits::default(), &header, false, Some(snapshots))
            .expect("writer");
        let mut tracker = Tracker::new();
        let mut records = Vec::new();
        for (port, sock, at) in [
            (7070, 0x2001, 10),
            (8080, 0x2002, 1_000),
            (8081, 0x2003, 6_000),
        ] {
            if at == 6_000 {
                for r in records.drain(..) {
                    crate::output::ndjson::write(&r, &mut w.pending);
                }
                w.flush().expect("flush");
                w.rotate().expect("rotate");
            }
            let ev = EventBuilder::bind(port)
                .sock(sock)
                .owner(200, "client")
                .at(t0 + at * 1_000_000)
                .build();
            tracker.apply(&ev, &mut records);
        }
        for r in records.drain(..) {
            crate::output::ndjson::write(&r, &mut w.pending);
        }
        w.flush().expect("flush");
    }

    /// The dashboard on a paced replay of `dir`, stepped until `done`.
    async fn replayed(
        dir: &Path,
        window: Window,
        done: impl Fn(&Dashboard<TestBackend>) -> bool,
    ) -> Dashboard<TestBackend> {
        let filter = Filter::default();
        let mut src = Source::replay(
            dir,
            filter.clone(),
            Pace::Clock {
                speed: 1.0,
                paused: true,
            },
            window,
        )
        .expect("open");
        let mut app = app(&mut src, &filter);
        app.paused = true;
        let (_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let terminal = ratatui::Terminal::new(TestBackend::new(120, 30)).expect("test backend");
        let mut d = Dashboard::new(terminal, events, app);
        let mut stop = Stop::new(None).expect("signals");
        let mut driver = drive::Driver::default();
        for _ in 0..10 {
            driver
                .step(&mut src, &mut d, &mut stop)
                .await
                .expect("step");
            if done(&d) {
                break;
            }
        }
        d
    }

    fn pre_ports(d: &Dashboard<TestBackend>) -> Vec<u16> {
        let mut v: Vec<u16> = d
            .app
            .port_rows()
            .iter()
            .filter(|r| r.pre)
            .map(|r| r.key.port)
            .collect();
        v.sort_unstable();
        v
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_replay_starts_from_the_snapshot_its_first_file_opens_with() {
        let dir = std::env::temp_dir().join(format!("inspector-dash-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        with_snapshots(&dir);
        // Paused at the start: the snapshot alone, before any record.
        let d = replayed(&dir, Window::default(), |d| !pre_ports(d).is_empty()).await;
        assert_eq!(pre_ports(&d), [9090], "the first file's snapshot");
        let rows = d.app.port_rows();
        let l = rows.iter().find(|r| r.key.port == 9090).expect("9090");
        assert_eq!(
            l.states.get(&super::super::model::HolderState::LISTEN),
            Some(&1)
        );
        assert_eq!(l.time_wait, 1);
        let left = l.tw_left_max.expect("time left");
        assert!((29_000_000_000..=30_000_000_000).contains(&left), "{left}");
        assert!(
            l.owners.iter().any(|(p, c)| *p == 100 && c == "server"),
            "{l:?}"
        );
        let dest = d
            .app
            .model
            .ephemeral
            .rows()
            .into_iter()
            .find(|r| r.key.port == 443)
            .expect("pane 5's destination");
        assert_eq!((dest.in_use, dest.pre), (1, 1));
        assert!(d.app.model.decisions.is_empty(), "no record yet");
        // The first frame shows it, marked.
        let mut d = d;
        d.last_draw = Instant::now() - std::time::Duration::from_secs(1);
        d.dirty = true;
        let src = Source::replay(
            &dir,
            Filter::default(),
            Pace::Fast {
                fold_handover: false,
            },
            Window::default(),
        )
        .expect("open");
        d.app.pane = super::super::app::Pane::Ports;
        d.draw(&src).expect("draw");
        let text = screen(&d);
        let row = text
            .lines()
            .find(|l| l.contains("9090"))
            .unwrap_or_else(|| panic!("pane 2 lists 9090:\n{text}"));
        assert!(row.contains("pre"), "{row}");
        d.app.pane = super::super::app::Pane::Ephemeral;
        d.dirty = true;
        d.last_draw = Instant::now() - std::time::Duration::from_secs(1);
        d.draw(&src).expect("draw");
        let text = screen(&d);
        assert!(text.contains("10.0.0.1:443"), "pane 5 lists it:\n{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_window_starts_from_the_last_snapshot_before_it() {
        let dir = std::env::temp_dir().join(format!("inspector-dash-since-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        with_snapshots(&dir);
        let since = Window {
            since: Some(crate::recording::Moment::Offset(5_500_000_000)),
            until: None,
        };
        let d = replayed(&dir, since, |d| {
            pre_ports(d) == [9091] && d.app.model.decisions.is_empty()
        })
        .await;
        // The second file's snapshot: 9090 had closed by then; the binds
        // before it are in it, the one after comes with the cursor.
        assert_eq!(pre_ports(&d), [9091]);
        assert!(d.app.port_rows().iter().all(|r| r.key.port != 9090));
        // The records between the snapshot and the window's start are
        // applied at once; those before the snapshot are in it already.
        let at = |s: u64| Window {
            since: Some(crate::recording::Moment::Offset(s * 1_000_000_000)),
            until: None,
        };
        let decided = |d: &Dashboard<TestBackend>| -> Vec<u16> {
            d.app.model.decisions.iter().map(|r| r.lport).collect()
        };
        let d = replayed(&dir, at(2), |d| !decided(d).is_empty()).await;
        assert_eq!((pre_ports(&d), decided(&d)), (vec![9090], vec![8080]));
        let d = replayed(&dir, at(7), |d| !decided(d).is_empty()).await;
        assert_eq!((pre_ports(&d), decided(&d)), (vec![9091], vec![8081]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
