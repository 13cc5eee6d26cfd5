//! What each pane lists: the decisions folded and pinned, the ports, the
//! groups and the destinations, filtered by the namespaces followed and the
//! `/` filter and in the pane's order. Views call these; nothing changes.

use std::collections::BTreeMap;

use super::{App, PIN_NS, PINNED_ROWS, Pane, SortKey};
use crate::{
    commands::dashboard::model::{GroupKey, Member, PortRow},
    model::{
        balance::{Balance, Code, window::PortKey as BalanceKey},
        ephemeral::DestRow,
        record::Record,
    },
    util::stats::Spread,
};

/// A group of pane 3: a SO_REUSEPORT group's members and their
/// deliveries, or one listener that several tasks accept from (no members:
/// its verdict has the tasks); with its port's verdict when there is one.
#[derive(Debug, Clone)]
pub struct GroupRow<'a> {
    pub key: GroupKey,
    pub members: &'a [Member],
    /// Over the members' deliveries, or the tasks' accepts.
    pub spread: Spread,
    pub verdict: Option<&'a Balance>,
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

impl App {
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

    /// The verdict of the window following `key`'s port, once two
    /// snapshots of its sockets frame one.
    pub fn group_verdict(&self, key: &GroupKey) -> Option<&Balance> {
        let key = BalanceKey {
            netns: key.netns,
            port: key.port,
            proto: key.proto?,
        };
        self.model.windows.get(&key)?.verdict.as_ref()
    }

    /// The causes pane 3 names for a group: its port's verdict (accepts,
    /// queues, connections held) when there is one, else what its
    /// deliveries alone say (closed members left out of the split). The
    /// first code, with its evidence, and the codes of the others.
    pub fn group_cause(row: &GroupRow<'_>) -> (Code, String) {
        if let Some(v) = row.verdict
            && let Some(first) = v.causes.first()
        {
            let others: Vec<&str> = v.causes[1..].iter().map(|c| c.code.as_str()).collect();
            let detail = if others.is_empty() {
                first.detail.clone()
            } else {
                format!("{}; also {}", first.detail, others.join(", "))
            };
            return (first.code, detail);
        }
        let live: Vec<u64> = row
            .members
            .iter()
            .filter(|m| !m.closed)
            .map(|m| m.deliveries)
            .collect();
        let closed = row.members.len() - live.len();
        crate::model::balance::deliveries_cause(&live, closed)
    }

    /// Pane 3's groups: filtered and in the chosen order, each with its
    /// spread; then the listeners that several tasks accept from (no
    /// SO_REUSEPORT group, one shared queue), whose spread is over tasks.
    pub fn group_rows(&self) -> Vec<GroupRow<'_>> {
        let shown = |k: &GroupKey, owners: &[&(u32, String)]| {
            self.ns_shown(k.netns)
                && self
                    .view
                    .as_ref()
                    .is_none_or(|v| v.matches_port((k.port, k.netns), owners, &self.netns_names))
        };
        let mut rows: Vec<GroupRow<'_>> = self
            .model
            .groups
            .iter()
            .filter(|(k, members)| {
                let owners: Vec<_> = members.iter().filter_map(|m| m.owner.as_ref()).collect();
                shown(k, &owners)
            })
            .map(|(k, m)| {
                let counts: Vec<u64> = m.iter().map(|m| m.deliveries).collect();
                GroupRow {
                    key: k.clone(),
                    members: m.as_slice(),
                    spread: Spread::of(&counts),
                    verdict: self.group_verdict(k),
                }
            })
            .collect();
        for (k, w) in self.model.windows.iter() {
            let Some(v) = &w.verdict else { continue };
            let Some(m) = v
                .causes
                .iter()
                .find(|c| c.code == Code::SharedAcceptQueue)
                .and_then(|c| c.member)
                .and_then(|id| v.members.iter().find(|m| m.id == id))
            else {
                continue;
            };
            let key = GroupKey {
                proto: Some(k.proto),
                addr: m.address.ip(),
                port: k.port,
                netns: k.netns,
            };
            let in_group = rows
                .iter()
                .any(|r| (r.key.proto, r.key.port, r.key.netns) == (key.proto, k.port, k.netns));
            let owners: Vec<(u32, String)> = m
                .accepted_by
                .iter()
                .map(|t| (t.pid, t.comm.clone()))
                .collect();
            if in_group || !shown(&key, &owners.iter().collect::<Vec<_>>()) {
                continue;
            }
            let counts: Vec<u64> = m.accepted_by.iter().map(|t| t.count).collect();
            rows.push(GroupRow {
                key,
                members: &[],
                spread: Spread::of(&counts),
                verdict: Some(v),
            });
        }
        match self.group_sort {
            SortKey::Deliveries => rows.sort_by_key(|r| std::cmp::Reverse(r.spread.total)),
            SortKey::Imbalance => {
                rows.sort_by(|a, b| b.spread.imbalance.total_cmp(&a.spread.imbalance))
            }
            // The map's order: protocol, address, port, namespace.
            _ => {}
        }
        rows
    }

    /// Pane 5's destinations: filtered, under the most pressure first: the
    /// share of the range in use, then failed connect() calls, then ports
    /// in use (a range not read yet counts as no share).
    pub fn ephemeral_rows(&self) -> Vec<DestRow> {
        let mut rows = self.model.ephemeral.rows();
        rows.retain(|r| self.ns_shown(r.key.netns));
        if let Some(v) = &self.view {
            rows.retain(|r| {
                let owners: Vec<(u32, String)> = r
                    .owners
                    .iter()
                    .chain(self.pre_owners(r))
                    .map(|(p, c, _)| (*p, c.clone()))
                    .collect();
                let owners: Vec<&(u32, String)> = owners.iter().collect();
                v.matches_port((r.key.port, r.key.netns), &owners, &self.netns_names)
            });
        }
        rows.sort_by(|a, b| {
            let share = |r: &DestRow| r.share().unwrap_or(0.0);
            share(b)
                .total_cmp(&share(a))
                .then(b.failed().cmp(&a.failed()))
                .then(b.in_use.cmp(&a.in_use))
                .then(a.key.cmp(&b.key))
        });
        rows
    }

    /// Who held `r`'s connections found at start, (pid, name,
    /// connections), while some of them are still there.
    pub fn pre_owners<'a>(&'a self, r: &DestRow) -> impl Iterator<Item = &'a (u32, String, u64)> {
        let held = r.pre > 0;
        self.model
            .pre_owners
            .get(&r.key)
            .into_iter()
            .flatten()
            .filter(move |_| held)
    }
}
