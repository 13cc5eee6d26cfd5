//! The kernel-event pipeline shared by every consumer: the probes, the
//! tracker and the record filter, read on demand. `trace` prints what it
//! yields, the dashboard models it, the scenario driver keeps the records of
//! its namespaces as evidence.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
};

use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    filter::Filter,
    probe::{Counters, LoadOptions, Mode, ProbeError, Probes},
    record::Record,
    tracker::{CANCEL_GRACE_NS, Tracker},
};

/// The kernel probes and the tracker: raw events in, attributed records out.
/// The trace printer, the tests and the dashboard all read through this.
pub struct Pipeline {
    pub probes: Probes,
    pub tracker: Tracker,
    pub filter: Filter,
    /// Events read from the ring buffer.
    pub seen: u64,
    scratch: Vec<Record>,
}

impl Pipeline {
    pub fn new(filter: Filter, mode: Mode) -> Result<Self, ProbeError> {
        let probes = Probes::load(LoadOptions {
            netns: filter.netns,
            mode,
        })?;
        Ok(Self {
            probes,
            tracker: Tracker::new(),
            filter,
            seen: 0,
            scratch: Vec::new(),
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
        let filter = &self.filter;
        out.extend(self.scratch.drain(..).filter(|r| filter.matches(r)));
    }

    pub fn counters(&self) -> Counters {
        self.probes.counters().unwrap_or_default()
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

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
