//! The dashboard's state machine: every input arrives as an [`Input`],
//! [`App::update`] changes state and returns [`Action`]s for the loop to
//! carry out. No I/O here, so tests step it with fixture inputs.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::Model;
use crate::{
    probe::Counters,
    record::Record,
    scenario::{CATALOG, Scenario, ScenarioResult},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Binds,
    Ports,
    Reuseport,
    Scenarios,
}

impl Pane {
    pub const ALL: [Pane; 4] = [Pane::Binds, Pane::Ports, Pane::Reuseport, Pane::Scenarios];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Binds => "Bind decisions",
            Pane::Ports => "Ports & TIME_WAIT",
            Pane::Reuseport => "Reuseport",
            Pane::Scenarios => "Scenarios",
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
    ScenarioFinished(Box<ScenarioResult>),
}

#[derive(Debug)]
pub enum Action {
    Quit,
    RunScenario(&'static Scenario),
}

/// What the `/` filter keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewFilter {
    Port(u16),
    Pid(u32),
    Comm(String),
}

impl ViewFilter {
    /// `8080`, `port 8080`, `pid 42`, `comm nginx`, or a bare name.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (kind, value) = s.split_once(' ').unwrap_or(("", s));
        match kind {
            "port" => value
                .trim()
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .map(Self::Port),
            "pid" => value.trim().parse().ok().map(Self::Pid),
            "comm" => Some(Self::Comm(value.trim().to_owned())),
            _ if s.is_empty() => None,
            _ => match s.parse::<u16>() {
                Ok(p) if p != 0 => Some(Self::Port(p)),
                _ => Some(Self::Comm(s.to_owned())),
            },
        }
    }

    pub fn matches(&self, r: &Record) -> bool {
        match self {
            Self::Port(p) => r.lport == *p || r.rport == *p || r.req_port == Some(*p),
            Self::Pid(p) => r.pid == Some(*p) || r.last_pid == Some(*p),
            Self::Comm(c) => r.comm.as_deref() == Some(c) || r.last_comm.as_deref() == Some(c),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Port(p) => format!("port {p}"),
            Self::Pid(p) => format!("pid {p}"),
            Self::Comm(c) => format!("comm {c}"),
        }
    }
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
    pub selected: [usize; 4],
    pub paused: bool,
    /// Only failed decisions in the list (`f`).
    pub failures_only: bool,
    pub help: bool,
    /// `Some` while the `/` prompt is open.
    pub input: Option<String>,
    pub view: Option<ViewFilter>,
    /// Only these namespaces are shown (a scenario's), when set.
    pub namespaces: Option<Vec<u32>>,
    pub counters: Counters,
    pub header: Header,
    pub scenario: ScenarioState,
    /// Last result per scenario number.
    pub results: Vec<Option<Box<ScenarioResult>>>,
    pub no_color: bool,
}

/// Fixed facts for the header line.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub mode: crate::probe::Mode,
    pub probes: usize,
    pub filters: String,
}

impl App {
    pub fn new(header: Header, no_color: bool) -> Self {
        Self {
            model: Model::new(),
            pane: Pane::Binds,
            selected: [0; 4],
            paused: false,
            failures_only: false,
            help: false,
            input: None,
            view: None,
            namespaces: None,
            counters: Counters::default(),
            header,
            scenario: ScenarioState::Idle,
            results: vec![None; CATALOG.len()],
            no_color,
        }
    }

    pub fn update(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Key(k) => return self.key(k),
            Input::Records(records) => {
                if !self.paused {
                    for r in &records {
                        if self
                            .namespaces
                            .as_ref()
                            .is_none_or(|ns| ns.contains(&r.netns))
                        {
                            self.model.apply(r);
                        }
                    }
                }
            }
            Input::Tick { counters, now_ns } => {
                self.counters = counters;
                self.model.sample_rate(now_ns);
            }
            Input::ScenarioStarted { namespaces } => {
                // Follow the scenario's namespaces from a clean slate.
                self.model.clear();
                self.namespaces = Some(namespaces);
            }
            Input::FollowNamespaces(namespaces) => self.namespaces = Some(namespaces),
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

    /// The decisions the list shows, newest first.
    pub fn visible_decisions(&self) -> Vec<&Record> {
        self.model
            .decisions
            .iter()
            .rev()
            .filter(|r| self.view.as_ref().is_none_or(|v| v.matches(r)))
            .filter(|r| !self.failures_only || r.is_failure())
            .collect()
    }

    fn rows(&self, pane: Pane) -> usize {
        match pane {
            Pane::Binds => self.visible_decisions().len(),
            Pane::Ports => self.model.port_rows().len(),
            Pane::Reuseport => self.model.groups.len(),
            Pane::Scenarios => CATALOG.len(),
        }
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
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let i = self.pane.index();
        match k.code {
            KeyCode::Char('q') => return vec![Action::Quit],
            KeyCode::Char('c') if ctrl => return vec![Action::Quit],
            KeyCode::Tab => self.pane = Pane::ALL[(i + 1) % 4],
            KeyCode::BackTab => self.pane = Pane::ALL[(i + 3) % 4],
            KeyCode::Char(d @ '1'..='4') => {
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
            KeyCode::Char('/') => self.input = Some(String::new()),
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('f') => {
                self.failures_only = !self.failures_only;
                self.selected[Pane::Binds.index()] = 0;
            }
            KeyCode::Char('c') => {
                self.model.clear();
                self.selected = [0, 0, 0, self.selected[3]];
            }
            KeyCode::Char('r') if self.pane == Pane::Reuseport => self.model.reset_groups(),
            KeyCode::Char('a') => {
                // Back to every namespace (after following a scenario).
                self.namespaces = None;
                self.view = None;
            }
            KeyCode::Char('?') => self.help = true,
            KeyCode::Esc => self.view = None,
            _ => {}
        }
        Vec::new()
    }
}
