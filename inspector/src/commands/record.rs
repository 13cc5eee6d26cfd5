//! `inspector record`: the trace written to disk as rotating, compressed
//! NDJSON files (`crate::recording`), through the one loop; each file
//! starts with a snapshot of the kernel's socket tables, read as the live
//! dashboard seeds its panes.

use std::{path::PathBuf, time::Duration};

use crate::{
    commands::dashboard::kernel as tables,
    kernel::{
        netns,
        probe::Mode,
        sockets::SocketTable,
        sys::{cpu_time, monotonic_ns},
    },
    model::{filter::Filter, record::Record},
    pipeline::{
        Pipeline,
        drive::{self, Flow, Sink, Stop},
        source::Source,
    },
    recording::{Header, Limits, Recorder, Snapshot, TakeSnapshot, Writer},
};

pub struct RecordOptions {
    pub filter: Filter,
    pub mode: Mode,
    pub dir: PathBuf,
    pub limits: Limits,
    /// `--allow-shared-dir`: a directory others may write in is used
    /// anyway (files are still only created anew, never followed).
    pub shared: bool,
    /// `--netns PATH`: the namespace whose sockets the snapshots hold;
    /// without it, those a live dashboard follows.
    pub netns_path: Option<PathBuf>,
}

/// Writes every record, with `stats` lines and frames on the recorder's
/// schedule; a write error ends the run (one line, exit 1).
struct Writing(Recorder);

impl Sink for Writing {
    type Input = ();

    fn records(&mut self, src: &mut Source, records: &mut Vec<Record>) -> anyhow::Result<Flow> {
        for r in records.iter() {
            self.0.push(r);
        }
        self.0.turn(|n| src.stats(n, false), false)?;
        Ok(Flow::Continue)
    }

    fn finish(&mut self, src: &mut Source) -> anyhow::Result<()> {
        self.0.turn(|n| src.stats(n, true), true)?;
        let read = src.pipeline().map_or(0, |p| p.seen);
        let cpu = cpu_time().map_or_else(String::new, |c| {
            format!(", recorder CPU {:.3} s", c.as_secs_f64())
        });
        let out = &self.0.out;
        let left_out = if out.snapshot_left_out > 0 {
            format!(
                " ({} sockets left out past the bound of {})",
                out.snapshot_left_out,
                crate::recording::snapshot::MAX_SOCKETS
            )
        } else {
            String::new()
        };
        eprintln!(
            "inspector: recorded {} records ({read} events read) and {} snapshots{left_out} in {} compressed bytes{cpu}",
            self.0.recorded, out.snapshots_written, out.written
        );
        Ok(())
    }
}

pub async fn run(opts: RecordOptions) -> anyhow::Result<()> {
    // The signals first: a SIGTERM right after the banner is a clean stop.
    let mut stop = Stop::new(None)?;
    // The clocks are read before the probes attach: their first records
    // may come before the rest of the start-up is done.
    let mut header = Header::new(String::new(), opts.filter.describe());
    let snapshot_filter = opts.filter.clone();
    let mut pipeline = Pipeline::new(opts.filter, opts.mode)?;
    pipeline.load_explanations();
    header.mode = pipeline.probes.mode.to_string();
    let (snapshots, refused) = match snapshots(&snapshot_filter, opts.netns_path.clone()) {
        Ok(take) => (Some(take), None),
        Err(why) => (None, Some(why)),
    };
    let rec = Recorder::new(Writer::with_snapshots(
        &opts.dir,
        opts.limits,
        &header,
        opts.shared,
        snapshots,
    )?);
    eprintln!(
        "inspector: recording to {} ({} mode, attached: {}; filters: {}; at most {} files of {} bytes)",
        opts.dir.display(),
        pipeline.probes.mode,
        pipeline.probes.attached.join(", "),
        pipeline.filter.describe(),
        opts.limits.max_files.max(1),
        opts.limits.max_size
    );
    if rec.out.snapshots_written > 0 {
        let (socks, lines, bytes) = rec.out.last_snapshot;
        eprintln!(
            "inspector: each file starts with a snapshot of the socket tables: {socks} sockets now ({lines} lines, {bytes} bytes of text)"
        );
    }
    if let Some(why) = refused {
        eprintln!(
            "inspector: warning: no socket snapshots in this recording (a replay starts with empty panes): {why}"
        );
    }
    for m in &pipeline.probes.missing {
        eprintln!("inspector: warning: {m}");
    }
    let mut src = Source::live(pipeline, Duration::from_millis(100))?;
    drive::run(&mut src, &mut Writing(rec), &mut stop).await
}

/// Where each file's snapshot comes from: the socket iterators, over the
/// namespace of `--netns` or the ones a live dashboard follows (looked up
/// again for each file). Without the iterators (refused by the kernel),
/// files have no snapshot: the reason, for the warning.
fn snapshots(filter: &Filter, netns_path: Option<PathBuf>) -> Result<TakeSnapshot, String> {
    let mut table = SocketTable::load().map_err(|e| crate::util::errors::chain(&e))?;
    let filter = filter.clone();
    Ok(Box::new(move || {
        let namespaces = match &netns_path {
            Some(p) => vec![p.clone()],
            None => netns::followed(filter.netns),
        };
        let ts_ns = monotonic_ns();
        let mut socks = tables::seed_all(&mut table, &namespaces);
        socks.retain(|s| filter.matches_socket(s));
        Snapshot::new(ts_ns, socks)
    }))
}
