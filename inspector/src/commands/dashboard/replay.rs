//! `dashboard --replay`: a recording instead of the kernel. A time cursor
//! walks the recorded records at `--speed` times real time (or one second
//! per `n` with `--step`); the app, its panes and the view are the live
//! dashboard's. Pausing (`p`) stops the cursor; `n` moves it one second.

use std::path::Path;

use anyhow::{Context as _, bail};

use super::{
    Dashboard,
    app::{App, Header},
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

/// The app a replay of `src` starts with: the recording's mode and filters.
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
    let mut app = app_for(&src, &filter);
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
        model::tracker::Tracker,
        recording::{self, Limits, Writer},
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
}
