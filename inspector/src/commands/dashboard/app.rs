//! The dashboard's state machine: every input arrives as an [`Input`],
//! [`App::update`] changes state and returns [`Action`]s for the loop to
//! carry out. No I/O here, so tests step it with fixture inputs.

use crate::model::ephemeral::{DestRow, PortRange};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::{GroupKey, Holder, KernelFiles, Member, Model, PortKey, PortRow, SeedSock};
use crate::{
    kernel::probe::Counters,
    model::record::{Record, RecordType},
    scenario::{CATALOG, Scenario, ScenarioResult, stats::Spread},
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

/// The port a decision asked for, as the kernel keys it (a failed one got
/// no local port).
pub fn asked_key(r: &Record) -> PortKey {
    PortKey {
        proto: r.proto,
        port: r.req_port.filter(|p| *p != 0).unwrap_or(r.lport),
        netns: r.netns,
    }
}

/// The sockets on a port when a decision there failed: a scenario's
/// holders are gone a moment later, the reason for the failure stays.
#[derive(Debug, Clone)]
pub struct Capture {
    pub key: PortKey,
    pub ts_ns: u64,
    pub holders: Vec<Holder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Binds,
    Ports,
    Reuseport,
    Scenarios,
    Ephemeral,
}

impl Pane {
    pub const ALL: [Pane; 5] = [
        Pane::Binds,
        Pane::Ports,
        Pane::Reuseport,
        Pane::Scenarios,
        Pane::Ephemeral,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Binds => "Bind decisions",
            Pane::Ports => "Ports & TIME_WAIT",
            Pane::Reuseport => "Reuseport",
            Pane::Scenarios => "Scenarios",
            Pane::Ephemeral => "Ephemeral ports",
        }
    }

    /// The tab's label where the full titles do not fit (80 columns).
    pub fn short_title(self) -> &'static str {
        match self {
            Pane::Ephemeral => "Ephem.",
            p => p.title(),
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

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
    /// The open sockets of a namespace, to drop those that closed without
    /// an event.
    KernelFiles(KernelFiles),
    /// Namespaces' `ip_local_port_range` (less reserved ports), read by the
    /// loop.
    PortRanges(Vec<(u32, PortRange)>),
}

#[derive(Debug)]
pub enum Action {
    Quit,
    RunScenario(&'static Scenario),
}

/// What the `/` filter keeps: one term, or several that must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewFilter {
    Port(u16),
    Pid(u32),
    Comm(String),
    /// A namespace by inode or by its `/run/netns` name.
    Netns(String),
    /// A failure's errno name (`EADDRINUSE`), any case.
    Errno(String),
    All(Vec<ViewFilter>),
}

impl ViewFilter {
    /// `8080`, `port 8080`, `pid 42`, `comm nginx`, `netns blue`,
    /// `errno EADDRINUSE`, a bare name, or several of them
    /// (`port 8080 errno eaddrinuse`).
    pub fn parse(s: &str) -> Option<Self> {
        let mut terms = Vec::new();
        let mut words = s.split_whitespace();
        while let Some(w) = words.next() {
            let term = match w {
                "port" | "pid" | "comm" | "netns" | "errno" => {
                    let value = words.next()?;
                    match w {
                        "port" => Self::Port(value.parse().ok().filter(|p| *p != 0)?),
                        "pid" => Self::Pid(value.parse().ok()?),
                        "comm" => Self::Comm(value.to_owned()),
                        "netns" => Self::Netns(value.to_owned()),
                        _ => Self::Errno(value.to_ascii_uppercase()),
                    }
                }
                _ => match w.parse::<u16>() {
                    Ok(p) if p != 0 => Self::Port(p),
                    _ => Self::Comm(w.to_owned()),
                },
            };
            terms.push(term);
        }
        match terms.len() {
            0 => None,
            1 => terms.pop(),
            _ => Some(Self::All(terms)),
        }
    }

    fn netns_is(want: &str, netns: u32, names: &BTreeMap<u32, String>) -> bool {
        netns.to_string() == want || names.get(&netns).is_some_and(|n| n == want)
    }

    pub fn matches(&self, r: &Record, names: &BTreeMap<u32, String>) -> bool {
        match self {
            Self::Port(p) => r.lport == *p || r.rport == *p || r.req_port == Some(*p),
            Self::Pid(p) => r.pid == Some(*p) || r.last_pid == Some(*p),
            Self::Comm(c) => r.comm.as_deref() == Some(c) || r.last_comm.as_deref() == Some(c),
            Self::Netns(n) => Self::netns_is(n, r.netns, names),
            Self::Errno(e) => r.errno.is_some_and(|x| x.to_string() == *e),
            Self::All(terms) => terms.iter().all(|t| t.matches(r, names)),
        }
    }

    /// Whether a port (or a group on it) with these owners passes; an
    /// errno term says nothing about a port and keeps it.
    pub fn matches_port(
        &self,
        proto_port: (u16, u32),
        owners: &[&(u32, String)],
        names: &BTreeMap<u32, String>,
    ) -> bool {
        let (port, netns) = proto_port;
        match self {
            Self::Port(p) => port == *p,
            Self::Pid(p) => owners.iter().any(|(pid, _)| pid == p),
            Self::Comm(c) => owners.iter().any(|(_, comm)| comm == c),
            Self::Netns(n) => Self::netns_is(n, netns, names),
            Self::Errno(_) => true,
            Self::All(terms) => terms
                .iter()
                .all(|t| t.matches_port(proto_port, owners, names)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Port(p) => format!("port {p}"),
            Self::Pid(p) => format!("pid {p}"),
            Self::Comm(c) => format!("comm {c}"),
            Self::Netns(n) => format!("netns {n}"),
            Self::Errno(e) => format!("errno {e}"),
            Self::All(terms) => terms
                .iter()
                .map(Self::describe)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// How panes 2 and 3 order their rows (`s` cycles through the pane's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Most sockets first (ports).
    Busiest,
    Port,
    TimeWait,
    Deliveries,
    /// Highest max/mean first (groups).
    Imbalance,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            Self::Busiest => "busiest",
            Self::Port => "port",
            Self::TimeWait => "TIME_WAIT",
            Self::Deliveries => "deliveries",
            Self::Imbalance => "imbalance",
        }
    }

    fn next_ports(self) -> Self {
        match self {
            Self::Busiest => Self::Port,
            Self::Port => Self::TimeWait,
            _ => Self::Busiest,
        }
    }

    fn next_groups(self) -> Self {
        match self {
            Self::Port => Self::Deliveries,
            Self::Deliveries => Self::Imbalance,
            _ => Self::Port,
        }
    }
}

/// A row of the decisions list: consecutive identical decisions folded.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRow<'a> {
    /// The newest of the run.
    pub record: &'a Record,
    pub count: u64,
    /// When the oldest of the run happened.
    pub first_ns: u64,
}

/// Same owner, call, result and address: one row with a count.
fn same_decision(a: &Record, b: &Record) -> bool {
    let asked = |r: &Record| match (r.req_addr, r.req_port) {
        (Some(a), Some(p)) => (a, p),
        _ => (r.laddr, r.lport),
    };
    a.kind == b.kind
        && a.pid == b.pid
        && a.comm == b.comm
        && a.phase == b.phase
        && a.errno == b.errno
        && a.proto == b.proto
        && a.netns == b.netns
        && asked(a) == asked(b)
        && (a.reuseaddr, a.reuseport, a.v6only) == (b.reuseaddr, b.reuseport, b.v6only)
}

/// Folds runs of identical records, newest first in, newest first out.
fn fold<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<DecisionRow<'a>> {
    let mut rows: Vec<DecisionRow<'a>> = Vec::new();
    for r in records {
        match rows.last_mut() {
            Some(row) if same_decision(row.record, r) => {
                row.count += 1;
                row.first_ns = row.first_ns.min(r.ts_ns);
            }
            _ => rows.push(DecisionRow {
                record: r,
                count: 1,
                first_ns: r.ts_ns,
            }),
        }
    }
    rows
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
            Input::KernelFiles(files) => {
                if !self.paused {
                    self.model.reconcile(&files);
                }
            }
            Input::NetnsNames(names) => self.netns_names = names,
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

    /// The decisions the list shows, newest first.
    pub fn visible_decisions(&self) -> Vec<&Record> {
        self.model
            .decisions
            .iter()
            .rev()
            .filter(|r| self.ns_shown(r.netns))
            .filter(|r| {
                self.view
                    .as_ref()
                    .is_none_or(|v| v.matches(r, &self.netns_names))
            })
            .filter(|r| !self.failures_only || r.is_failure())
            .collect()
    }

    /// The decisions list: runs of identical decisions folded, newest first.
    pub fn decision_rows(&self) -> Vec<DecisionRow<'_>> {
        fold(self.visible_decisions().into_iter())
    }

    /// Failures of the last [`PIN_NS`], folded, newest first, at most
    /// [`PINNED_ROWS`]; none while the list shows only failures anyway.
    pub fn pinned_rows(&self) -> Vec<DecisionRow<'_>> {
        if self.failures_only {
            return Vec::new();
        }
        let mut rows = fold(self.recent_failures());
        rows.truncate(PINNED_ROWS);
        rows
    }

    fn recent_failures(&self) -> impl Iterator<Item = &Record> {
        let since = self.model.now_ns.saturating_sub(PIN_NS);
        self.pinned
            .iter()
            .rev()
            .take_while(move |r| r.ts_ns >= since)
            .filter(|r| self.ns_shown(r.netns))
            .filter(|r| {
                self.view
                    .as_ref()
                    .is_none_or(|v| v.matches(r, &self.netns_names))
            })
    }

    /// Failures of the last [`PIN_NS`] per errno, most frequent first.
    pub fn failure_counts(&self) -> Vec<(String, u64)> {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for r in self.recent_failures() {
            if let Some(e) = r.errno {
                *by.entry(e.to_string()).or_default() += 1;
            }
        }
        let mut v: Vec<(String, u64)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Pinned rows then the list: what pane 1's selection indexes.
    pub fn selected_decision(&self) -> Option<DecisionRow<'_>> {
        let pinned = self.pinned_rows();
        let i = self.selected[Pane::Binds.index()];
        if i < pinned.len() {
            return pinned.get(i).copied();
        }
        let rows = self.decision_rows();
        let j = (i - pinned.len()).min(rows.len().saturating_sub(1));
        rows.get(j).copied()
    }

    /// Pane 2's rows: filtered and in the chosen order.
    pub fn port_rows(&self) -> Vec<PortRow> {
        let mut rows = self.model.port_rows();
        rows.retain(|r| self.ns_shown(r.key.netns));
        if let Some(v) = &self.view {
            rows.retain(|r| {
                let owners: Vec<_> = r.owners.iter().chain(r.last_owner.iter()).collect();
                v.matches_port((r.key.port, r.key.netns), &owners, &self.netns_names)
            });
        }
        match self.port_sort {
            SortKey::Port => rows.sort_by_key(|r| r.key),
            SortKey::TimeWait => {
                rows.sort_by(|a, b| b.time_wait.cmp(&a.time_wait).then(a.key.cmp(&b.key)))
            }
            // The model's own order: busiest first.
            _ => {}
        }
        rows
    }

    /// Pane 3's groups: filtered and in the chosen order, each with its
    /// spread.
    pub fn group_rows(&self) -> Vec<(&GroupKey, &[Member], Spread)> {
        let mut rows: Vec<(&GroupKey, &[Member], Spread)> = self
            .model
            .groups
            .iter()
            .filter(|(k, _)| self.ns_shown(k.netns))
            .filter(|(k, members)| {
                self.view.as_ref().is_none_or(|v| {
                    let owners: Vec<_> = members.iter().filter_map(|m| m.owner.as_ref()).collect();
                    v.matches_port((k.port, k.netns), &owners, &self.netns_names)
                })
            })
            .map(|(k, m)| {
                let counts: Vec<u64> = m.iter().map(|m| m.deliveries).collect();
                (k, m.as_slice(), Spread::of(&counts))
            })
            .collect();
        match self.group_sort {
            SortKey::Deliveries => rows.sort_by_key(|r| std::cmp::Reverse(r.2.total)),
            SortKey::Imbalance => rows.sort_by(|a, b| b.2.imbalance.total_cmp(&a.2.imbalance)),
            // The map's order: protocol, address, port, namespace.
            _ => {}
        }
        rows
    }

    /// Pane 5's destinations: filtered, the fullest first.
    pub fn ephemeral_rows(&self) -> Vec<DestRow> {
        let mut rows = self.model.ephemeral.rows();
        rows.retain(|r| self.ns_shown(r.key.netns));
        if let Some(v) = &self.view {
            rows.retain(|r| {
                let owners: Vec<(u32, String)> =
                    r.owners.iter().map(|(p, c, _)| (*p, c.clone())).collect();
                let owners: Vec<&(u32, String)> = owners.iter().collect();
                v.matches_port((r.key.port, r.key.netns), &owners, &self.netns_names)
            });
        }
        rows
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

    fn capture(&mut self, r: &Record) {
        let key = asked_key(r);
        if self
            .captures
            .iter()
            .rev()
            .take_while(|c| r.ts_ns.saturating_sub(c.ts_ns) < CAPTURE_EVERY_NS)
            .any(|c| c.key == key)
        {
            return;
        }
        // Each capture walks the model's sockets: a failure storm over
        // many ports must not turn intake into a scan per record.
        if self
            .captures
            .iter()
            .rev()
            .take(CAPTURES_PER_SECOND)
            .filter(|c| r.ts_ns.saturating_sub(c.ts_ns) < 1_000_000_000)
            .count()
            >= CAPTURES_PER_SECOND
        {
            return;
        }
        if self.captures.len() == CAPTURES_KEEP {
            self.captures.pop_front();
        }
        let mut holders = self.model.holders(key);
        holders.truncate(CAPTURE_HOLDERS);
        self.captures.push_back(Capture {
            key,
            ts_ns: r.ts_ns,
            holders,
        });
    }

    /// The holders captured when `r` (or the failure just before it on the
    /// same port) failed.
    pub fn captured(&self, r: &Record) -> Option<&Capture> {
        let key = asked_key(r);
        self.captures
            .iter()
            .rev()
            .find(|c| c.key == key && c.ts_ns <= r.ts_ns)
    }

    fn clear(&mut self) {
        self.model.clear();
        self.pinned.clear();
        self.captures.clear();
        self.multi_ns = false;
    }

    fn rows(&self, pane: Pane) -> usize {
        match pane {
            Pane::Binds => self.pinned_rows().len() + self.decision_rows().len(),
            Pane::Ports => self.port_rows().len(),
            Pane::Reuseport => self.group_rows().len(),
            Pane::Scenarios => CATALOG.len(),
            Pane::Ephemeral => self.ephemeral_rows().len(),
        }
    }

    /// Enter outside the scenarios pane: the selection's detail view.
    fn open_detail(&mut self) {
        let i = self.selected[self.pane.index()];
        let target = match self.pane {
            Pane::Binds => self.selected_decision().map(|row| DetailTarget::Decision {
                record: Box::new(row.record.clone()),
                count: row.count,
                first_ns: row.first_ns,
            }),
            Pane::Ports => {
                let rows = self.port_rows();
                rows.get(i.min(rows.len().saturating_sub(1)))
                    .map(|r| DetailTarget::Port(r.key))
            }
            Pane::Reuseport => {
                let rows = self.group_rows();
                rows.get(i.min(rows.len().saturating_sub(1)))
                    .map(|(k, _, _)| DetailTarget::Group((*k).clone()))
            }
            Pane::Scenarios | Pane::Ephemeral => None,
        };
        if let Some(target) = target {
            self.detail = Some(Detail { target, scroll: 0 });
        }
    }

    fn detail_key(&mut self, k: KeyEvent) -> Vec<Action> {
        let Some(d) = &mut self.detail else {
            return Vec::new();
        };
        match k.code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Char('h') => self.detail = None,
            KeyCode::Char('q') => return vec![Action::Quit],
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                return vec![Action::Quit];
            }
            KeyCode::Down | KeyCode::Char('j') => d.scroll = d.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => d.scroll = d.scroll.saturating_sub(1),
            KeyCode::PageDown | KeyCode::Char(' ') => d.scroll = d.scroll.saturating_add(10),
            KeyCode::PageUp => d.scroll = d.scroll.saturating_sub(10),
            KeyCode::Home | KeyCode::Char('g') => d.scroll = 0,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('p') => self.toggle_pause(),
            _ => {}
        }
        Vec::new()
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Action> {
        if let Some(text) = &mut self.input {
            match k.code {
                KeyCode::Enter => {
                    self.view = ViewFilter::parse(text);
                    self.input = None;
                    self.selected[Pane::Binds.index()] = 0;
                }
                KeyCode::Esc => self.input = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if text.len() < 40 => text.push(c),
                _ => {}
            }
            return Vec::new();
        }
        if self.help {
            self.help = false;
            return Vec::new();
        }
        if self.detail.is_some() {
            return self.detail_key(k);
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let i = self.pane.index();
        match k.code {
            KeyCode::Char('q') => return vec![Action::Quit],
            KeyCode::Char('c') if ctrl => return vec![Action::Quit],
            KeyCode::Tab => self.pane = Pane::ALL[(i + 1) % Pane::ALL.len()],
            KeyCode::BackTab => self.pane = Pane::ALL[(i + Pane::ALL.len() - 1) % Pane::ALL.len()],
            KeyCode::Char(d @ '1'..='5') => {
                self.pane = Pane::ALL[(d as usize) - ('1' as usize)];
            }
            KeyCode::Down | KeyCode::Char('j') => {
                let n = self.rows(self.pane);
                self.selected[i] = (self.selected[i] + 1).min(n.saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected[i] = self.selected[i].saturating_sub(1)
            }
            KeyCode::Home | KeyCode::Char('g') => self.selected[i] = 0,
            KeyCode::PageDown => {
                let n = self.rows(self.pane);
                self.selected[i] = (self.selected[i] + 10).min(n.saturating_sub(1));
            }
            KeyCode::PageUp => self.selected[i] = self.selected[i].saturating_sub(10),
            KeyCode::Enter if self.pane == Pane::Scenarios => {
                if let ScenarioState::Running(_) = self.scenario {
                    return Vec::new();
                }
                if let Some(s) = CATALOG.get(self.selected[i]) {
                    self.scenario = ScenarioState::Running(s);
                    return vec![Action::RunScenario(s)];
                }
            }
            KeyCode::Enter => self.open_detail(),
            KeyCode::Char('s') if self.pane == Pane::Ports => {
                self.port_sort = self.port_sort.next_ports();
                self.selected[i] = 0;
            }
            KeyCode::Char('s') if self.pane == Pane::Reuseport => {
                self.group_sort = self.group_sort.next_groups();
                self.selected[i] = 0;
            }
            KeyCode::Char('/') => self.input = Some(String::new()),
            KeyCode::Char('p') => self.toggle_pause(),
            KeyCode::Char('f') => {
                self.failures_only = !self.failures_only;
                self.selected[Pane::Binds.index()] = 0;
            }
            KeyCode::Char('c') => {
                self.clear();
                self.selected = [0, 0, 0, self.selected[3], 0];
            }
            KeyCode::Char('r') if self.pane == Pane::Reuseport => self.model.reset_groups(),
            KeyCode::Char('a') => {
                // Back to every namespace (after following a scenario).
                self.namespaces = None;
                self.view = None;
                self.multi_ns = self.namespaces_in_view().len() > 1;
            }
            KeyCode::Char('?') => self.help = true,
            KeyCode::Esc => self.view = None,
            _ => {}
        }
        Vec::new()
    }
}
