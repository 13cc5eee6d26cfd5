//! `inspector trace`: records as text lines or NDJSON on standard output,
//! live from the kernel or replayed from a recording, through the one loop
//! ([`crate::pipeline::drive`]).

use std::{
    io::{self, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    kernel::{probe::Mode, sys::monotonic_ns},
    model::{filter::Filter, record::Record, tracker::TrackerStats},
    output::{ndjson, text},
    pipeline::{
        Pipeline,
        drive::{self, Flow, Sink, Stop},
        source::{Pace, Source},
    },
    recording::{Line, Window},
    util::escape::Escaped,
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
    pub replay: Option<PathBuf>,
    /// The part of the recording to read.
    pub window: Window,
}

/// True when standard output's reader has gone even though nothing was
/// written: a pipe whose read end closed polls POLLERR on its write end
/// (pipe_poll()), a hung-up terminal POLLHUP. A file never reports either.
fn stdout_reader_left() -> bool {
    crate::kernel::sys::poll_error(libc::STDOUT_FILENO)
}

/// Prints records as they come.
struct Printer {
    out: io::BufWriter<io::StdoutLock<'static>>,
    json: bool,
    /// JSON lines of a batch, written in one go.
    lines: Vec<u8>,
    printed: u64,
    /// Time origin of the first column: the trace's start, or the
    /// recording's.
    t0: Option<u64>,
    last_stats: Instant,
    /// What the previous `stats` record said: a quiet trace repeats none
    /// until its last.
    stated: Option<(u64, crate::kernel::probe::Counters)>,
    replay: Option<PathBuf>,
    /// The replay's own filters, for its banner.
    filters: String,
    /// The reader left (`| head`): a normal end.
    gone: bool,
}

impl Printer {
    /// A write error: the reader leaving is the end of the trace, not an
    /// error.
    fn wrote(&mut self, r: io::Result<()>) -> anyhow::Result<Flow> {
        match r {
            Ok(()) => Ok(Flow::Continue),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.gone = true;
                Ok(Flow::Quit)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn print(&mut self, r: &Record) -> io::Result<()> {
        self.printed += 1;
        if self.json {
            ndjson::write(r, &mut self.lines);
            return Ok(());
        }
        writeln!(self.out, "{}", text::line(r, self.t0.unwrap_or(0)))?;
        if let Some(why) = text::why(r) {
            writeln!(self.out, "{why}")?;
        }
        Ok(())
    }

    /// JSON lines go straight to standard output (whose line buffer passes
    /// whole lines through), not copied into the text buffer first.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_mut().write_all(&self.lines)?;
        self.lines.clear();
        self.out.get_mut().flush()
    }

    /// A `stats` record when due (always at the end); live only.
    fn stats(&mut self, src: &Source, last: bool) {
        if !(last || self.last_stats.elapsed() >= STATS_EVERY) {
            return;
        }
        self.last_stats = Instant::now();
        let Some(stats) = src.stats(self.printed, last) else {
            return;
        };
        let now = (stats.events_read, stats.counters);
        if last || self.stated != Some(now) {
            self.stated = Some(now);
            if self.json {
                ndjson::write_stats(&stats, &mut self.lines);
            } else if !last {
                // stdout keeps its columns; the final one is the summary.
                eprintln!("inspector: {}", stats.line());
            }
        }
    }
}

impl Sink for Printer {
    type Input = ();

    fn records(&mut self, src: &mut Source, records: &mut Vec<Record>) -> anyhow::Result<Flow> {
        // A quiet filter prints nothing for long: notice a reader that
        // left without waiting for a write to fail.
        if records.is_empty() && stdout_reader_left() {
            self.gone = true;
            return Ok(Flow::Quit);
        }
        for r in records.iter() {
            let res = self.print(r);
            if self.wrote(res)? == Flow::Quit {
                return Ok(Flow::Quit);
            }
        }
        self.stats(src, false);
        let res = self.flush();
        self.wrote(res)
    }

    fn recorded(&mut self, line: Line) -> anyhow::Result<()> {
        match line {
            Line::Header(h) => {
                if self.t0.is_none() && !self.json {
                    // The header is the recording's word: escaped.
                    eprintln!(
                        "inspector: replaying {} (host {}, kernel {}, {} mode, filters: {}); filters: {}",
                        self.replay
                            .as_deref()
                            .unwrap_or(std::path::Path::new("?"))
                            .display(),
                        Escaped(&h.host),
                        Escaped(&h.kernel),
                        Escaped(&h.mode),
                        Escaped(&h.filters),
                        self.filters
                    );
                    writeln!(self.out, "{}", text::HEADER)?;
                }
                // Times count from the first recorder's start, across files.
                self.t0.get_or_insert(h.start_mono_ns);
            }
            Line::Stats(s) if self.json => {
                self.lines.extend_from_slice(&s);
                self.lines.push(b'\n');
            }
            // A snapshot is the state the recording started from, not an
            // event: the replayed trace is the stream the live one printed.
            Line::Stats(_) | Line::Record(_) | Line::SnapshotPart(_) | Line::Snapshot(_) => {}
        }
        Ok(())
    }

    fn finish(&mut self, src: &mut Source) -> anyhow::Result<()> {
        if self.gone {
            return Ok(());
        }
        self.stats(src, true);
        let res = self.flush();
        if self.wrote(res)? == Flow::Quit {
            return Ok(());
        }
        match src {
            Source::Live(live) => {
                let s = live.pipeline.tracker.stats();
                if s != TrackerStats::default() {
                    eprintln!(
                        "inspector: memory bounds: {} timewait sockets aged out (exit event lost), \
                         {} evicted; {} connection and {} socket owners evicted",
                        s.tw_aged_out, s.tw_evicted, s.connections_evicted, s.owners_evicted
                    );
                }
                if let Some(stats) = src.stats(self.printed, true) {
                    eprintln!("inspector: {}", stats.line());
                }
            }
            Source::Replay(_) if !self.json => {
                eprintln!("inspector: {} records replayed", self.printed);
            }
            Source::Replay(_) => {}
        }
        Ok(())
    }
}

pub async fn run(opts: TraceOptions) -> anyhow::Result<()> {
    // The signals first: a SIGTERM right after the banner below is a
    // clean stop, not the default action.
    let mut stop = Stop::new(None)?;
    let mut printer = Printer {
        out: io::BufWriter::with_capacity(1 << 16, io::stdout().lock()),
        json: opts.json,
        lines: Vec::with_capacity(1 << 16),
        printed: 0,
        t0: None,
        last_stats: Instant::now(),
        stated: None,
        replay: opts.replay.clone(),
        filters: opts.filter.describe(),
        gone: false,
    };
    let mut src = match &opts.replay {
        Some(path) => Source::replay(
            path,
            opts.filter.clone(),
            Pace::Fast {
                // A recording has every state change; `trace` without
                // `--states` folds a connection's end in TIME_WAIT into
                // its tw_enter, live or replayed.
                fold_handover: opts.filter.lifecycle_states,
            },
            opts.window,
        )?,
        None => {
            let mut pipeline = Pipeline::new(opts.filter, opts.mode)?;
            pipeline.load_explanations();
            eprintln!(
                "inspector: {} mode, attached: {}; filters: {}",
                pipeline.probes.mode,
                pipeline.probes.attached.join(", "),
                pipeline.filter.describe()
            );
            for m in &pipeline.probes.missing {
                eprintln!("inspector: warning: {m}");
            }
            printer.t0 = Some(monotonic_ns());
            if !opts.json {
                writeln!(printer.out, "{}", text::HEADER)?;
                printer.out.flush()?;
            }
            Source::live(pipeline, Duration::from_millis(50))?
        }
    };
    if let Source::Replay(r) = &mut src
        && let Some(h) = r.header.clone()
    {
        printer.recorded(Line::Header(h))?;
    }
    if let Some(d) = opts.duration {
        stop.set_deadline(d);
    }
    match drive::run(&mut src, &mut printer, &mut stop).await {
        Err(e) if crate::util::errors::is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}
