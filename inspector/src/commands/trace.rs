//! `inspector trace`: the probes, the tracker and a printer in one loop.

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use tokio::signal::unix::SignalKind;

use crate::{
    kernel::probe::Mode,
    model::filter::Filter,
    output::text as output,
    pipeline::{Pipeline, monotonic_ns},
};

/// A `stats` record goes out at least this often while anything happens,
/// so a reader of the stream sees losses in band, not only at exit.
const STATS_EVERY: Duration = Duration::from_secs(10);

pub struct TraceOptions {
    pub filter: Filter,
    pub mode: Mode,
    pub json: bool,
    pub duration: Option<Duration>,
    /// A recording to read instead of the kernel.
    pub replay: Option<std::path::PathBuf>,
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

/// True when standard output's reader has gone even though nothing was
/// written: a pipe whose read end closed polls POLLERR on its write end
/// (pipe_poll()), a hung-up terminal POLLHUP. A file never reports either.
fn stdout_reader_left() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; no wait.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// `trace --replay`: a recording through the same filter and printers.
/// `--json` writes each kept line as `trace --json` wrote it live.
fn replay(opts: &TraceOptions, path: &std::path::Path) -> anyhow::Result<()> {
    use crate::recording::Line;
    let stdout = io::stdout();
    let mut w = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = Vec::with_capacity(1 << 10);
    let mut t0 = None;
    let mut printed = 0u64;
    // A recording has every state change; `trace` without `--states` folds
    // a connection's end in TIME_WAIT into its tw_enter, live or replayed.
    let mut handovers = crate::model::tracker::RecentTw::default();
    let res = crate::recording::replay(path, |l| {
        match l {
            Line::Header(h) => {
                if t0.is_none() && !opts.json {
                    // The columns once the file is known to be a recording.
                    writeln!(w, "{}", output::HEADER)?;
                    // The header is the recording's word: escaped.
                    eprintln!(
                        "inspector: replaying {} (host {}, kernel {}, {} mode, filters: {}); filters: {}",
                        path.display(),
                        crate::util::escape::Escaped(&h.host),
                        crate::util::escape::Escaped(&h.kernel),
                        crate::util::escape::Escaped(&h.mode),
                        crate::util::escape::Escaped(&h.filters),
                        opts.filter.describe()
                    );
                }
                // Times count from the first recorder's start, across files.
                t0.get_or_insert(h.start_mono_ns);
            }
            Line::Stats(s) if opts.json => {
                w.write_all(&s)?;
                w.write_all(b"\n")?;
            }
            Line::Stats(_) => {}
            Line::Record(r)
                if opts.filter.matches(&r)
                    && !(opts.filter.lifecycle_states && handovers.fold(&r)) =>
            {
                printed += 1;
                if opts.json {
                    line.clear();
                    crate::output::ndjson::write(&r, &mut line);
                    w.write_all(&line)?;
                } else {
                    writeln!(w, "{}", output::line(&r, t0.unwrap_or(0)))?;
                    if let Some(why) = output::why(&r) {
                        writeln!(w, "{why}")?;
                    }
                }
            }
            Line::Record(_) => {}
        }
        Ok(())
    });
    match res.and_then(|()| Ok(w.flush()?)) {
        Err(e) if crate::is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(e),
        Ok(()) => {
            if !opts.json {
                eprintln!("inspector: {printed} records replayed");
            }
            Ok(())
        }
    }
}

pub async fn run(opts: TraceOptions) -> anyhow::Result<()> {
    if let Some(path) = &opts.replay {
        return replay(&opts, path);
    }
    let mut pipeline = Pipeline::new(opts.filter, opts.mode)?;
    // Loads the socket iterators before the banner says tracing is on, so
    // the first failure is explained from the port as it was.
    let mut annotator = crate::pipeline::annotate::Annotator::default();
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
    let mut printed = 0u64;
    let mut last_stats = Instant::now();
    // What the previous `stats` record said: a quiet trace repeats none
    // until its last.
    let mut stated = (0, crate::kernel::probe::Counters::default());
    loop {
        let done = tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard?;
                guard.clear_ready();
                false
            }
            _ = tick.tick() => {
                // A quiet filter prints nothing for long: notice a reader
                // that left without waiting for a write to fail.
                if stdout_reader_left() {
                    return Ok(());
                }
                false
            }
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
            () = &mut deadline => true,
        };
        pipeline.poll(&mut batch, done);
        annotator.annotate(&mut batch, Some(&pipeline.tracker));
        for r in &batch {
            printed += 1;
            let res = if opts.json {
                // The batch's lines go out in one write below.
                crate::output::ndjson::write(r, &mut lines);
                Ok(())
            } else {
                writeln!(w, "{}", output::line(r, t0)).and_then(|()| match output::why(r) {
                    Some(why) => writeln!(w, "{why}"),
                    None => Ok(()),
                })
            };
            if let Err(e) = res {
                return reader_gone(e);
            }
        }
        batch.clear();
        let mut summary = None;
        if done || last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            let stats = pipeline.stats(printed, done);
            let now = (stats.events_read, stats.counters);
            if done || now != stated {
                stated = now;
                if opts.json {
                    crate::output::ndjson::write_stats(&stats, &mut lines);
                } else if !done {
                    // stdout keeps its columns; the final one is the
                    // summary below.
                    eprintln!("inspector: {}", stats.line());
                }
            }
            summary = done.then(|| stats.line());
        }
        // JSON lines go straight to standard output (whose line buffer
        // passes whole lines through), not copied into `w` first.
        let out = w
            .flush()
            .and_then(|()| w.get_mut().write_all(&lines))
            .and_then(|()| w.get_mut().flush());
        if let Err(e) = out {
            return reader_gone(e);
        }
        lines.clear();
        if let Some(line) = summary {
            let s = pipeline.tracker.stats();
            if s != crate::model::tracker::TrackerStats::default() {
                eprintln!(
                    "inspector: memory bounds: {} timewait sockets aged out (exit event lost), \
                     {} evicted; {} connection and {} socket owners evicted",
                    s.tw_aged_out, s.tw_evicted, s.connections_evicted, s.owners_evicted
                );
            }
            eprintln!("inspector: {line}");
            return Ok(());
        }
    }
}
