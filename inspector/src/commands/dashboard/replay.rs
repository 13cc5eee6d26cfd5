//! `dashboard --replay`: a recording instead of the kernel. A time cursor
//! walks the recorded records at `--speed` times real time (or one second
//! per `n` with `--step`); the app, its panes and the view are the live
//! dashboard's. Pausing (`p`) stops the cursor; `n` moves it one second.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use crossterm::event::{self as term, KeyCode, KeyEventKind};
use ratatui::{Terminal, backend::Backend};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Event, Flow};
use crate::{
    commands::dashboard::{
        app::{Action, App, Header, Input},
        ui,
    },
    kernel::probe::Counters,
    model::filter::Filter,
    model::record::Record,
    recording::{self, Line, Reader},
};

/// How far `n` moves the cursor.
const STEP_NS: u64 = 1_000_000_000;
const TICK: Duration = Duration::from_millis(100);
/// Records are read this far past the cursor (recording time) and put in
/// time order: frames hold them in the order the tracker released them,
/// nearly but not strictly by time.
const REORDER_NS: u64 = 5_000_000_000;
/// At most this many records wait ahead of the cursor, whatever the rate
/// they were recorded at: memory stays bounded (a burst past it is shown
/// in the order it was written).
const AHEAD_MAX: usize = 50_000;
/// The app takes records in batches of at most this many: a cursor that
/// jumps far (`--speed 1000000`) does not gather a whole recording first.
const BATCH_MAX: usize = 10_000;

/// A record waiting for the cursor, ordered by time, then by reading order.
struct Ahead(u64, u64, Box<Record>);

impl PartialEq for Ahead {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Ahead {}
impl PartialOrd for Ahead {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ahead {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// A recording opened for replay and read as the cursor moves: only what
/// lies just ahead of the cursor is in memory.
pub struct Recording {
    pub header: recording::Header,
    reader: Reader,
    filter: Filter,
    ahead: BinaryHeap<Reverse<Ahead>>,
    read: u64,
    /// The latest record time read so far.
    read_to: u64,
    /// The kernel counters of `stats` lines read but not yet passed.
    counters: VecDeque<(u64, Counters)>,
    done: bool,
}

impl Recording {
    /// Opens the recording at `path` (a file or directory) and reads its
    /// header; `filter` chooses the records shown.
    pub fn open(path: &Path, filter: &Filter) -> anyhow::Result<Self> {
        let mut reader = Reader::open(path)?;
        let header = match reader.next_line()? {
            Some(Line::Header(h)) => h,
            _ => bail!("{} has no header line: not a recording", path.display()),
        };
        Ok(Self {
            header,
            reader,
            filter: filter.clone(),
            ahead: BinaryHeap::new(),
            read: 0,
            read_to: 0,
            counters: VecDeque::new(),
            done: false,
        })
    }

    /// Reads until a record lies `REORDER_NS` past `until`, the end, or
    /// the bound of records waiting.
    fn fill(&mut self, until: u64) -> anyhow::Result<()> {
        while !self.done
            && self.ahead.len() < AHEAD_MAX
            && self.read_to <= until.saturating_add(REORDER_NS)
        {
            match self.reader.next_line()? {
                None => self.done = true,
                Some(Line::Header(_)) => {}
                Some(Line::Stats(s)) => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&s) {
                        let n = |k: &str| v[k].as_u64().unwrap_or(0);
                        let c = Counters {
                            emitted: n("emitted"),
                            dropped: n("dropped"),
                            read_errors: n("kernel_errors"),
                            ..Counters::default()
                        };
                        // A bounded history: only the latest passed counts.
                        if self.counters.len() >= 1024 {
                            self.counters.pop_front();
                        }
                        self.counters.push_back((n("ts_ns"), c));
                    }
                }
                Some(Line::Record(r)) => {
                    self.read_to = self.read_to.max(r.ts_ns);
                    if self.filter.matches(&r) {
                        self.read += 1;
                        self.ahead.push(Reverse(Ahead(r.ts_ns, self.read, r)));
                    }
                }
            }
        }
        Ok(())
    }

    /// The time of the next record, if any is left.
    fn next_ts(&self) -> Option<u64> {
        self.ahead.peek().map(|Reverse(a)| a.0)
    }

    /// The next records up to `now`, in time order, at most [`BATCH_MAX`]
    /// of them; empty when none is left before `now`.
    fn take_until(&mut self, now: u64) -> anyhow::Result<Vec<Record>> {
        self.fill(now)?;
        let mut out = Vec::new();
        while out.len() < BATCH_MAX && self.next_ts().is_some_and(|t| t <= now) {
            if let Some(Reverse(Ahead(_, _, r))) = self.ahead.pop() {
                out.push(*r);
            }
            if self.ahead.is_empty() {
                self.fill(now)?;
            }
        }
        Ok(out)
    }

    /// The counters of the last `stats` line at or before `now`.
    fn counters_at(&mut self, now: u64) -> Option<Counters> {
        let mut last = None;
        while self.counters.front().is_some_and(|c| c.0 <= now) {
            last = self.counters.pop_front().map(|c| c.1);
        }
        last
    }

    fn at_end(&self) -> bool {
        self.done && self.ahead.is_empty()
    }
}

/// The replay's time cursor over a [`Recording`].
pub struct Cursor {
    pub rec: Recording,
    /// Recording time (CLOCK_MONOTONIC of the recorder) shown so far.
    pub now_ns: u64,
    /// The counters as of the cursor.
    counters: Counters,
    pub speed: f64,
}

impl Cursor {
    pub fn new(mut rec: Recording, speed: f64) -> anyhow::Result<Self> {
        // From the recording's start (or its first record, if an older
        // file was rotated away with its start).
        let start = rec.header.start_mono_ns;
        rec.fill(start)?;
        let now_ns = rec.next_ts().map_or(start, |t| t.min(start));
        Ok(Self {
            rec,
            now_ns,
            counters: Counters::default(),
            speed,
        })
    }

    pub fn at_end(&self) -> bool {
        self.rec.at_end()
    }

    /// Moves the cursor `dt_ns` on and feeds the app what it passed, with
    /// the counters and clock as of the cursor. Records reach the app even
    /// while it is paused: the cursor, not the app, holds them back.
    pub fn advance(&mut self, app: &mut App, dt_ns: u64) -> anyhow::Result<()> {
        self.now_ns = self.now_ns.saturating_add(dt_ns);
        loop {
            let records = self.rec.take_until(self.now_ns)?;
            if records.is_empty() {
                break;
            }
            let paused = std::mem::replace(&mut app.paused, false);
            app.update(Input::Records(records));
            app.paused = paused;
        }
        if let Some(c) = self.rec.counters_at(self.now_ns) {
            self.counters = c;
        }
        app.update(Input::Tick {
            counters: self.counters,
            now_ns: self.now_ns,
        });
        app.replay_clock = Some(self.clock());
        Ok(())
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
    if !(speed > 0.0 && speed.is_finite()) {
        bail!("--speed must be a positive number, got {speed}");
    }
    let rec = Recording::open(path, &filter)?;
    let mode = clap::ValueEnum::from_str(&rec.header.mode, true).unwrap_or_default();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let header = Header {
        mode,
        probes: 0,
        filters: format!(
            "{} (recorded: {})",
            filter.describe(),
            crate::util::escape::text(&rec.header.filters)
        ),
    };
    let mut app = App::new(header, no_color);
    app.paused = step;
    let mut cursor = Cursor::new(rec, speed)?;
    cursor.advance(&mut app, 0)?;
    let mut session =
        super::terminal::Session::start("for a headless replay use `inspector trace --replay`")
            .context("the replay's terminal")?;
    let mut tick = tokio::time::interval(TICK);
    let mut last = Instant::now();
    while step_once(
        &mut app,
        &mut cursor,
        &mut session.terminal,
        &mut session.events,
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
            cursor.advance(app, dt)?;
        }
        ev = events.recv() => match ev {
            Some(Event::Terminal(term::Event::Key(k))) if k.kind != KeyEventKind::Release => {
                if k.code == KeyCode::Char('n') && app.input.is_none() {
                    cursor.advance(app, STEP_NS)?;
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
        model::tracker::Tracker,
        recording::{Limits, Writer},
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
        let rec = Recording::open(&dir, &Filter::default()).expect("open");
        let header = Header {
            mode: clap::ValueEnum::from_str(&rec.header.mode, true).unwrap_or_default(),
            probes: 0,
            filters: "none".into(),
        };
        let mut app = App::new(header, true);
        // Stepping: nothing moves until `n`.
        app.paused = true;
        let mut cursor = Cursor::new(rec, 1.0).expect("cursor");
        cursor.advance(&mut app, 0).expect("advance");
        assert_eq!(app.model.decisions.len(), 0);
        cursor.advance(&mut app, STEP_NS).expect("advance");
        assert_eq!(app.model.decisions.len(), 2, "the first second");
        insta::assert_snapshot!("replay_after_one_second", screen(&app));
        cursor.advance(&mut app, 2 * STEP_NS).expect("advance");
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
