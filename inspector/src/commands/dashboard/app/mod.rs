//! The dashboard's state machine: every input arrives as an [`Input`],
//! [`App::update`] changes state and returns [`Action`]s for the loop to
//! carry out. No I/O here, so tests step it with fixture inputs.
//!
//! By job: [`pane`] (the panes and their sort keys), [`filter`] (the `/`
//! filter), [`rows`] (what each pane lists, filtered and ordered),
//! [`capture`] (what a failure's port or destination looked like when it
//! failed), [`keys`] (what each key does).

mod capture;
mod filter;
mod keys;
mod pane;
mod rows;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crossterm::event::KeyEvent;

pub use self::{
    capture::{Capture, CaptureKey, DestFacts, asked_key, connect_destination},
    filter::ViewFilter,
    pane::{Pane, SortKey},
    rows::{DecisionRow, GroupRow},
};
use super::model::{GroupKey, KernelFiles, Model, PortKey, SeedSock};
use crate::{
    kernel::probe::Counters,
    model::{
        balance::window::{PortKey as BalanceKey, Snapshot},
        ephemeral::{DestKey, PortRange},
        record::{Record, RecordType},
    },
    scenario::{CATALOG, Scenario, ScenarioResult},
};

/// Failures stay pinned at the top of the decisions for this long (kernel
/// time), however many decisions arrive after them.
pub const PIN_NS: u64 = 5 * 60 * 1_000_000_000;
/// Folded failure rows pinned at most.
pub const PINNED_ROWS: usize = 3;
/// Failures remembered for the pinned rows and the per-errno counts.
const PINNED_KEEP: usize = 500;
/// Holders captured at failures: at most this many, and one per port per
/// second (each capture walks the socket tables).
const CAPTURES_KEEP: usize = 64;
/// At most this many captures per second (kernel time), over all ports.
const CAPTURES_PER_SECOND: usize = 20;
/// Holders kept per capture: more than a detail view shows.
const CAPTURE_HOLDERS: usize = 64;
const CAPTURE_EVERY_NS: u64 = 1_000_000_000;
/// Records held while paused; past it the oldest are shed (counted in
/// [`App::shed`]).
pub const PAUSE_QUEUE: usize = 200_000;

pub enum Input {
    Key(KeyEvent),
    Records(Vec<Record>),
    /// Periodic: kernel counters and the clock (CLOCK_MONOTONIC ns).
    Tick {
        counters: Counters,
        now_ns: u64,
    },
    ScenarioStarted {
        namespaces: Vec<u32>,
    },
    /// The running scenario made another namespace: follow it too.
    FollowNamespaces(Vec<u32>),
    /// Names of the namespaces in `/run/netns`, by inode (read by the loop).
    NetnsNames(BTreeMap<u32, String>),
    ScenarioFinished(Box<ScenarioResult>),
    /// The clock (CLOCK_MONOTONIC ns) of the frame about to be drawn: ages
    /// and time left are measured against it.
    Clock(u64),
    /// Sockets in the kernel's table at start (pre-existing).
    Seed(Vec<SeedSock>),
    /// A recording's snapshot of the kernel's tables, taken at `taken_ns`
    /// (record time): what was shown before is replaced by its sockets
    /// (pre-existing).
    Snapshot {
        taken_ns: u64,
        socks: Vec<SeedSock>,
    },
    /// The open sockets of a namespace, to drop those that closed without
    /// an event.
    KernelFiles(KernelFiles),
    /// Namespaces' `ip_local_port_range` (less reserved ports), read by the
    /// loop.
    PortRanges(Vec<(u32, PortRange)>),
    /// The sockets of the ports pane 3 follows, read by the loop
    /// ([`crate::model::balance::window`]).
    Listeners(Vec<(BalanceKey, Snapshot)>),
}

#[derive(Debug)]
pub enum Action {
    Quit,
    RunScenario(&'static Scenario),
}

/// What the full-height detail view shows.
#[derive(Debug, Clone)]
pub enum DetailTarget {
    /// A decision as it was when opened, with its folded run.
    Decision {
        record: Box<Record>,
        count: u64,
        first_ns: u64,
    },
    /// A port's sockets (pane 2), live.
    Port(PortKey),
    /// A reuseport group's members and their deliveries (pane 3), live.
    Group(GroupKey),
    /// A destination's local ports (pane 5), live.
    Destination(DestKey),
}

#[derive(Debug, Clone)]
pub struct Detail {
    pub target: DetailTarget,
    /// First line shown.
    pub scroll: u16,
}

#[derive(Debug, Clone)]
pub enum ScenarioState {
    Idle,
    Running(&'static Scenario),
    Done(Box<ScenarioResult>),
}

pub struct App {
    pub model: Model,
    pub pane: Pane,
    /// Selected row per pane.
    pub selected: [usize; 5],
    pub paused: bool,
    /// Records that arrived while paused, applied on resume.
    pub held: VecDeque<Record>,
    /// Records shed from a full [`App::held`].
    pub shed: u64,
    /// Only failed decisions in the list (`f`).
    pub failures_only: bool,
    pub help: bool,
    /// `Some` while the `/` prompt is open.
    pub input: Option<String>,
    pub view: Option<ViewFilter>,
    /// The full-height view opened with Enter, when open.
    pub detail: Option<Detail>,
    pub port_sort: SortKey,
    pub group_sort: SortKey,
    /// Failed decisions, newest last, for the pinned rows.
    pub pinned: VecDeque<Record>,
    /// Holders at recent failures, newest last.
    pub captures: VecDeque<Capture>,
    /// `/run/netns` names by namespace inode.
    pub netns_names: BTreeMap<u32, String>,
    /// More than one namespace among what is shown: rows name theirs.
    pub multi_ns: bool,
    /// Why auto mode did not get fentry: the kernel's message (`?` shows
    /// it whole, the header in short).
    pub fallback: Option<String>,
    /// Only these namespaces are shown (a scenario's), when set.
    pub namespaces: Option<Vec<u32>>,
    pub counters: Counters,
    pub header: Header,
    pub scenario: ScenarioState,
    /// Last result per scenario number.
    pub results: Vec<Option<Box<ScenarioResult>>>,
    pub no_color: bool,
    /// Replaying a recording: the time at the replay's cursor, shown in
    /// the header instead of the live mode.
    pub replay_clock: Option<String>,
}

/// Fixed facts for the header line.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub mode: crate::kernel::probe::Mode,
    pub probes: usize,
    pub filters: String,
}

impl App {
    /// The fallback reason in a few words: the errno the kernel gave.
    pub fn fallback_short(&self) -> Option<String> {
        let full = self.fallback.as_deref()?;
        let errno = [
            ("EPERM", "Operation not permitted"),
            ("EINVAL", "Invalid argument"),
            ("ENOTSUPP", "524"),
            ("EACCES", "Permission denied"),
            ("ENOENT", "No such file"),
        ]
        .iter()
        .find(|(name, text)| full.contains(name) || full.contains(text))
        .map(|(name, _)| *name);
        Some(match errno {
            Some(e) => format!("fentry refused: {e}"),
            None => "fentry refused".to_owned(),
        })
    }
}

impl App {
    pub fn new(header: Header, no_color: bool) -> Self {
        Self {
            model: Model::new(),
            pane: Pane::Binds,
            selected: [0; 5],
            paused: false,
            held: VecDeque::new(),
            shed: 0,
            failures_only: false,
            help: false,
            input: None,
            view: None,
            detail: None,
            port_sort: SortKey::Busiest,
            group_sort: SortKey::Port,
            pinned: VecDeque::new(),
            captures: VecDeque::new(),
            netns_names: BTreeMap::new(),
            multi_ns: false,
            fallback: None,
            namespaces: None,
            counters: Counters::default(),
            header,
            scenario: ScenarioState::Idle,
            results: vec![None; CATALOG.len()],
            no_color,
            replay_clock: None,
        }
    }

    pub fn update(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Key(k) => return self.key(k),
            Input::Records(records) => {
                if self.paused {
                    // The display is frozen, the intake is not.
                    for r in records {
                        if self.held.len() == PAUSE_QUEUE {
                            self.held.pop_front();
                            self.shed += 1;
                        }
                        self.held.push_back(r);
                    }
                } else {
                    self.intake(&records);
                }
            }
            Input::Clock(now_ns) => {
                if !self.paused {
                    self.model.set_clock(now_ns);
                }
            }
            Input::Seed(socks) => {
                self.model.seed(&socks);
                self.multi_ns = self.namespaces_in_view().len() > 1;
            }
            Input::Snapshot { taken_ns, socks } => {
                self.clear();
                self.held.clear();
                // Time left on its TIME_WAIT sockets counts from when it
                // was taken, paused or not.
                self.model.set_clock(taken_ns);
                self.model.seed(&socks);
                self.multi_ns = self.namespaces_in_view().len() > 1;
            }
            Input::KernelFiles(files) => {
                if !self.paused {
                    self.model.reconcile(&files);
                }
            }
            Input::NetnsNames(names) => self.netns_names = names,
            Input::Listeners(snaps) => {
                if !self.paused {
                    for (key, snap) in snaps {
                        self.model.windows.snapshot(key, snap);
                    }
                }
            }
            Input::PortRanges(ranges) => {
                for (netns, range) in ranges {
                    self.model.ephemeral.set_range(netns, range);
                }
            }
            Input::Tick { counters, now_ns } => {
                self.counters = counters;
                self.model.sample_rate(now_ns);
                if !self.paused {
                    self.model.set_clock(now_ns);
                }
            }
            Input::ScenarioStarted { namespaces } => {
                // Show the scenario's namespaces; what came before stays
                // (`a` shows it again).
                self.namespaces = Some(namespaces);
                self.selected = [0, 0, 0, self.selected[3], 0];
                self.multi_ns = self.namespaces_in_view().len() > 1;
            }
            Input::FollowNamespaces(namespaces) => {
                self.namespaces = Some(namespaces);
                self.multi_ns = self.namespaces_in_view().len() > 1;
            }
            Input::ScenarioFinished(result) => {
                let i = (result.number as usize).saturating_sub(1);
                if let Some(slot) = self.results.get_mut(i) {
                    *slot = Some(result.clone());
                }
                self.namespaces = Some(result.namespaces.clone());
                self.scenario = ScenarioState::Done(result);
            }
        }
        Vec::new()
    }

    fn intake(&mut self, records: &[Record]) {
        for r in records {
            self.model.apply(r);
            if r.is_failure() && matches!(r.kind, RecordType::Bind | RecordType::Connect) {
                if self.pinned.len() == PINNED_KEEP {
                    self.pinned.pop_front();
                }
                self.pinned.push_back(r.clone());
                self.capture(r);
            }
        }
        self.multi_ns = self.namespaces_in_view().len() > 1;
    }

    /// Pause or resume; on resume what arrived meanwhile is applied.
    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            let held: Vec<Record> = self.held.drain(..).collect();
            self.intake(&held);
        }
    }

    /// Whether the namespaces followed (a scenario's) include `netns`.
    fn ns_shown(&self, netns: u32) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|ns| ns.contains(&netns))
    }

    /// Failed calls in the namespaces the view follows (all of them when
    /// it follows every namespace): the header's count, scoped like the
    /// panes under it.
    pub fn failures_in_view(&self) -> u64 {
        match &self.namespaces {
            None => self.model.failures,
            Some(ns) => ns
                .iter()
                .filter_map(|n| self.model.failures_by_ns.get(n))
                .sum(),
        }
    }

    /// Namespaces among what the panes show.
    pub fn namespaces_in_view(&self) -> BTreeSet<u32> {
        let mut ns: BTreeSet<u32> = self.model.decisions.iter().map(|r| r.netns).collect();
        ns.extend(self.model.groups.keys().map(|k| k.netns));
        ns.extend(self.model.port_rows().iter().map(|r| r.key.netns));
        ns.retain(|n| self.ns_shown(*n));
        ns
    }

    /// A namespace's short name: its `/run/netns` name, else its inode.
    pub fn ns_name(&self, netns: u32) -> String {
        self.netns_names
            .get(&netns)
            .cloned()
            .unwrap_or_else(|| netns.to_string())
    }

    fn clear(&mut self) {
        self.model.clear();
        self.pinned.clear();
        self.captures.clear();
        self.multi_ns = false;
    }
}
