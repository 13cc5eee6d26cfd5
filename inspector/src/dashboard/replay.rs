//! `dashboard --replay`: a recording instead of the kernel. A time cursor
//! walks the recorded records at `--speed` times real time (or one second
//! per `n` with `--step`); the app, its panes and the view are the live
//! dashboard's. Pausing (`p`) stops the cursor; `n` moves it one second.

use std::{
    io::{self, IsTerminal as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use crossterm::event::{self as term, KeyCode, KeyEventKind};
use ratatui::{
    Terminal,
    backend::{Backend, CrosstermBackend},
};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use super::{Event, Flow, TerminalGuard, restore_terminal};
use crate::{
    dashboard::{
        app::{Action, App, Header, Input},
        ui,
    },
    filter::Filter,
    probe::Counters,
    record::Record,
    recording::{self, Line},
};

/// How far `n` moves the cursor.
const STEP_NS: u64 = 1_000_000_000;
const TICK: Duration = Duration::from_millis(100);

/// A recording loaded for replay: records and the kernel counters of its
/// `stats` lines, both in time order.
pub struct Recording {
    pub header: recording::Header,
    pub records: Vec<Record>,
    /// (`ts_ns`, counters) of each `stats` line.
    pub counters: Vec<(u64, Counters)>,
}

impl Recording {
    /// Reads the recording at `path` (a file or directory), keeping the
    /// records `filter` matches.
    pub fn load(path: &Path, filter: &Filter) -> anyhow::Result<Self> {
        let mut header = None;
        let mut records = Vec::new();
        let mut counters = Vec::new();
        recording::replay(path, |l| {
            match l {
                Line::Header(h) => {
                    header.get_or_insert(h);
                }
                Line::Stats(s) => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(s) {
                        let n = |k: &str| v[k].as_u64().unwrap_or(0);
                        let c = Counters {
                            emitted: n("emitted"),
                            dropped: n("dropped"),
                            read_errors: n("kernel_errors"),
                            ..Counters::default()
                        };
                        counters.push((n("ts_ns"), c));
                    }
                }
                Line::Record(r) if filter.matches(&r) => records.push(*r),
                Line::Record(_) => {}
            }
            Ok(())
        })?;
        let header = header.context("the recording has no header line")?;
        // Frames hold records in the order the tracker released them:
        // nearly, not strictly, time order.
        records.sort_by_key(|r| r.ts_ns);
        counters.sort_by_key(|c| c.0);
        Ok(Self {
            header,
            records,
            counters,
        })
    }
}

/// The replay's time cursor over a [`Recording`].
pub struct Cursor {
    pub rec: Recording,
    /// Recording time (CLOCK_MONOTONIC of the recorder) shown so far.
    pub now_ns: u64,
    /// Records before this index have been fed to the app.
    next: usize,
    pub speed: f64,
}

impl Cursor {
    pub fn new(rec: Recording, speed: f64) -> Self {
        // From the recording's start (or its first record, if an older
        // file was rotated away with its start).
        let start = rec
            .records
            .first()
            .map_or(rec.header.start_mono_ns, |r| r.ts_ns)
            .min(rec.header.start_mono_ns);
        Self {
            rec,
            now_ns: start,
            next: 0,
            speed,
        }
    }

    pub fn at_end(&self) -> bool {
        self.next >= self.rec.records.len()
    }

    /// Moves the cursor `dt_ns` on and feeds the app what it passed, with
    /// the counters and clock as of the cursor. Records reach the app even
    /// while it is paused: the cursor, not the app, holds them back.
    pub fn advance(&mut self, app: &mut App, dt_ns: u64) {
        self.now_ns = self.now_ns.saturating_add(dt_ns);
        let end =
            self.next + self.rec.records[self.next..].partition_point(|r| r.ts_ns <= self.now_ns);
        if end > self.next {
            let paused = std::mem::replace(&mut app.paused, false);
            app.update(Input::Records(self.rec.records[self.next..end].to_vec()));
            app.paused = paused;
            self.next = end;
        }
        let i = self.rec.counters.partition_point(|c| c.0 <= self.now_ns);
        let counters = i
            .checked_sub(1)
            .map_or_else(Counters::default, |i| self.rec.counters[i].1);
        app.update(Input::Tick {
            counters,
            now_ns: self.now_ns,
        });
        app.replay_clock = Some(self.clock());
    }

    /// The header's time: the recording's wall-clock time at the cursor
    /// and the offset from its start.
    pub fn clock(&self) -> String {
        let h = &self.rec.header;
        let unix = h.unix_ns(self.now_ns) / 1_000_000_000;
        let day = unix % 86_400;
        let offset = self.now_ns.saturating_sub(h.start_mono_ns) as f64 / 1e9;
        let end = if self.at_end() { " end" } else { "" };
        format!(
            "replay {:02}:{:02}:{:02} UTC +{offset:.1}s x{}{end}",
            day / 3600,
            day / 60 % 60,
            day % 60,
            self.speed
        )
    }
}

pub async fn run(path: &Path, filter: Filter, speed: f64, step: bool) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!(
            "the dashboard needs a terminal; for a headless replay use `inspector trace --replay`"
        );
    }
    if !(speed > 0.0 && speed.is_finite()) {
        bail!("--speed must be a positive number, got {speed}");
    }
    let rec = Recording::load(path, &filter)?;
    let mode = clap::ValueEnum::from_str(&rec.header.mode, true).unwrap_or_default();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let header = Header {
        mode,
        probes: 0,
        filters: format!("{} (recorded: {})", filter.describe(), rec.header.filters),
    };
    let mut app = App::new(header, no_color);
    app.paused = step;
    let mut cursor = Cursor::new(rec, speed);
    cursor.advance(&mut app, 0);

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    let _guard = TerminalGuard::enter().context("cannot switch the terminal to raw mode")?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let (tx, mut events) = mpsc::unbounded_channel();
    super::spawn_key_reader(tx)?;
    let mut tick = tokio::time::interval(TICK);
    let mut last = Instant::now();
    while step_once(
        &mut app,
        &mut cursor,
        &mut terminal,
        &mut events,
        &mut tick,
        &mut last,
    )
    .await?
        == Flow::Continue
    {}
    Ok(())
}

/// One turn of the replay loop: a tick moves the cursor (unless paused),
/// `n` steps it, other keys go to the app; then a frame.
async fn step_once<B: Backend>(
    app: &mut App,
    cursor: &mut Cursor,
    terminal: &mut Terminal<B>,
    events: &mut UnboundedReceiver<Event>,
    tick: &mut tokio::time::Interval,
    last: &mut Instant,
) -> anyhow::Result<Flow> {
    tokio::select! {
        _ = tick.tick() => {
            let real = std::mem::replace(last, Instant::now()).elapsed();
            let dt = if app.paused { 0 } else { (real.as_nanos() as f64 * cursor.speed) as u64 };
            cursor.advance(app, dt);
        }
        ev = events.recv() => match ev {
            Some(Event::Terminal(term::Event::Key(k))) if k.kind != KeyEventKind::Release => {
                if k.code == KeyCode::Char('n') && app.input.is_none() {
                    cursor.advance(app, STEP_NS);
                } else {
                    for a in app.update(Input::Key(k)) {
                        if matches!(a, Action::Quit) {
                            return Ok(Flow::Quit);
                        }
                    }
                }
            }
            Some(Event::Terminal(_)) => {}
            Some(Event::Quit) | None => return Ok(Flow::Quit),
        },
    }
    terminal.draw(|f| ui::render(app, f))?;
    Ok(Flow::Continue)
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::{
        fixture::EventBuilder,
        recording::{Limits, Writer},
        tracker::Tracker,
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
        let mut w = Writer::create(dir, Limits::default(), &header).expect("writer");
        for r in &records {
            crate::ndjson::write(r, &mut w.pending);
        }
        w.flush().expect("flush");
    }

    fn screen(app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(120, 14)).expect("test backend");
        t.draw(|f| ui::render(app, f)).expect("draw");
        format!("{}", t.backend())
    }

    #[test]
    fn the_panes_rebuild_from_a_recording_as_the_cursor_moves() {
        let dir =
            std::env::temp_dir().join(format!("inspector-dash-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fixture(&dir);
        let rec = Recording::load(&dir, &Filter::default()).expect("load");
        assert_eq!(rec.records.len(), 3);
        let header = Header {
            mode: clap::ValueEnum::from_str(&rec.header.mode, true).unwrap_or_default(),
            probes: 0,
            filters: "none".into(),
        };
        let mut app = App::new(header, true);
        // Stepping: nothing moves until `n`.
        app.paused = true;
        let mut cursor = Cursor::new(rec, 1.0);
        cursor.advance(&mut app, 0);
        assert_eq!(app.model.decisions.len(), 0);
        cursor.advance(&mut app, STEP_NS);
        assert_eq!(app.model.decisions.len(), 2, "the first second");
        insta::assert_snapshot!("replay_after_one_second", screen(&app));
        cursor.advance(&mut app, 2 * STEP_NS);
        assert_eq!(app.model.decisions.len(), 3);
        assert!(cursor.at_end());
        assert!(
            app.replay_clock
                .as_deref()
                .is_some_and(|c| c.starts_with("replay 07:06:43 UTC +3.0s") && c.ends_with("end")),
            "{:?}",
            app.replay_clock
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
