//! `inspector trace`: the probes, the tracker and a printer in one loop.

use std::{
    io::{self, Write},
    os::fd::{AsFd, OwnedFd},
    time::Duration,
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::SignalKind,
};

use crate::{
    filter::Filter,
    output,
    probe::{Counters, LoadOptions, Mode, Probes},
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
    pub fn new(filter: Filter, mode: Mode) -> Result<Self, crate::probe::ProbeError> {
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

pub struct TraceOptions {
    pub filter: Filter,
    pub mode: Mode,
    pub json: bool,
    pub duration: Option<Duration>,
}

/// A write failed: a closed pipe (`| head`) is the reader leaving, a
/// normal end; anything else is an error.
fn reader_gone(e: io::Error) -> anyhow::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e.into())
    }
}

pub async fn run(opts: TraceOptions) -> anyhow::Result<()> {
    let mut pipeline = Pipeline::new(opts.filter, opts.mode)?;
    eprintln!(
        "inspector: {} mode, attached: {}; filters: {}",
        pipeline.probes.mode,
        pipeline.probes.attached.join(", "),
        pipeline.filter.describe()
    );
    for m in &pipeline.probes.missing {
        eprintln!("inspector: warning: {m}");
    }
    let ring = pipeline.readiness()?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let stdout = io::stdout();
    let mut w = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut lines = Vec::with_capacity(1 << 16);
    if !opts.json {
        writeln!(w, "{}", output::HEADER)?;
        w.flush()?;
    }
    let t0 = monotonic_ns();
    let mut batch = Vec::new();
    let mut annotator = crate::explain::annotate::Annotator::default();
    let mut printed = 0u64;
    loop {
        let done = tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard?;
                guard.clear_ready();
                false
            }
            _ = tick.tick() => false,
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
            () = &mut deadline => true,
        };
        pipeline.poll(&mut batch, done);
        annotator.annotate(&mut batch);
        for r in batch.drain(..) {
            printed += 1;
            let res = if opts.json {
                // The batch's lines go out in one write below.
                crate::ndjson::write(&r, &mut lines);
                Ok(())
            } else {
                writeln!(w, "{}", output::line(&r, t0)).and_then(|()| match &r.explanation {
                    Some(why) => writeln!(w, "{:11}why: {why}", ""),
                    None => Ok(()),
                })
            };
            if let Err(e) = res {
                return reader_gone(e);
            }
        }
        if let Err(e) = w.write_all(&lines).and_then(|()| w.flush()) {
            return reader_gone(e);
        }
        lines.clear();
        if done {
            break;
        }
    }
    let c = pipeline.counters();
    eprintln!(
        "inspector: {} events read, {} printed, {} dropped (ring buffer full), {} kernel read errors",
        pipeline.seen, printed, c.dropped, c.read_errors
    );
    Ok(())
}
