//! `inspector record`: the trace written to disk as rotating, compressed
//! NDJSON files (`crate::recording`), through the one loop.

use std::{path::PathBuf, time::Duration};

use crate::{
    kernel::{probe::Mode, sys::cpu_time},
    model::{filter::Filter, record::Record},
    pipeline::{
        Pipeline,
        drive::{self, Flow, Sink, Stop},
        source::Source,
    },
    recording::{Header, Limits, Recorder},
};

pub struct RecordOptions {
    pub filter: Filter,
    pub mode: Mode,
    pub dir: PathBuf,
    pub limits: Limits,
    /// `--allow-shared-dir`: a directory others may write in is used
    /// anyway (files are still only created anew, never followed).
    pub shared: bool,
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
        eprintln!(
            "inspector: recorded {} records ({read} events read) in {} compressed bytes{cpu}",
            self.0.recorded, self.0.out.written
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
    let mut pipeline = Pipeline::new(opts.filter, opts.mode)?;
    pipeline.load_explanations();
    header.mode = pipeline.probes.mode.to_string();
    let rec = Recorder::open(&opts.dir, opts.limits, &header, opts.shared)?;
    eprintln!(
        "inspector: recording to {} ({} mode, attached: {}; filters: {}; at most {} files of {} bytes)",
        opts.dir.display(),
        pipeline.probes.mode,
        pipeline.probes.attached.join(", "),
        pipeline.filter.describe(),
        opts.limits.max_files.max(1),
        opts.limits.max_size
    );
    for m in &pipeline.probes.missing {
        eprintln!("inspector: warning: {m}");
    }
    let mut src = Source::live(pipeline, Duration::from_millis(100))?;
    drive::run(&mut src, &mut Writing(rec), &mut stop).await
}
