//! Where records come from, live or recorded: one [`Source`] for every
//! front end. Live, the kernel's events go through the probes, the tracker,
//! the filter and the annotation stage ([`super::annotate`]); recorded, a
//! recording's lines go through the same filter (and, for `trace` without
//! `--states`, the same TIME_WAIT handover fold as live), either as fast as
//! they can be read or paced by a cursor over the recording's clock.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    os::fd::OwnedFd,
    path::Path,
    time::{Duration, Instant},
};

use tokio::{io::unix::AsyncFd, time::Interval};

use super::Pipeline;
use crate::{
    kernel::{probe::Counters, sys::monotonic_ns},
    model::{
        filter::Filter,
        record::{Record, Stats},
        tracker::RecentTw,
    },
    recording::{Header, Line, Reader, Snapshot, Window},
};

/// Records from the kernel or from a recording.
pub enum Source {
    Live(Box<Live>),
    Replay(Box<Replay>),
}

impl Source {
    /// The kernel through `pipeline`, read whenever its ring buffer has
    /// events and at least every `tick`.
    pub fn live(pipeline: Pipeline, tick: Duration) -> std::io::Result<Self> {
        Ok(Self::Live(Box::new(Live::new(pipeline, tick)?)))
    }

    /// The recording at `path` (a file or a directory), its records
    /// through `filter`; `pace` says how fast.
    pub fn replay(path: &Path, filter: Filter, pace: Pace, window: Window) -> anyhow::Result<Self> {
        Ok(Self::Replay(Box::new(Replay::open(
            path, filter, pace, window,
        )?)))
    }

    /// The live pipeline, when records come from the kernel.
    pub fn pipeline(&mut self) -> Option<&mut Pipeline> {
        match self {
            Self::Live(l) => Some(&mut l.pipeline),
            Self::Replay(_) => None,
        }
    }

    /// The clock records are read against: CLOCK_MONOTONIC live, the
    /// cursor's time in a paced replay, the last record's in a fast one.
    pub fn now_ns(&self) -> u64 {
        match self {
            Self::Live(_) => monotonic_ns(),
            Self::Replay(r) => r.now_ns,
        }
    }

    /// The kernel's counters as of [`Source::now_ns`] (recorded ones from a
    /// recording's `stats` lines).
    pub fn counters(&self) -> Counters {
        match self {
            Self::Live(l) => l.pipeline.counters(),
            Self::Replay(r) => r.counters,
        }
    }

    /// A `stats` record for `records` written out so far (`last`: the
    /// final one); a replay has none of its own.
    pub fn stats(&self, records: u64, last: bool) -> Option<Stats> {
        match self {
            Self::Live(l) => Some(l.pipeline.stats(records, last)),
            Self::Replay(_) => None,
        }
    }

    /// Waits until there may be something to read.
    pub async fn ready(&mut self) {
        match self {
            Self::Live(l) => l.ready().await,
            Self::Replay(r) => r.ready().await,
        }
    }

    /// Appends what there is to `out` (with `last`, everything the kernel
    /// still holds); the recording's header and `stats` lines go to
    /// `lines`. False once a recording is read to its end.
    pub fn read(
        &mut self,
        out: &mut Vec<Record>,
        lines: &mut Vec<Line>,
        last: bool,
    ) -> anyhow::Result<bool> {
        match self {
            Self::Live(l) => {
                l.read(out, last);
                Ok(true)
            }
            Self::Replay(r) => r.read(out, lines),
        }
    }
}

/// The kernel, through the probes and the annotation stage.
pub struct Live {
    pub pipeline: Pipeline,
    ring: AsyncFd<OwnedFd>,
    tick: Interval,
}

impl Live {
    fn new(mut pipeline: Pipeline, tick: Duration) -> std::io::Result<Self> {
        let ring = pipeline.readiness()?;
        pipeline.load_explanations();
        let mut tick = tokio::time::interval(tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            pipeline,
            ring,
            tick,
        })
    }

    async fn ready(&mut self) {
        tokio::select! {
            guard = self.ring.readable() => {
                if let Ok(mut g) = guard {
                    g.clear_ready();
                }
            }
            _ = self.tick.tick() => {}
        }
    }

    fn read(&mut self, out: &mut Vec<Record>, last: bool) {
        let start = out.len();
        self.pipeline.poll(out, last);
        // The explanation is computed now, while the port is as it was.
        let mut fresh = out.split_off(start);
        let Pipeline {
            annotator, tracker, ..
        } = &mut self.pipeline;
        if let Some(a) = annotator {
            a.annotate(&mut fresh, Some(tracker));
        }
        out.append(&mut fresh);
    }
}

/// How fast a recording is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as it can be read (`trace --replay`).
    Fast { fold_handover: bool },
    /// At `speed` times the recorded pace, a tick at a time
    /// (`dashboard --replay`); paused at first with `paused`.
    Clock { speed: f64, paused: bool },
}

/// How far a paced cursor reads ahead of itself, and how many records may
/// wait ahead of it at most: frames hold records in the order the tracker
/// released them, nearly but not strictly by time.
const REORDER_NS: u64 = 5_000_000_000;
const AHEAD_MAX: usize = 50_000;
/// Records handed over per read at most: a cursor that jumps far does not
/// gather a whole recording first, and a fast replay prints as it reads.
const BATCH_MAX: usize = 10_000;
/// A paced replay moves on this often.
const TICK: Duration = Duration::from_millis(100);

/// A record waiting for the cursor, ordered by time, then reading order.
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

/// A recording read as a stream: only what lies just ahead is in memory.
pub struct Replay {
    reader: Reader,
    filter: Filter,
    pub pace: Pace,
    /// The first header read.
    pub header: Option<Header>,
    /// `trace` without `--states` folds a connection's end in TIME_WAIT
    /// into its `tw_enter`, live or replayed.
    handovers: Option<RecentTw>,
    ahead: BinaryHeap<Reverse<Ahead>>,
    read_count: u64,
    read_to: u64,
    /// Recorded counters not yet passed (paced), newest last.
    stats_ahead: VecDeque<(u64, Counters)>,
    pub counters: Counters,
    /// The cursor (paced), or the last record's time (fast).
    pub now_ns: u64,
    tick: Option<(tokio::time::Interval, Instant)>,
    /// Moves the cursor on by this much at the next read (`n` steps).
    pending_step_ns: u64,
    /// `--since` and `--until` in record time: records outside are not
    /// handed over (a paced replay starts at `since`, with what came
    /// before applied at once, so the panes start as they were then).
    since_ns: u64,
    /// A paced replay starts from the last snapshot of the kernel's
    /// tables taken at or before `since` (or, without one, the snapshot a
    /// file opens with, before any record): waiting to be handed over.
    snapshot: Option<Box<Snapshot>>,
    /// Records before the snapshot used are in it: not handed over.
    floor_ns: u64,
    /// Records read so far, kept or not.
    records_read: u64,
    until_ns: u64,
    done: bool,
}

impl Replay {
    fn open(path: &Path, filter: Filter, pace: Pace, window: Window) -> anyhow::Result<Self> {
        let mut reader = Reader::open(path)?;
        let header = match reader.next_line()? {
            Some(Line::Header(h)) => h,
            _ => anyhow::bail!("{} has no header line: not a recording", path.display()),
        };
        let (since_ns, until_ns) = window.in_record_ns(&header);
        if since_ns > until_ns {
            anyhow::bail!("--since is after --until: the window holds nothing");
        }
        let handovers = match pace {
            Pace::Fast {
                fold_handover: true,
            } => Some(RecentTw::default()),
            _ => None,
        };
        let mut r = Self {
            reader,
            filter,
            pace,
            now_ns: header.start_mono_ns,
            header: Some(header),
            handovers,
            ahead: BinaryHeap::new(),
            read_count: 0,
            read_to: 0,
            stats_ahead: VecDeque::new(),
            counters: Counters::default(),
            tick: None,
            pending_step_ns: 0,
            since_ns,
            until_ns,
            snapshot: None,
            floor_ns: 0,
            records_read: 0,
            done: false,
        };
        if let Pace::Clock { .. } = pace {
            // From the recording's start, or its first record when an older
            // file was rotated away with its start.
            r.fill(r.now_ns)?;
            if let Some(t) = r.next_ts() {
                r.now_ns = r.now_ns.min(t);
            }
            // From `--since`: what came before is handed over at the first
            // read, at once.
            r.pending_step_ns = since_ns.saturating_sub(r.now_ns);
        }
        Ok(r)
    }

    /// The snapshot of the kernel's tables the replay starts from, when it
    /// was read on opening (the one the first file opens with); otherwise
    /// it comes with the records, as a [`Line::Snapshot`].
    pub fn take_snapshot(&mut self) -> Option<Box<Snapshot>> {
        self.snapshot.take()
    }

    /// Whether every record has been handed over.
    pub fn at_end(&self) -> bool {
        self.done && self.ahead.is_empty()
    }

    /// Pauses or resumes a paced replay.
    pub fn set_paused(&mut self, paused: bool) {
        if let Pace::Clock { paused: p, .. } = &mut self.pace {
            *p = paused;
        }
    }

    /// Moves a paced replay's cursor `ns` on at the next read.
    pub fn step(&mut self, ns: u64) {
        self.pending_step_ns = self.pending_step_ns.saturating_add(ns);
    }

    async fn ready(&mut self) {
        if let Pace::Clock { .. } = self.pace {
            let (tick, _) = self.tick.get_or_insert_with(|| {
                let mut t = tokio::time::interval(TICK);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                (t, Instant::now())
            });
            if self.pending_step_ns == 0 {
                tick.tick().await;
            }
        }
    }

    fn read(&mut self, out: &mut Vec<Record>, lines: &mut Vec<Line>) -> anyhow::Result<bool> {
        match self.pace {
            Pace::Fast { .. } => self.read_fast(out, lines),
            Pace::Clock { speed, paused } => {
                let real = match &mut self.tick {
                    Some((_, last)) => std::mem::replace(last, Instant::now()).elapsed(),
                    None => Duration::ZERO,
                };
                let dt = if paused {
                    0
                } else {
                    (real.as_nanos() as f64 * speed) as u64
                };
                let dt = dt.saturating_add(std::mem::take(&mut self.pending_step_ns));
                self.now_ns = self.now_ns.saturating_add(dt);
                self.take_until(out)?;
                if let Some(snap) = self.snapshot.take() {
                    // Before the records after it: they come at the next
                    // read, at once.
                    lines.push(Line::Snapshot(snap));
                    self.pending_step_ns = self.pending_step_ns.max(1);
                }
                let mut last = None;
                while self.stats_ahead.front().is_some_and(|c| c.0 <= self.now_ns) {
                    last = self.stats_ahead.pop_front().map(|c| c.1);
                }
                if let Some(c) = last {
                    self.counters = c;
                }
                Ok(true)
            }
        }
    }

    fn read_fast(&mut self, out: &mut Vec<Record>, lines: &mut Vec<Line>) -> anyhow::Result<bool> {
        let mut n = 0;
        while n < BATCH_MAX {
            let Some(line) = self.reader.next_line()? else {
                self.done = true;
                return Ok(false);
            };
            match line {
                Line::Record(r) => {
                    if r.ts_ns > self.until_ns.saturating_add(REORDER_NS) {
                        // Past `--until`, beyond what reordering can bring
                        // back: the rest is later still.
                        self.done = true;
                        return Ok(false);
                    }
                    self.now_ns = self.now_ns.max(r.ts_ns);
                    let folded = self.handovers.as_mut().is_some_and(|h| h.fold(&r));
                    let inside = (self.since_ns..=self.until_ns).contains(&r.ts_ns);
                    if inside && self.filter.matches(&r) && !folded {
                        out.push(*r);
                        n += 1;
                    }
                }
                other => {
                    lines.push(other);
                    // Header and stats lines in order with the records.
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }

    /// Reads until a record lies `REORDER_NS` past `until`, the end, or the
    /// bound of records waiting.
    fn fill(&mut self, until: u64) -> anyhow::Result<()> {
        while !self.done
            && self.ahead.len() < AHEAD_MAX
            && self.read_to <= until.saturating_add(REORDER_NS)
        {
            match self.reader.next_line()? {
                None => self.done = true,
                Some(Line::Header(_) | Line::SnapshotPart(_)) => {}
                Some(Line::Snapshot(mut snap)) => {
                    if snap.ts_ns <= self.since_ns || self.records_read == 0 {
                        snap.socks.retain(|s| self.filter.matches_socket(s));
                        // What it holds replaces what came before.
                        self.floor_ns = snap.ts_ns;
                        self.ahead.retain(|Reverse(a)| a.0 >= snap.ts_ns);
                        self.snapshot = Some(snap);
                    }
                }
                Some(Line::Stats(s)) => {
                    if let Some(c) = recorded_counters(&s) {
                        if self.stats_ahead.len() >= 1024 {
                            self.stats_ahead.pop_front();
                        }
                        self.stats_ahead.push_back(c);
                    }
                }
                Some(Line::Record(r)) => {
                    self.records_read += 1;
                    if r.ts_ns < self.floor_ns {
                        continue;
                    }
                    self.read_to = self.read_to.max(r.ts_ns);
                    if self.read_to > self.until_ns.saturating_add(REORDER_NS) {
                        self.done = true;
                    }
                    if r.ts_ns <= self.until_ns && self.filter.matches(&r) {
                        self.read_count += 1;
                        self.ahead.push(Reverse(Ahead(r.ts_ns, self.read_count, r)));
                    }
                }
            }
        }
        Ok(())
    }

    fn next_ts(&self) -> Option<u64> {
        self.ahead.peek().map(|Reverse(a)| a.0)
    }

    /// The next records up to the cursor, in time order, at most
    /// [`BATCH_MAX`].
    fn take_until(&mut self, out: &mut Vec<Record>) -> anyhow::Result<()> {
        let now = self.now_ns;
        self.fill(now)?;
        let mut n = 0;
        while n < BATCH_MAX && self.snapshot.is_none() && self.next_ts().is_some_and(|t| t <= now) {
            if let Some(Reverse(Ahead(_, _, r))) = self.ahead.pop() {
                out.push(*r);
                n += 1;
            }
            if self.ahead.is_empty() {
                self.fill(now)?;
            }
        }
        if n == BATCH_MAX {
            // More waits before the cursor: come back at once.
            self.pending_step_ns = self.pending_step_ns.max(1);
        }
        Ok(())
    }
}

/// A recorded `stats` line's time and kernel counters.
fn recorded_counters(line: &[u8]) -> Option<(u64, Counters)> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Some((
        n("ts_ns"),
        Counters {
            emitted: n("emitted"),
            dropped: n("dropped"),
            read_errors: n("kernel_errors"),
            ..Counters::default()
        },
    ))
}
