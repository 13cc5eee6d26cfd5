//! What each key does: in the `/` prompt, over the help, in a detail view,
//! and in the panes.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{Action, App, Detail, DetailTarget, Pane, ScenarioState, ViewFilter};
use crate::scenario::CATALOG;

impl App {
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
                    .map(|r| DetailTarget::Group(r.key.clone()))
            }
            Pane::Ephemeral => {
                let rows = self.ephemeral_rows();
                rows.get(i.min(rows.len().saturating_sub(1)))
                    .map(|r| DetailTarget::Destination(r.key))
            }
            Pane::Scenarios => None,
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

    pub(super) fn key(&mut self, k: KeyEvent) -> Vec<Action> {
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
