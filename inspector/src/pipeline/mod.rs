//! The kernel-event pipeline shared by every consumer: the probes, the
//! tracker and the record filter, read on demand. `trace` prints what it
//! yields, the dashboard models it, the scenario driver keeps the records of
//! its namespaces as evidence.

pub mod annotate;
pub mod drive;
pub mod source;

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
};

use tokio::io::{Interest, unix::AsyncFd};

pub use crate::kernel::sys::monotonic_ns;

use crate::{
    kernel::cgroup::Resolver,
    kernel::pods::PodResolver,
    kernel::probe::{Counters, LoadOptions, Mode, ProbeError, Probes},
    model::filter::Filter,
    model::record::Record,
    model::record::Stats,
    model::tracker::{CANCEL_GRACE_NS, Tracker},
};

/// The kernel probes and the tracker: raw events in, attributed records out.
/// The trace printer, the tests and the dashboard all read through this.
pub struct Pipeline {
    pub probes: Probes,
    pub tracker: Tracker,
    pub filter: Filter,
    /// Cgroup ids to paths and containers, before the filter sees them.
    pub cgroups: Resolver,
    /// Cgroups to Kubernetes pods, where the kubelet's pod log directories
    /// are found (`/var/log/pods`, or `serve --pods-dir`).
    pub pods: Option<PodResolver>,
    /// Events read from the ring buffer.
    pub seen: u64,
    scratch: Vec<Record>,
    /// Explains failures as they are read by a live source. A front end
    /// loads it ([`Pipeline::load_explanations`]) before it says it is
    /// attached: loaded at the first failure, the answer would come late,
    /// from a port that may have changed and a caller that may be gone.
    /// Pipelines that never explain (scenarios, tests) do not load it.
    pub(crate) annotator: Option<annotate::Annotator>,
}

impl Pipeline {
    pub fn new(filter: Filter, mode: Mode) -> Result<Self, ProbeError> {
        Self::with_options(
            filter,
            LoadOptions {
                mode,
                ..LoadOptions::default()
            },
        )
    }

    /// Like [`Pipeline::new`], with every load option; the namespace to
    /// filter on in the kernel is `filter`'s, else the options'.
    pub fn with_options(filter: Filter, opts: LoadOptions) -> Result<Self, ProbeError> {
        let lifecycle = opts.lifecycle_states || filter.lifecycle_states;
        let probes = Probes::load(LoadOptions {
            netns: filter.netns.or(opts.netns),
            lifecycle_states: lifecycle,
            decisions_only: opts.decisions_only || filter.decisions_only,
            ..opts
        })?;
        let mut tracker = Tracker::new();
        tracker.fold_timewait_handover(lifecycle);
        Ok(Self {
            probes,
            tracker,
            filter,
            cgroups: Resolver::new(),
            pods: PodResolver::detect(),
            seen: 0,
            scratch: Vec::new(),
            annotator: None,
        })
    }

    /// Reads what the kernel has emitted so far and appends the matching
    /// records to `out`. With `final_flush`, pending TIME_WAIT exits are
    /// resolved now instead of after their grace period.
    pub fn poll(&mut self, out: &mut Vec<Record>, final_flush: bool) {
        let Self {
            probes,
            tracker,
            scratch,
            ..
        } = self;
        self.seen += probes.drain(|ev| tracker.apply(ev, scratch)) as u64;
        let now = monotonic_ns();
        let now = if final_flush {
            now.saturating_add(CANCEL_GRACE_NS)
        } else {
            now
        };
        self.tracker.flush(now, &mut self.scratch);
        fill_cgroups(&mut self.cgroups, self.pods.as_mut(), &mut self.scratch);
        let filter = &self.filter;
        // In place, then one block copy: a record is a few hundred bytes.
        self.scratch.retain(|r| filter.matches(r));
        out.append(&mut self.scratch);
    }

    /// Loads the socket iterators that explain failures, now rather than
    /// when a live source first reads.
    pub fn load_explanations(&mut self) {
        self.annotator
            .get_or_insert_with(annotate::Annotator::default);
    }

    pub fn counters(&self) -> Counters {
        self.probes.counters().unwrap_or_default()
    }

    /// The accounting since load, for a `stats` record: what was read, what
    /// the kernel emitted, lost and failed to do. `records` is what the
    /// caller wrote out.
    pub fn stats(&self, records: u64, last: bool) -> Stats {
        Stats {
            ts_ns: monotonic_ns(),
            last,
            events_read: self.seen,
            records,
            counters: self.counters(),
        }
    }

    /// Readiness of the ring buffer for a tokio loop, on a duplicate of its
    /// descriptor owned by the returned `AsyncFd` (readiness belongs to the
    /// shared file description). The kernel wakes it once a batch has piled
    /// up; callers also poll on a timer.
    pub fn readiness(&mut self) -> io::Result<AsyncFd<OwnedFd>> {
        let dup = self.probes.ring().as_fd().try_clone_to_owned()?;
        // SAFETY: `dup` is a valid open descriptor owned by the AsyncFd for
        // its whole lifetime, and `as_raw_fd` on it returns that descriptor.
        unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Sets `cgroup`/`container` of each record from its `cgroup_id`, and
/// the pod's names where `pods` finds them.
fn fill_cgroups(
    cgroups: &mut Resolver,
    mut pods: Option<&mut PodResolver>,
    records: &mut [Record],
) {
    for r in records {
        if let Some(id) = r.cgroup_id
            && r.cgroup.is_none()
            && let Some(found) = cgroups.resolve(id)
        {
            r.cgroup = Some(found.path.clone());
            r.container = found.container.clone();
            // Only a container's cgroup can be a pod's.
            if let Some(pods) = pods.as_deref_mut()
                && r.container.is_some()
                && let Some(pod) = pods.resolve(id, &found.path)
            {
                r.k8s_namespace = Some(pod.namespace.clone());
                r.k8s_pod = Some(pod.pod.clone());
                r.k8s_container = pod.container.clone();
            }
        }
    }
}
