//! The dashboard: records from the one loop's source (the kernel, or a
//! recording replayed at its own pace: [`replay`]), a model of what they
//! say, and a terminal view. Intake and drawing are decoupled: records are
//! taken whenever the source has them, frames are drawn at most every
//! 100 ms, so a burst of events never stalls the screen.
//!
//! Everything from outside the records (keys, resizes) enters as an
//! [`Event`] on one channel, the [`Dashboard`]'s input on the loop
//! ([`crate::pipeline::drive`]); it draws on any ratatui [`Backend`]: the
//! terminal in [`run`], a `TestBackend` in tests.

pub mod app;
pub mod kernel;
pub mod model;
pub mod replay;
pub mod terminal;
pub mod ui;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, IsTerminal as _},
    time::{Duration, Instant},
};

use anyhow::bail;
use crossterm::event::{self as term, KeyCode, KeyEventKind};
use ratatui::{Terminal, backend::Backend};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use self::app::{Action, App, Header, Input};
use crate::{
    kernel::{sockets::SocketTable, sys::monotonic_ns},
    model::{
        balance::window::{PortKey as BalanceKey, Snapshot},
        filter::Filter,
        record::Record,
    },
    pipeline::{
        Pipeline,
        drive::{self, Flow, Sink, Stop},
        source::Source,
    },
    scenario::{self, Running},
};

/// The live dashboard on this terminal ([`terminal::Session`] gives it
/// back however the dashboard ends).
pub async fn run(filter: Filter, mode: crate::kernel::probe::Mode) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!(
            "the dashboard needs a terminal; for a headless stream use `inspector trace` (or `--json`)"
        );
    }
    // The namespace filter is applied here, not in the kernel: a scenario
    // started from the dashboard runs in namespaces of its own, which are
    // followed in addition.
    let only_netns = filter.netns;
    let filters = filter.describe();
    let mut pipeline = Pipeline::new(
        Filter {
            netns: None,
            ..filter
        },
        mode,
    )?;
    pipeline.load_explanations();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let session =
        terminal::Session::start("for a headless stream use `inspector trace` (or `--json`)")?;
    let (mut src, mut dashboard) =
        Dashboard::live(pipeline, session.terminal, session.events, no_color)?;
    dashboard.app.header.filters = filters;
    dashboard.only_netns = only_netns;
    dashboard.seed(&crate::kernel::netns::followed(only_netns));
    let mut stop = Stop::new(None)?;
    drive::run(&mut src, &mut dashboard, &mut stop).await
}

/// What reaches the dashboard from outside the kernel.
#[derive(Debug)]
pub enum Event {
    /// Terminal input: keys and resizes.
    Terminal(term::Event),
    /// SIGTERM, or the terminal went away.
    Quit,
}

/// How far `n` moves a replay's cursor.
pub const STEP_NS: u64 = 1_000_000_000;

/// The dashboard on the one loop: records (live or replayed) into the
/// [`App`], keys from the terminal, a scenario started from it, and when to
/// draw, on any ratatui [`Backend`].
pub struct Dashboard<B: Backend> {
    terminal: Terminal<B>,
    events: UnboundedReceiver<Event>,
    pub app: App,
    running: Option<Running>,
    /// A finished scenario's trailing events are awaited until then.
    settle_until: Option<Instant>,
    pub(crate) dirty: bool,
    pub(crate) last_draw: Instant,
    pub(crate) last_tick: Option<Instant>,
    /// When `/run/netns` was last read.
    names_read: Option<Instant>,
    /// Only this namespace's records (`--netns`), and those of the
    /// scenarios started here.
    pub only_netns: Option<u32>,
    scenario_ns: Vec<u32>,
    /// The kernel's socket tables, loaded on first use; `Err` once refused
    /// (the reason stays, and nothing is retried).
    table: Option<Result<SocketTable, String>>,
    /// When the silent sockets were last checked against the kernel.
    reconciled: Instant,
    /// When each namespace's port range was last read, and how many
    /// destinations the model had made in it then.
    ranges_read: BTreeMap<u32, (Instant, u64)>,
    /// When pane 3's ports were last read.
    ports_read: Instant,
    /// When ports were last read before their turn.
    ports_soon: Instant,
    /// Ports read at once when newly followed ([`Self::read_ports`]).
    ports_tried: BTreeSet<BalanceKey>,
    /// A path into each of their namespaces.
    netns_paths: BTreeMap<u32, std::path::PathBuf>,
    /// The last read, given to the model after the next batch of records:
    /// every record from before the read is in by then.
    ports_pending: Vec<(BalanceKey, Snapshot)>,
}

/// How often `/run/netns` is read again: names come and go rarely.
const NAMES_EVERY: Duration = Duration::from_secs(10);

/// The names `ip netns` gave namespaces (bind mounts in `/run/netns`), by
/// namespace inode. Unreadable entries are skipped: a name is a nicety.
pub fn netns_names() -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return names;
    };
    for entry in dir.flatten() {
        if let (Ok(ino), Some(name)) = (
            crate::kernel::netns::inode(&entry.path()),
            entry.file_name().to_str(),
        ) {
            names.insert(ino, name.to_owned());
        }
    }
    names
}

impl<B: Backend> Dashboard<B> {
    /// The live dashboard on `pipeline`, and the source it reads. Needs a
    /// tokio runtime (the ring buffer's readiness).
    pub fn live(
        pipeline: Pipeline,
        terminal: Terminal<B>,
        events: UnboundedReceiver<Event>,
        no_color: bool,
    ) -> io::Result<(Source, Self)> {
        let header = Header {
            mode: pipeline.probes.mode,
            probes: pipeline.probes.attached.len(),
            filters: pipeline.filter.describe(),
        };
        let mut app = App::new(header, no_color);
        app.fallback = pipeline
            .probes
            .missing
            .iter()
            .find(|m| m.starts_with("fentry/fexit refused"))
            .cloned();
        let src = Source::live(pipeline, Duration::from_millis(100))?;
        Ok((src, Self::new(terminal, events, app)))
    }

    pub fn new(terminal: Terminal<B>, events: UnboundedReceiver<Event>, app: App) -> Self {
        Self {
            terminal,
            events,
            app,
            running: None,
            settle_until: None,
            dirty: true,
            last_draw: Instant::now() - Duration::from_secs(1),
            last_tick: None,
            names_read: None,
            only_netns: None,
            scenario_ns: Vec::new(),
            table: None,
            reconciled: Instant::now(),
            ranges_read: BTreeMap::new(),
            ports_read: Instant::now(),
            ports_soon: Instant::now(),
            ports_tried: BTreeSet::new(),
            netns_paths: BTreeMap::new(),
            ports_pending: Vec::new(),
        }
    }

    /// The terminal drawn on (a `TestBackend` in tests).
    pub fn terminal(&self) -> &Terminal<B> {
        &self.terminal
    }

    fn table(&mut self) -> Option<&mut SocketTable> {
        let t = self
            .table
            .get_or_insert_with(|| SocketTable::load().map_err(|e| crate::util::errors::chain(&e)));
        t.as_mut().ok()
    }

    /// Seeds the model with the sockets of `namespaces` that exist now
    /// (before any event about them).
    pub fn seed(&mut self, namespaces: &[std::path::PathBuf]) {
        let Some(table) = self.table() else { return };
        let socks = kernel::seed_all(table, namespaces);
        self.app.update(Input::Clock(monotonic_ns()));
        self.app.update(Input::Seed(socks));
    }

    /// Checks the sockets that close without an event against the
    /// kernel's table, every [`kernel::RECONCILE_EVERY`].
    fn reconcile(&mut self) {
        if self.reconciled.elapsed() < kernel::RECONCILE_EVERY || self.app.paused {
            return;
        }
        self.reconciled = Instant::now();
        let namespaces = self.app.model.silent_namespaces();
        if namespaces.is_empty() {
            return;
        }
        let Some(table) = self.table() else { return };
        let mut found = Vec::new();
        for ns in namespaces.into_iter().take(kernel::RECONCILE_NAMESPACES) {
            if let Ok(files) = kernel::files(table, ns) {
                found.push(files);
            }
        }
        for files in found {
            self.app.update(Input::KernelFiles(files));
        }
    }

    /// Reads the sockets of the ports pane 3 follows, every
    /// [`kernel::PORTS_EVERY`] (a port newly followed, or filling its
    /// window, within [`kernel::PORTS_SOON`]): each read
    /// closes one window of its verdict, once the records from before it
    /// are in (the next batch).
    fn read_ports(&mut self) {
        if !self.ports_pending.is_empty() {
            let snaps = std::mem::take(&mut self.ports_pending);
            self.app.update(Input::Listeners(snaps));
        }
        if self.app.paused {
            return;
        }
        // A port newly followed, or filling its window, is read before its
        // turn (at most every PORTS_SOON).
        let keys = if self.ports_read.elapsed() >= kernel::PORTS_EVERY {
            self.ports_read = Instant::now();
            self.ports_soon = Instant::now();
            self.app.model.windows.keys()
        } else if self.ports_soon.elapsed() >= kernel::PORTS_SOON {
            self.ports_soon = Instant::now();
            // A port never read is tried once: one whose namespace cannot
            // be read waits its turn.
            let windows = &self.app.model.windows;
            let tried = &mut self.ports_tried;
            tried.retain(|k| windows.get(k).is_some());
            windows
                .due()
                .into_iter()
                .filter(|(k, never)| !never || tried.insert(*k))
                .map(|(k, _)| k)
                .collect()
        } else {
            Vec::new()
        };
        if keys.is_empty() {
            return;
        }
        let mut paths = std::mem::take(&mut self.netns_paths);
        let snaps = match self.table() {
            Some(table) => kernel::port_snapshots(table, &keys, &mut paths),
            None => Vec::new(),
        };
        self.netns_paths = paths;
        self.ports_pending = snaps;
    }

    /// Reads the port range of namespaces with client connections: when a
    /// namespace's first connect() to a new destination shows (a scenario
    /// sets its range before it connects; a namespace may reuse the inode
    /// of one read before), at most every [`kernel::RANGE_AGAIN`], and
    /// every [`kernel::RANGE_EVERY`] anyway.
    fn read_ranges(&mut self) {
        let eph = &self.app.model.ephemeral;
        let namespaces = eph.namespaces();
        self.ranges_read.retain(|ns, _| namespaces.contains(ns));
        let due: Vec<(u32, u64)> = namespaces
            .into_iter()
            .map(|ns| (ns, eph.made(ns)))
            .filter(|(ns, made)| {
                self.ranges_read.get(ns).is_none_or(|(t, seen)| {
                    t.elapsed() >= kernel::RANGE_EVERY
                        || (made != seen && t.elapsed() >= kernel::RANGE_AGAIN)
                })
            })
            .take(kernel::RANGE_NAMESPACES)
            .collect();
        if due.is_empty() {
            return;
        }
        let mut ranges = Vec::new();
        for (ns, made) in due {
            self.ranges_read.insert(ns, (Instant::now(), made));
            if let Some(r) = crate::kernel::netns::port_range(ns) {
                ranges.push((ns, r));
            }
        }
        self.app.update(Input::PortRanges(ranges));
    }

    /// The running scenario sees the records; the view follows its
    /// namespaces.
    fn follow_scenario(&mut self, records: &[Record]) -> Vec<Action> {
        let Some(run) = &mut self.running else {
            return Vec::new();
        };
        let ns = run.observe(records);
        for n in ns {
            if !self.scenario_ns.contains(n) {
                self.scenario_ns.push(*n);
            }
        }
        let app = &mut self.app;
        if ns.is_empty() || app.namespaces.as_deref() == Some(ns) {
            return Vec::new();
        }
        let first =
            app.namespaces.is_none() || app.namespaces.as_ref().is_some_and(|a| !ns.starts_with(a));
        let namespaces = ns.to_vec();
        app.update(if first {
            Input::ScenarioStarted { namespaces }
        } else {
            Input::FollowNamespaces(namespaces)
        })
    }

    /// A scenario that finished: its trailing loopback and timer events
    /// are awaited for [`scenario::SETTLE`], then its result shown.
    fn finish_scenario(&mut self, src: &mut Source) -> Vec<Action> {
        let finished = self.running.as_ref().is_some_and(Running::is_finished);
        if !finished {
            return Vec::new();
        }
        let until = *self
            .settle_until
            .get_or_insert_with(|| Instant::now() + scenario::SETTLE);
        if Instant::now() < until {
            return Vec::new();
        }
        self.settle_until = None;
        let Some(mut run) = self.running.take() else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        if let Some(p) = src.pipeline() {
            // Pending TIME_WAIT detaches resolved now.
            p.poll(&mut batch, true);
        }
        run.observe(&batch);
        if let Some(only) = self.only_netns {
            let ns = run.namespaces();
            batch.retain(|r| r.netns == only || ns.contains(&r.netns));
        }
        let mut actions = self.app.update(Input::Records(batch));
        // The scenario's namespace files close with its result.
        self.read_ranges();
        let result = run.finish();
        actions.extend(self.app.update(Input::ScenarioFinished(Box::new(result))));
        self.dirty = true;
        actions
    }

    fn act(&mut self, src: &mut Source, actions: Vec<Action>) -> Flow {
        for action in actions {
            match action {
                Action::Quit => return Flow::Quit,
                Action::RunScenario(s) => {
                    let started = match src.pipeline() {
                        Some(p) => {
                            scenario::start(s, p).map_err(|e| crate::util::errors::chain(&e))
                        }
                        None => Err("scenarios run on the live kernel, not in a replay".to_owned()),
                    };
                    match started {
                        Ok(run) => self.running = Some(run),
                        Err(e) => {
                            let r = scenario::not_started(s, &e);
                            self.app.update(Input::ScenarioFinished(Box::new(r)));
                        }
                    }
                }
            }
        }
        Flow::Continue
    }

    /// A frame, at most every 100 ms and only when something changed.
    fn draw(&mut self, src: &Source) -> anyhow::Result<()> {
        if !self.dirty || self.last_draw.elapsed() < Duration::from_millis(100) {
            return Ok(());
        }
        if matches!(src, Source::Live(_)) {
            self.reconcile();
        }
        let app = &mut self.app;
        // Ages and time left against this frame's clock.
        app.update(Input::Clock(src.now_ns()));
        self.terminal.draw(|f| ui::render(app, f))?;
        self.last_draw = Instant::now();
        self.dirty = false;
        Ok(())
    }
}

impl<B: Backend> Sink for Dashboard<B> {
    type Input = Event;

    fn records(&mut self, src: &mut Source, records: &mut Vec<Record>) -> anyhow::Result<Flow> {
        let mut actions = Vec::new();
        if self
            .last_tick
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            self.last_tick = Some(Instant::now());
            let (counters, now_ns) = (src.counters(), src.now_ns());
            actions.extend(self.app.update(Input::Tick { counters, now_ns }));
            if matches!(src, Source::Live(_))
                && self.names_read.is_none_or(|t| t.elapsed() >= NAMES_EVERY)
            {
                actions.extend(self.app.update(Input::NetnsNames(netns_names())));
                self.names_read = Some(Instant::now());
            }
            self.dirty = true;
        }
        if let Source::Replay(r) = src {
            // The replay's clock moves with every read, not only on ticks.
            let clock = replay::clock(r);
            if self.app.replay_clock.as_ref() != Some(&clock) {
                self.app.replay_clock = Some(clock);
                self.dirty = true;
            }
        }
        actions.extend(self.follow_scenario(records));
        if let Some(only) = self.only_netns {
            let scenario = &self.scenario_ns;
            records.retain(|r| r.netns == only || scenario.contains(&r.netns));
        }
        if !records.is_empty() {
            // A replay's cursor, not the app's pause, holds records back.
            let replaying = matches!(src, Source::Replay(_));
            let held = self.app.paused && !replaying;
            let paused = std::mem::replace(&mut self.app.paused, held);
            actions.extend(self.app.update(Input::Records(std::mem::take(records))));
            self.app.paused = paused;
            self.dirty = true;
        }
        if matches!(src, Source::Live(_)) {
            // While a scenario's namespaces still exist.
            self.read_ranges();
            self.read_ports();
            actions.extend(self.finish_scenario(src));
        }
        let flow = self.act(src, actions);
        self.draw(src)?;
        Ok(flow)
    }

    /// A replay's snapshot of the kernel's tables: the panes start from
    /// it, its sockets marked `pre` as at a live start.
    fn recorded(&mut self, line: crate::recording::Line) -> anyhow::Result<()> {
        if let crate::recording::Line::Snapshot(snap) = line {
            self.app.update(Input::Snapshot {
                taken_ns: snap.ts_ns,
                socks: snap.socks,
            });
            // Shown at the next frame, however recent the last.
            self.dirty = true;
            self.last_draw = Instant::now() - Duration::from_secs(1);
        }
        Ok(())
    }

    fn input(&mut self) -> impl std::future::Future<Output = Option<Event>> {
        self.events.recv()
    }

    fn on_input(&mut self, src: &mut Source, input: Event) -> anyhow::Result<Flow> {
        let actions = match input {
            Event::Terminal(term::Event::Key(k)) if k.kind != KeyEventKind::Release => {
                match src {
                    // `n` moves a replay's cursor a second on.
                    Source::Replay(r)
                        if k.code == KeyCode::Char('n') && self.app.input.is_none() =>
                    {
                        r.step(STEP_NS);
                        Vec::new()
                    }
                    _ => {
                        let actions = self.app.update(Input::Key(k));
                        if let Source::Replay(r) = src {
                            r.set_paused(self.app.paused);
                        }
                        actions
                    }
                }
            }
            Event::Terminal(term::Event::Resize(..)) => Vec::new(),
            Event::Terminal(_) => return Ok(Flow::Continue),
            Event::Quit => return Ok(Flow::Quit),
        };
        self.dirty = true;
        let flow = self.act(src, actions);
        // A key's effect shows at once.
        self.last_draw = Instant::now() - Duration::from_secs(1);
        self.draw(src)?;
        Ok(flow)
    }
}

#[cfg(test)]
mod tests;

/// Terminal input on a thread of its own (crossterm's read blocks), sent as
/// [`Event`]s; when the terminal goes away, [`Event::Quit`].
pub(crate) fn spawn_key_reader(tx: mpsc::UnboundedSender<Event>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("inspector-keys".into())
        .spawn(move || {
            while let Ok(ev) = term::read() {
                if tx.send(Event::Terminal(ev)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::Quit);
        })?;
    Ok(())
}
