//! The live dashboard: the same pipeline as `trace`, a model of what it
//! reports, and a terminal view. Event intake and drawing are decoupled:
//! records are drained whenever the ring buffer is readable, frames are drawn
//! at most every 100 ms, so a burst of events never stalls the screen.
//!
//! Everything from outside the kernel (keys, resizes, SIGTERM) enters as an
//! [`Event`] on one channel, and the loop ([`Dashboard::run`]) draws on any
//! ratatui [`Backend`]: the terminal in [`run`], a `TestBackend` in tests.

pub mod app;
pub mod kernel;
pub mod model;
pub mod replay;
pub mod terminal;
pub mod ui;

use std::{
    collections::BTreeMap,
    io::{self, IsTerminal as _},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use anyhow::bail;
use crossterm::event::{self as term, KeyEventKind};
use ratatui::{Terminal, backend::Backend};
use tokio::{
    io::unix::AsyncFd,
    sync::mpsc::{self, UnboundedReceiver},
    time::Interval,
};

use self::app::{Action, App, Header, Input};
use crate::{
    kernel::sockets::SocketTable,
    model::filter::Filter,
    model::record::Record,
    pipeline::annotate::Annotator,
    pipeline::{Pipeline, monotonic_ns},
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
    let pipeline = Pipeline::new(
        Filter {
            netns: None,
            ..filter
        },
        mode,
    )?;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let mut dashboard = Dashboard::new(pipeline, no_color)?;
    dashboard.app.header.filters = filters;
    dashboard.only_netns = only_netns;
    dashboard.seed(&kernel::followed(only_netns));
    let mut session =
        terminal::Session::start("for a headless stream use `inspector trace` (or `--json`)")?;
    dashboard
        .run(&mut session.terminal, &mut session.events)
        .await
}

/// What reaches the dashboard from outside the kernel.
#[derive(Debug)]
pub enum Event {
    /// Terminal input: keys and resizes.
    Terminal(term::Event),
    /// SIGTERM, or the terminal went away.
    Quit,
}

/// Whether the loop goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// The dashboard's loop: the pipeline feeding the [`App`], the scenario
/// started from it, and when to draw.
pub struct Dashboard {
    pipeline: Pipeline,
    ring: AsyncFd<OwnedFd>,
    tick: Interval,
    pub app: App,
    running: Option<Running>,
    batch: Vec<Record>,
    annotator: Annotator,
    dirty: bool,
    last_draw: Instant,
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

impl Dashboard {
    /// Needs a tokio runtime: it registers the ring buffer and a timer.
    pub fn new(mut pipeline: Pipeline, no_color: bool) -> io::Result<Self> {
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
        let ring = pipeline.readiness()?;
        Ok(Self {
            pipeline,
            ring,
            tick: tokio::time::interval(Duration::from_millis(100)),
            app,
            running: None,
            batch: Vec::new(),
            annotator: Annotator::default(),
            dirty: true,
            last_draw: Instant::now() - Duration::from_secs(1),
            names_read: None,
            only_netns: None,
            scenario_ns: Vec::new(),
            table: None,
            reconciled: Instant::now(),
            ranges_read: BTreeMap::new(),
        })
    }

    fn table(&mut self) -> Option<&mut SocketTable> {
        let t = self
            .table
            .get_or_insert_with(|| SocketTable::load().map_err(|e| crate::error_chain(&e)));
        t.as_mut().ok()
    }

    /// Seeds the model with the sockets of `namespaces` that exist now
    /// (before any event about them).
    pub fn seed(&mut self, namespaces: &[std::path::PathBuf]) {
        let Some(table) = self.table() else { return };
        let mut socks = Vec::new();
        for ns in namespaces {
            // A namespace that went away meanwhile has nothing to seed.
            if let Ok(s) = kernel::seed(table, ns) {
                socks.extend(s);
            }
        }
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
            if let Some(r) = kernel::port_range(ns) {
                ranges.push((ns, r));
            }
        }
        self.app.update(Input::PortRanges(ranges));
    }

    /// Steps until a quit key, [`Event::Quit`] or the end of `events`.
    pub async fn run<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        events: &mut UnboundedReceiver<Event>,
    ) -> anyhow::Result<()> {
        while self.step(terminal, events).await? == Flow::Continue {}
        Ok(())
    }

    /// Waits for the ring buffer, the next tick or an event, takes in what
    /// the kernel has so far, carries out the app's actions and draws when
    /// due.
    pub async fn step<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        events: &mut UnboundedReceiver<Event>,
    ) -> anyhow::Result<Flow> {
        let app = &mut self.app;
        let mut actions = Vec::new();
        tokio::select! {
            guard = self.ring.readable() => {
                let mut guard = guard?;
                guard.clear_ready();
            }
            _ = self.tick.tick() => {
                let counters = self.pipeline.counters();
                actions.extend(app.update(Input::Tick { counters, now_ns: monotonic_ns() }));
                if self.names_read.is_none_or(|t| t.elapsed() >= NAMES_EVERY) {
                    actions.extend(app.update(Input::NetnsNames(netns_names())));
                    self.names_read = Some(Instant::now());
                }
                self.dirty = true;
            }
            ev = events.recv() => match ev {
                Some(Event::Terminal(term::Event::Key(k))) if k.kind != KeyEventKind::Release => {
                    actions.extend(app.update(Input::Key(k)));
                    self.dirty = true;
                }
                Some(Event::Terminal(term::Event::Resize(..))) => self.dirty = true,
                Some(Event::Terminal(_)) => {}
                Some(Event::Quit) | None => actions.push(Action::Quit),
            },
        }
        // Intake: everything the kernel has so far.
        self.pipeline.poll(&mut self.batch, false);
        self.annotator
            .annotate(&mut self.batch, Some(&self.pipeline.tracker));
        if let Some(run) = &mut self.running {
            let ns = run.observe(&self.batch);
            for n in ns {
                if !self.scenario_ns.contains(n) {
                    self.scenario_ns.push(*n);
                }
            }
            if !ns.is_empty() && app.namespaces.as_deref() != Some(ns) {
                let first = app.namespaces.is_none()
                    || app.namespaces.as_ref().is_some_and(|a| !ns.starts_with(a));
                let namespaces = ns.to_vec();
                actions.extend(app.update(if first {
                    Input::ScenarioStarted { namespaces }
                } else {
                    Input::FollowNamespaces(namespaces)
                }));
            }
        }
        if let Some(only) = self.only_netns {
            let scenario = &self.scenario_ns;
            self.batch
                .retain(|r| r.netns == only || scenario.contains(&r.netns));
        }
        if !self.batch.is_empty() {
            actions.extend(app.update(Input::Records(std::mem::take(&mut self.batch))));
            self.dirty = true;
        }
        // While a scenario's namespaces still exist.
        self.read_ranges();
        if self.running.as_ref().is_some_and(Running::is_finished)
            && let Some(mut run) = self.running.take()
        {
            // Trailing loopback and timer events, and pending TIME_WAIT
            // detaches resolved now.
            tokio::time::sleep(scenario::SETTLE).await;
            self.pipeline.poll(&mut self.batch, true);
            run.observe(&self.batch);
            if let Some(only) = self.only_netns {
                let ns = run.namespaces();
                self.batch
                    .retain(|r| r.netns == only || ns.contains(&r.netns));
            }
            actions.extend(
                self.app
                    .update(Input::Records(std::mem::take(&mut self.batch))),
            );
            // The scenario's namespace files close with its result.
            self.read_ranges();
            let result = run.finish();
            actions.extend(self.app.update(Input::ScenarioFinished(Box::new(result))));
            self.dirty = true;
        }
        for action in actions {
            match action {
                Action::Quit => return Ok(Flow::Quit),
                Action::RunScenario(s) => match scenario::start(s, &self.pipeline) {
                    Ok(run) => self.running = Some(run),
                    Err(e) => {
                        let r = scenario::not_started(s, &crate::error_chain(&e));
                        self.app.update(Input::ScenarioFinished(Box::new(r)));
                    }
                },
            }
        }
        if self.dirty && self.last_draw.elapsed() >= Duration::from_millis(100) {
            self.reconcile();
            let app = &mut self.app;
            // Ages and time left against this frame's clock.
            app.update(Input::Clock(monotonic_ns()));
            terminal.draw(|f| ui::render(app, f))?;
            self.last_draw = Instant::now();
            self.dirty = false;
        }
        Ok(Flow::Continue)
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
