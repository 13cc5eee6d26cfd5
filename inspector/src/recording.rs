//! `inspector record` and the replay side of `trace --replay` and
//! `dashboard --replay`.
//!
//! A recording is a directory of files `inspector-NNNNNN.ndjson.zst`, each
//! a sequence of independent zstd frames whose text is NDJSON: a `header`
//! line first, then the lines `trace --json` writes (records and `stats`).
//! Every flush is one complete frame, so a file cut short (the recorder was
//! killed, the disk filled) still replays up to its last complete frame.
//! Disk use is bounded: a file is closed before it would pass `max_size`,
//! and only the newest `max_files` files are kept.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::signal::unix::SignalKind;

use crate::{
    filter::Filter,
    pipeline::{Pipeline, monotonic_ns},
    probe::Mode,
    record::Record,
};

/// Recorded text goes to disk at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A `stats` line at least this often while anything happens (as `trace`).
const STATS_EVERY: Duration = Duration::from_secs(10);
/// A frame is cut early past this much text, so that one frame stays well
/// under a file's size limit.
const FRAME_TEXT_MAX: usize = 1 << 20;
/// zstd level 3 (the library's default): fast enough to run next to the
/// workload, and NDJSON of repeated fields compresses well at it.
const LEVEL: i32 = 3;

pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;
pub const DEFAULT_MAX_FILES: usize = 8;

const PREFIX: &str = "inspector-";
const SUFFIX: &str = ".ndjson.zst";

/// Errors of the recorder, each naming the file and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot create the recording directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read the recording directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("writing {path} failed, recording stopped: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove the old recording {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot compress a frame: {0}")]
    Compress(io::Error),
}

/// The first line of every file: what produced the recording.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Header {
    #[serde(rename = "type")]
    pub kind: String,
    pub v: u32,
    pub host: String,
    pub kernel: String,
    pub mode: String,
    /// Wall clock when recording started.
    pub start_unix_ns: u64,
    /// CLOCK_MONOTONIC at the same moment: the origin of record `ts_ns`
    /// (text replay counts seconds from it, as a live trace does).
    pub start_mono_ns: u64,
    pub filters: String,
}

impl Header {
    pub fn new(mode: String, filters: String) -> Self {
        let read = |p: &str| {
            fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            kind: "header".into(),
            v: crate::record::SCHEMA_VERSION,
            host: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            mode,
            start_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            start_mono_ns: monotonic_ns(),
            filters,
        }
    }

    /// Unix time of a record's `ts_ns` (CLOCK_MONOTONIC).
    pub fn unix_ns(&self, ts_ns: u64) -> u64 {
        self.start_unix_ns
            .saturating_add(ts_ns)
            .saturating_sub(self.start_mono_ns)
    }
}

/// Bounds of a recording on disk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_size: u64,
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// The sequence number of a recording file name, `None` for other files.
fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The recording files of `dir`, oldest first.
pub fn files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let seq = seq_of(e.file_name().to_str()?)?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Rotating, compressed NDJSON files: text in, one zstd frame per
/// [`Writer::flush`].
pub struct Writer {
    dir: PathBuf,
    limits: Limits,
    header: Vec<u8>,
    file: Option<(File, PathBuf)>,
    /// Bytes in the open file.
    size: u64,
    /// The header frame's size: a file holding only it takes data whatever
    /// the limit, so that every frame lands somewhere.
    header_size: u64,
    next_seq: u64,
    /// Text waiting for the next frame.
    pub pending: Vec<u8>,
    /// Compressed bytes written, headers included.
    pub written: u64,
}

impl Writer {
    /// Opens the first file in `dir` (created if missing), numbered after
    /// any recording already there, which counts towards `max_files`.
    pub fn create(dir: &Path, limits: Limits, header: &Header) -> Result<Self, RecordError> {
        fs::create_dir_all(dir).map_err(|source| RecordError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let existing = files(dir).map_err(|source| RecordError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        let next_seq = existing
            .last()
            .and_then(|p| seq_of(p.file_name()?.to_str()?))
            .map_or(0, |s| s + 1);
        let mut line = serde_json::to_vec(header).map_err(|e| RecordError::Compress(e.into()))?;
        line.push(b'\n');
        let mut w = Self {
            dir: dir.to_owned(),
            limits: Limits {
                max_size: limits.max_size,
                max_files: limits.max_files.max(1),
            },
            header: line,
            file: None,
            size: 0,
            header_size: 0,
            next_seq,
            pending: Vec::with_capacity(1 << 16),
            written: 0,
        };
        w.rotate()?;
        Ok(w)
    }

    /// Whether enough text waits that a frame should go out now.
    pub fn full(&self) -> bool {
        self.pending.len() >= FRAME_TEXT_MAX
    }

    /// Closes the open file (if any), opens the next one with its header
    /// frame, and removes the oldest files past `max_files`.
    fn rotate(&mut self) -> Result<(), RecordError> {
        let path = self
            .dir
            .join(format!("{PREFIX}{:06}{SUFFIX}", self.next_seq));
        self.next_seq += 1;
        let file = File::create(&path).map_err(|source| RecordError::Create {
            path: path.clone(),
            source,
        })?;
        self.file = Some((file, path));
        self.size = 0;
        let frame = zstd::bulk::compress(&self.header, LEVEL).map_err(RecordError::Compress)?;
        self.write_frame(&frame)?;
        self.header_size = self.size;
        let all = files(&self.dir).map_err(|source| RecordError::ReadDir {
            path: self.dir.clone(),
            source,
        })?;
        let excess = all.len().saturating_sub(self.limits.max_files);
        for old in &all[..excess] {
            fs::remove_file(old).map_err(|source| RecordError::Remove {
                path: old.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn write_frame(&mut self, frame: &[u8]) -> Result<(), RecordError> {
        let Some((file, path)) = &mut self.file else {
            return Ok(());
        };
        file.write_all(frame).map_err(|source| RecordError::Write {
            path: path.clone(),
            source,
        })?;
        self.size += frame.len() as u64;
        self.written += frame.len() as u64;
        Ok(())
    }

    /// Compresses the pending text into one frame and appends it, opening
    /// the next file first when this one would pass `max_size`.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let frame = zstd::bulk::compress(&self.pending, LEVEL).map_err(RecordError::Compress)?;
        self.pending.clear();
        if self.size > self.header_size && self.size + frame.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.write_frame(&frame)
    }
}

/// The text of one recording file, frame by frame, up to its last complete
/// frame. The second value is where a cut-short file ends being readable:
/// `Some(offset)` of the incomplete frame, `None` for a whole file.
pub fn read_file(path: &Path) -> io::Result<(Vec<u8>, Option<usize>)> {
    let data = fs::read(path)?;
    let mut text = Vec::with_capacity(data.len() * 8);
    let mut pos = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        let len = match zstd::zstd_safe::find_frame_compressed_size(rest) {
            Ok(n) if n <= rest.len() => n,
            _ => return Ok((text, Some(pos))),
        };
        match zstd::stream::decode_all(&rest[..len]) {
            Ok(t) => text.extend_from_slice(&t),
            Err(_) => return Ok((text, Some(pos))),
        }
        pos += len;
    }
    Ok((text, None))
}

/// The files to replay: `path` itself, or a recording directory's files
/// oldest first.
pub fn replay_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context as _;
    if path.is_dir() {
        let found = files(path).with_context(|| format!("cannot read {}", path.display()))?;
        if found.is_empty() {
            anyhow::bail!(
                "{} holds no recording ({PREFIX}NNNNNN{SUFFIX} files)",
                path.display()
            );
        }
        Ok(found)
    } else if path.exists() {
        Ok(vec![path.to_owned()])
    } else {
        anyhow::bail!("no recording at {}", path.display())
    }
}

/// One line of a recording.
#[derive(Debug)]
pub enum Line<'a> {
    Header(Header),
    /// A `stats` record, as written.
    Stats(&'a [u8]),
    Record(Box<Record>),
}

/// Reads one line of a recording. A line that is not JSON, or a record
/// this build cannot read, is an error naming what is wrong.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, String> {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    let k: Kind = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    match &*k.kind {
        "header" => serde_json::from_slice(line)
            .map(Line::Header)
            .map_err(|e| e.to_string()),
        "stats" => Ok(Line::Stats(line)),
        _ => Record::from_json(line)
            .map(|r| Line::Record(Box::new(r)))
            .map_err(|e| e.to_string()),
    }
}

/// Calls `each` on every line of the recording at `path` (a file or a
/// directory), in order. A cut-short file or an unreadable line is told on
/// stderr and skipped; replay goes on with what is whole.
pub fn replay(
    path: &Path,
    mut each: impl FnMut(Line<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for file in replay_files(path)? {
        let (text, cut) =
            read_file(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Ok(l) => each(l)?,
                Err(e) => eprintln!(
                    "inspector: warning: {} line {}: {e}; skipped",
                    file.display(),
                    n + 1
                ),
            }
        }
        if let Some(at) = cut {
            eprintln!(
                "inspector: warning: {} ends in an incomplete frame at byte {at} \
                 (the recorder stopped mid-write); replayed up to the last complete frame",
                file.display()
            );
        }
    }
    Ok(())
}

/// A [`Writer`] on a pipeline's loop: records in, `stats` lines and
/// flushes on the recorder's schedule. `record` runs on it, and `serve
/// --record` records next to its metrics.
pub struct Recorder {
    pub out: Writer,
    pub recorded: u64,
    last_stats: Instant,
    last_flush: Instant,
    stated: (u64, crate::probe::Counters),
}

impl Recorder {
    pub fn new(out: Writer) -> Self {
        Self {
            out,
            recorded: 0,
            last_stats: Instant::now(),
            last_flush: Instant::now(),
            stated: (0, crate::probe::Counters::default()),
        }
    }

    /// Opens a recording of `pipeline`'s records in `dir`.
    pub fn open(dir: &Path, limits: Limits, pipeline: &Pipeline) -> Result<Self, RecordError> {
        let header = Header::new(pipeline.probes.mode.to_string(), pipeline.filter.describe());
        Ok(Self::new(Writer::create(dir, limits, &header)?))
    }

    pub fn push(&mut self, r: &Record) {
        self.recorded += 1;
        crate::ndjson::write(r, &mut self.out.pending);
    }

    /// After each turn of the loop: a `stats` line when due (always at the
    /// end), then a frame when a second has passed, enough text waits, or
    /// this is the end.
    pub fn turn(&mut self, pipeline: &Pipeline, done: bool) -> Result<(), RecordError> {
        if done || self.last_stats.elapsed() >= STATS_EVERY {
            self.last_stats = Instant::now();
            let stats = pipeline.stats(self.recorded, done);
            let now = (stats.events_read, stats.counters);
            if done || now != self.stated {
                self.stated = now;
                crate::ndjson::write_stats(&stats, &mut self.out.pending);
            }
        }
        if done || self.out.full() || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.last_flush = Instant::now();
            self.out.flush()?;
        }
        Ok(())
    }
}

pub struct RecordOptions {
    pub filter: Filter,
    pub mode: Mode,
    pub dir: PathBuf,
    pub limits: Limits,
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks).
pub fn cpu_time() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields count from its closing ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split(' ').skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// `inspector record`: the trace loop with a [`Writer`] for output.
pub async fn run(opts: RecordOptions) -> anyhow::Result<()> {
    // The clocks are read before the probes attach: their first records
    // may come before the rest of the start-up is done.
    let mut header = Header::new(String::new(), opts.filter.describe());
    let mut pipeline = Pipeline::new(opts.filter, opts.mode)?;
    let mut annotator = crate::explain::annotate::Annotator::default();
    header.mode = pipeline.probes.mode.to_string();
    let mut rec = Recorder::new(Writer::create(&opts.dir, opts.limits, &header)?);
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
    let ring = pipeline.readiness()?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut batch = Vec::new();
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
        };
        pipeline.poll(&mut batch, done);
        // The explanation is computed now, while the port is as it was,
        // and stored with the failure.
        annotator.annotate(&mut batch, Some(&pipeline.tracker));
        for r in batch.drain(..) {
            rec.push(&r);
        }
        rec.turn(&pipeline, done)?;
        if done {
            let cpu = cpu_time().map_or_else(String::new, |c| {
                format!(", recorder CPU {:.3} s", c.as_secs_f64())
            });
            eprintln!(
                "inspector: recorded {} records ({} events read) in {} compressed bytes{cpu}",
                rec.recorded, pipeline.seen, rec.out.written
            );
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header::new("test".into(), "none".into())
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("inspector-rec-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn all_text(dir: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        replay(dir, |l| {
            lines.push(match l {
                Line::Header(_) => "header".to_owned(),
                Line::Stats(s) => String::from_utf8_lossy(s).into_owned(),
                Line::Record(r) => r.sock_id(),
            });
            Ok(())
        })
        .expect("replay");
        lines
    }

    #[test]
    fn rotation_keeps_at_most_max_files_under_max_size() {
        let dir = tmpdir("rotate");
        let limits = Limits {
            max_size: 600,
            max_files: 3,
        };
        let mut w = Writer::create(&dir, limits, &header()).expect("create");
        for i in 0..200u32 {
            // Text that does not compress to nothing: a counter and noise.
            let noise = i.wrapping_mul(2_654_435_761);
            writeln!(w.pending, r#"{{"type":"stats","n":{i},"x":{noise}}}"#).expect("vec");
            w.flush().expect("flush");
        }
        let found = files(&dir).expect("list");
        assert_eq!(found.len(), 3, "{found:?}");
        for f in &found {
            let size = fs::metadata(f).expect("stat").len();
            assert!(size <= limits.max_size, "{} is {size} bytes", f.display());
            let (text, cut) = read_file(f).expect("read");
            assert_eq!(cut, None);
            assert!(text.starts_with(br#"{"type":"header","v":1,"#));
        }
        // The newest survive, in order.
        let lines = all_text(&dir);
        assert!(lines.last().is_some_and(|l| l.contains(r#""n":199,"#)));
        // A second recorder in the same directory numbers after it and
        // still keeps three files.
        let mut w = Writer::create(&dir, limits, &header()).expect("create");
        w.pending
            .extend_from_slice(b"{\"type\":\"stats\",\"n\":1000}\n");
        w.flush().expect("flush");
        let again = files(&dir).expect("list");
        assert_eq!(again.len(), 3);
        let seq = |p: &PathBuf| p.file_name().and_then(|n| seq_of(n.to_str()?));
        assert!(seq(&again[2]) > seq(&found[2]));
        assert!(!again.contains(&found[0]));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cut_short_file_replays_up_to_its_last_complete_frame() {
        let dir = tmpdir("cut");
        let mut w = Writer::create(&dir, Limits::default(), &header()).expect("create");
        for i in 0..5 {
            writeln!(w.pending, r#"{{"type":"stats","n":{i}}}"#).expect("vec");
            w.flush().expect("flush");
        }
        let file = files(&dir).expect("list").remove(0);
        let whole = fs::read(&file).expect("read");
        let (text, _) = read_file(&file).expect("read");
        assert_eq!(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            6
        );
        // Cut the last frame in its middle, as a killed writer leaves it.
        fs::write(&file, &whole[..whole.len() - 5]).expect("cut");
        let (text, cut) = read_file(&file).expect("read");
        assert!(cut.is_some());
        let lines = all_text(&dir);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[4].contains(r#""n":3"#));
        assert!(String::from_utf8_lossy(&text).ends_with("{\"type\":\"stats\",\"n\":3}\n"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_write_error_is_an_error_not_a_panic() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let dir = tmpdir("full");
        let mut w = Writer::create(&dir, Limits::default(), &header()).expect("create");
        let full = File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        w.file = Some((full, PathBuf::from("/dev/full")));
        w.pending.extend_from_slice(b"{}\n");
        let e = w.flush().expect_err("ENOSPC");
        let msg = e.to_string();
        assert!(
            msg.contains("/dev/full") && msg.contains("No space left"),
            "{msg}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
