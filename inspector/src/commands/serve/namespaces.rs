//! Which network namespaces the scrape reads. The socket iterators walk the
//! namespace they are created in, so the TIME_WAIT and ephemeral-port
//! gauges read each namespace on a thread that enters it. Which ones: the
//! agent's own (or only `--netns`), then named ones (`/run/netns`,
//! `/var/run/netns`), then those seen in events, then any other a process
//! is in; at most [`MAX_WATCHED`], the rest counted as left out.
//!
//! Finding them is a walk of `/proc`, so it runs at most every
//! [`RESCAN`], and only when a scrape asks.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    kernel::{netns, pods::PodResolver},
    model::record::Record,
};

use super::metrics::NetnsView;

/// Namespaces read per scrape at most.
pub const MAX_WATCHED: usize = 256;

/// Namespaces are looked for again at most this often.
pub const RESCAN: Duration = Duration::from_secs(5);

/// One namespace to read.
#[derive(Debug, Clone)]
pub struct Watched {
    pub ino: u32,
    /// A path into it; `None` for the agent's own (no thread needed).
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct Namespaces {
    /// The agent's own namespace, or the one `--netns` names (then the
    /// only one read).
    own: Option<(u32, PathBuf)>,
    only: bool,
    /// Namespaces seen in events, with a thread of the event that was in
    /// it: the way into a namespace no process and no name holds.
    seen: BTreeMap<u32, (u32, u32)>,
    watched: Vec<Watched>,
    view: NetnsView,
    scanned: Option<Instant>,
}

impl Namespaces {
    /// The agent's own namespace and, with `--netns`, only that one.
    pub fn new(own: Option<(u32, PathBuf)>, only: bool) -> Self {
        Self {
            own,
            only,
            ..Self::default()
        }
    }

    /// Notes the namespace of a record and a thread that was in it.
    pub fn note(&mut self, r: &Record) {
        if self.only || self.own.as_ref().is_some_and(|o| o.0 == r.netns) {
            return;
        }
        if let (Some(pid), Some(tid)) = (r.pid, r.tid)
            && !self.seen.contains_key(&r.netns)
        {
            // Bounded: the newest replaces the oldest-numbered.
            if self.seen.len() >= MAX_WATCHED {
                self.seen.pop_first();
            }
            self.seen.insert(r.netns, (pid, tid));
        }
    }

    /// The namespaces to read, found again if [`RESCAN`] has passed; the
    /// pods of the namespaces are looked up with `pods`.
    pub fn refresh(&mut self, pods: Option<&mut PodResolver>) -> &[Watched] {
        if self.scanned.is_some_and(|at| at.elapsed() < RESCAN) {
            return &self.watched;
        }
        self.scanned = Some(Instant::now());
        let own = self.own.as_ref().map(|(ino, path)| Watched {
            ino: *ino,
            path: self.only.then(|| path.clone()),
        });
        let mut view = NetnsView::default();
        if let Some((ino, path)) = &self.own
            && let Some(name) = named(path)
        {
            view.names.insert(*ino, name);
        }
        self.watched = own.into_iter().collect();
        if self.only {
            self.view = view;
            return &self.watched;
        }
        let found = netns::scan();
        // Gone: a namespace no event thread is in any more.
        self.seen.retain(|ino, (pid, tid)| {
            found.contains_key(ino) || netns::thread_netns(*pid, *tid, *ino).is_some()
        });
        let own_ino = self.own.as_ref().map(|o| o.0);
        let mut order: Vec<(u8, u32)> = found
            .values()
            .map(|f| {
                let rank = if f.name.is_some() {
                    0
                } else if self.seen.contains_key(&f.ino) {
                    1
                } else {
                    2
                };
                (rank, f.ino)
            })
            .chain(
                self.seen
                    .keys()
                    .filter(|ino| !found.contains_key(ino))
                    .map(|&ino| (1, ino)),
            )
            .filter(|&(_, ino)| Some(ino) != own_ino)
            .collect();
        order.sort_unstable();
        let room = MAX_WATCHED.saturating_sub(self.watched.len());
        view.left_out = order.len().saturating_sub(room);
        let mut pods = pods;
        for (_, ino) in order.into_iter().take(room) {
            let (path, f) = match found.get(&ino) {
                Some(f) => (f.path.clone(), Some(f)),
                None => {
                    let Some(&(pid, tid)) = self.seen.get(&ino) else {
                        continue;
                    };
                    match netns::thread_netns(pid, tid, ino) {
                        Some(p) => (p, None),
                        None => continue,
                    }
                }
            };
            if let Some(name) = f.and_then(|f| f.name.clone()) {
                view.names.insert(ino, name);
            }
            // Found before: a pod keeps its namespace for its life.
            if let Some(pod) = self.view.pods.get(&ino) {
                view.pods.insert(ino, pod.clone());
            } else if let (Some(pods), Some(pid)) = (pods.as_deref_mut(), f.and_then(|f| f.pid))
                && let Some(pod) = pod_of_process(pods, pid)
            {
                view.pods.insert(ino, pod);
            }
            self.watched.push(Watched {
                ino,
                path: Some(path),
            });
        }
        self.view = view;
        &self.watched
    }

    /// What the metrics show of the namespaces: `left_over` more could
    /// not be read at this scrape (gone since they were found).
    pub fn view(&self, gone: usize) -> NetnsView {
        let mut view = self.view.clone();
        view.watched = self.watched.len().saturating_sub(gone);
        view.left_out += gone;
        view
    }

    /// The way into each watched namespace, for the port-range reads.
    pub fn paths(&self) -> HashMap<u32, PathBuf> {
        let own = self.own.iter().map(|(ino, p)| (*ino, p.clone()));
        self.watched
            .iter()
            .filter_map(|w| Some((w.ino, w.path.clone()?)))
            .chain(own)
            .collect()
    }
}

/// The `/run/netns` name of the namespace file `path`, if it is one.
fn named(path: &std::path::Path) -> Option<String> {
    let parent = path.parent()?;
    netns::NAMED_DIRS
        .iter()
        .any(|d| parent == std::path::Path::new(d))
        .then(|| path.file_name()?.to_str().map(str::to_owned))
        .flatten()
}

/// The pod (namespace, pod) of process `pid`, from its cgroup v2 path.
fn pod_of_process(pods: &mut PodResolver, pid: u32) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let pod = pods.by_path(path.trim())?;
    Some((pod.namespace, pod.pod))
}
