//! `inspector record` and the replay side of `trace --replay` and
//! `dashboard --replay`.
//!
//! A recording is a directory of files `inspector-NNNNNN.ndjson.zst`, each
//! a sequence of independent zstd frames whose text is NDJSON: a `header`
//! line first, then a snapshot of the kernel's socket tables when the
//! recorder takes them ([`snapshot`]), then the lines `trace --json` writes
//! (records and `stats`).
//! Every flush is one complete frame, so a file cut short (the recorder was
//! killed, the disk filled) still replays up to its last complete frame.
//! Disk use is bounded: a file is closed before it would pass `max_size`
//! (its header, its snapshot and one frame go in whatever the limit, so
//! that every frame lands somewhere), and only the newest `max_files` files
//! are kept.

pub mod dir;
pub mod reader;
pub mod snapshot;
pub mod window;

use std::{
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use self::{
    dir::{DirError, RecordingDir},
    reader::{ReadError, Reader},
    snapshot::Snapshot,
    window::{Moment, Window},
};

use crate::{kernel::sys::monotonic_ns, model::record::Record};

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

/// Errors of the recorder, each naming the file and what was being done;
/// the cause is the error's source, printed once after it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("cannot read the recording directory {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {} failed", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the old recording {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the recording directory {} has used its file numbers up to {}: move its files away",
        path.display(),
        dir::MAX_SEQ
    )]
    Exhausted { path: PathBuf },
    #[error("cannot compress a frame")]
    Compress(#[source] io::Error),
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
            v: crate::model::record::SCHEMA_VERSION,
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

/// Reads the kernel's socket tables for a snapshot; called at the start
/// of every file.
pub type TakeSnapshot = Box<dyn FnMut() -> Snapshot + Send>;

/// Rotating, compressed NDJSON files: text in, one zstd frame per
/// [`Writer::flush`].
pub struct Writer {
    dir: RecordingDir,
    limits: Limits,
    header: Vec<u8>,
    file: Option<(File, PathBuf)>,
    /// The open file's sequence number.
    seq: u64,
    /// Bytes in the open file.
    size: u64,
    /// The size of the header frame and the snapshot's: a file holding
    /// only them takes data whatever the limit, so that every frame lands
    /// somewhere.
    header_size: u64,
    /// Where each file's snapshot comes from, if it has one.
    snapshots: Option<TakeSnapshot>,
    /// Snapshots written, and their sockets left out past
    /// [`snapshot::MAX_SOCKETS`].
    pub snapshots_written: u64,
    pub snapshot_left_out: u64,
    /// Sockets, lines and bytes of text of the last snapshot written.
    pub last_snapshot: (usize, usize, usize),
    next_seq: u64,
    /// Text waiting for the next frame.
    pub pending: Vec<u8>,
    /// Compressed bytes written, headers included.
    pub written: u64,
}

impl Writer {
    /// Opens the first file in `dir` (created mode 0700 if missing; see
    /// [`RecordingDir::for_writing`] for the directories refused unless
    /// `shared`), numbered after any recording already there, which counts
    /// towards `max_files`.
    pub fn create(
        dir: &Path,
        limits: Limits,
        header: &Header,
        shared: bool,
    ) -> Result<Self, RecordError> {
        Self::with_snapshots(dir, limits, header, shared, None)
    }

    /// [`Writer::create`], each file starting with a snapshot from
    /// `snapshots` right after its header.
    pub fn with_snapshots(
        dir: &Path,
        limits: Limits,
        header: &Header,
        shared: bool,
        snapshots: Option<TakeSnapshot>,
    ) -> Result<Self, RecordError> {
        let dir = RecordingDir::for_writing(dir, shared)?;
        let existing = dir.segments().map_err(|source| RecordError::ReadDir {
            path: dir.path().to_owned(),
            source,
        })?;
        let next_seq = existing.last().map_or(0, |(s, _)| s + 1);
        let mut line = serde_json::to_vec(header).map_err(|e| RecordError::Compress(e.into()))?;
        line.push(b'\n');
        let mut w = Self {
            dir,
            limits: Limits {
                max_size: limits.max_size,
                max_files: limits.max_files.max(1),
            },
            header: line,
            file: None,
            seq: 0,
            size: 0,
            header_size: 0,
            snapshots,
            snapshots_written: 0,
            snapshot_left_out: 0,
            last_snapshot: (0, 0, 0),
            next_seq,
            pending: Vec::with_capacity(1 << 16),
            written: 0,
        };
        w.rotate()?;
        Ok(w)
    }

    /// The recording directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Whether enough text waits that a frame should go out now.
    pub fn full(&self) -> bool {
        self.pending.len() >= FRAME_TEXT_MAX
    }

    /// Closes the open file (if any), opens the next one with its header
    /// frame and its snapshot, and removes the oldest files past `max_files` (never the one
    /// just opened: numbers only grow).
    pub fn rotate(&mut self) -> Result<(), RecordError> {
        self.file = None;
        if self.next_seq > dir::MAX_SEQ {
            return Err(RecordError::Exhausted {
                path: self.dir.path().to_owned(),
            });
        }
        let seq = self.next_seq;
        let (file, path) = self
            .dir
            .create_segment(seq)
            .map_err(|source| RecordError::Create {
                path: self.dir.path().join(dir::name_of(seq)),
                source,
            })?;
        self.next_seq = seq + 1;
        self.seq = seq;
        self.file = Some((file, path));
        self.size = 0;
        let frame = zstd::bulk::compress(&self.header, LEVEL).map_err(RecordError::Compress)?;
        self.write_frame(&frame)?;
        self.write_snapshot()?;
        self.header_size = self.size;
        let all = self.dir.segments().map_err(|source| RecordError::ReadDir {
            path: self.dir.path().to_owned(),
            source,
        })?;
        let excess = all.len().saturating_sub(self.limits.max_files);
        for (old_seq, name) in &all[..excess] {
            if *old_seq >= seq {
                continue;
            }
            self.dir
                .remove(name)
                .map_err(|source| RecordError::Remove {
                    path: self.dir.path().join(name),
                    source,
                })?;
        }
        Ok(())
    }

    /// The snapshot of a new file, in frames of at most [`FRAME_TEXT_MAX`]
    /// text (lines whole), before any record.
    fn write_snapshot(&mut self) -> Result<(), RecordError> {
        let Some(take) = &mut self.snapshots else {
            return Ok(());
        };
        let snap = take();
        let mut text = Vec::new();
        let lines = snapshot::write(&snap, self.seq, &mut text);
        self.snapshots_written += 1;
        self.snapshot_left_out += snap.left_out;
        self.last_snapshot = (snap.socks.len(), lines, text.len());
        let mut rest = &text[..];
        while !rest.is_empty() {
            // Whole lines up to the frame bound (at least one line).
            let mut end = 0;
            while end < rest.len() && (end == 0 || end < FRAME_TEXT_MAX) {
                end += rest[end..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len() - end, |i| i + 1);
            }
            let frame = zstd::bulk::compress(&rest[..end], LEVEL).map_err(RecordError::Compress)?;
            self.write_frame(&frame)?;
            rest = &rest[end..];
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

/// One line of a recording.
#[derive(Debug)]
pub enum Line {
    Header(Header),
    /// A `stats` record, as written.
    Stats(Vec<u8>),
    Record(Box<Record>),
    /// One line of a snapshot, as [`parse_line`] reads it; a [`Reader`]
    /// puts them together and hands over only [`Line::Snapshot`].
    SnapshotPart(Box<snapshot::Chunk>),
    /// A whole snapshot of the kernel's socket tables.
    Snapshot(Box<Snapshot>),
}

/// Reads one line of a recording. A line that is not JSON, or a record
/// this build cannot read, is an error naming what is wrong.
pub fn parse_line(line: &[u8]) -> Result<Line, String> {
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
        "stats" => Ok(Line::Stats(line.to_vec())),
        "snapshot" => snapshot::parse(line).map(|c| Line::SnapshotPart(Box::new(c))),
        _ => Record::from_json(line)
            .map(|r| Line::Record(Box::new(r)))
            .map_err(|e| e.to_string()),
    }
}

/// Calls `each` on every line of the recording at `path` (a file or a
/// directory), in order, reading it as a stream ([`Reader`]).
pub fn replay(path: &Path, mut each: impl FnMut(Line) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut reader = Reader::open(path)?;
    while let Some(line) = reader.next_line()? {
        each(line)?;
    }
    Ok(())
}

/// How long a recording stopped by a write error waits before it tries
/// again, in a new file (`serve --record`).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A [`Writer`] on a pipeline's loop: records in, `stats` lines and
/// flushes on the recorder's schedule. `record` runs on it, and `serve
/// --record` records next to its metrics.
pub struct Recorder {
    pub out: Writer,
    pub recorded: u64,
    /// Records not written because a write error had stopped the recording.
    pub lost: u64,
    /// Write errors met (`serve` counts them in its metrics).
    pub errors: u64,
    /// Records pushed since the last frame written.
    unflushed: u64,
    /// Set while a write error has the recording stopped: when it tries
    /// again.
    stopped_until: Option<Instant>,
    /// How long a stop lasts ([`RETRY_AFTER`]).
    retry_after: Duration,
    last_stats: Instant,
    last_flush: Instant,
    stated: (u64, crate::kernel::probe::Counters),
}

impl Recorder {
    pub fn new(out: Writer) -> Self {
        Self {
            out,
            recorded: 0,
            lost: 0,
            errors: 0,
            unflushed: 0,
            stopped_until: None,
            retry_after: RETRY_AFTER,
            last_stats: Instant::now(),
            last_flush: Instant::now(),
            stated: (0, crate::kernel::probe::Counters::default()),
        }
    }

    /// Opens a recording in `dir` whose files start with `header`.
    pub fn open(
        dir: &Path,
        limits: Limits,
        header: &Header,
        shared: bool,
    ) -> Result<Self, RecordError> {
        Ok(Self::new(Writer::create(dir, limits, header, shared)?))
    }

    /// Whether a write error has the recording stopped.
    pub fn stopped(&self) -> bool {
        self.stopped_until.is_some()
    }

    pub fn push(&mut self, r: &Record) {
        if self.stopped() {
            self.lost += 1;
            return;
        }
        self.recorded += 1;
        self.unflushed += 1;
        crate::output::ndjson::write(r, &mut self.out.pending);
    }

    /// After each turn of the loop: a `stats` line when due (always at the
    /// end), then a frame when a second has passed, enough text waits, or
    /// this is the end.
    /// `stats` gives the `stats` line's content for the records written.
    pub fn turn(
        &mut self,
        stats: impl FnOnce(u64) -> Option<crate::model::record::Stats>,
        done: bool,
    ) -> Result<(), RecordError> {
        if self.stopped() {
            return Ok(());
        }
        if done || self.last_stats.elapsed() >= STATS_EVERY {
            self.last_stats = Instant::now();
            if let Some(stats) = stats(self.recorded) {
                let now = (stats.events_read, stats.counters);
                if done || now != self.stated {
                    self.stated = now;
                    crate::output::ndjson::write_stats(&stats, &mut self.out.pending);
                }
            }
        }
        if done || self.out.full() || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.last_flush = Instant::now();
            self.out.flush()?;
            self.unflushed = 0;
        }
        Ok(())
    }

    /// [`Recorder::turn`] for an agent that must go on whatever the disk
    /// does: a write error stops the recording (what waits is dropped and
    /// counted in `lost`) and is returned once; after [`RETRY_AFTER`] the
    /// recording starts again in a new file, and `Ok(true)` says so.
    pub fn turn_or_stop(
        &mut self,
        stats: impl FnOnce(u64) -> Option<crate::model::record::Stats>,
        done: bool,
    ) -> Result<bool, RecordError> {
        if let Some(at) = self.stopped_until {
            if done || Instant::now() < at {
                return Ok(false);
            }
            return match self.out.rotate() {
                Ok(()) => {
                    self.stopped_until = None;
                    Ok(true)
                }
                Err(e) => {
                    // Still failing: counted, not reported again.
                    self.errors += 1;
                    self.stopped_until = Some(Instant::now() + self.retry_after);
                    drop(e);
                    Ok(false)
                }
            };
        }
        match self.turn(stats, done) {
            Ok(()) => Ok(false),
            Err(e) => {
                self.errors += 1;
                self.lost += std::mem::take(&mut self.unflushed);
                self.out.pending.clear();
                self.out.file = None;
                self.stopped_until = Some(Instant::now() + self.retry_after);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    fn header() -> Header {
        Header::new("test".into(), "none".into())
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("inspector-rec-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn writer(dir: &Path, limits: Limits) -> Writer {
        Writer::create(dir, limits, &header(), false).expect("create")
    }

    /// The recording's files, oldest first.
    fn files(dir: &Path) -> Vec<PathBuf> {
        RecordingDir::open(dir)
            .expect("dir")
            .segments()
            .expect("list")
            .into_iter()
            .map(|(_, n)| dir.join(n))
            .collect()
    }

    fn all_text(path: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        replay(path, |l| {
            lines.push(match l {
                Line::Header(_) => "header".to_owned(),
                Line::Stats(s) => String::from_utf8_lossy(&s).into_owned(),
                Line::Record(r) => r.sock_id(),
                Line::SnapshotPart(_) => "snapshot line".to_owned(),
                Line::Snapshot(s) => format!("snapshot of {}", s.socks.len()),
            });
            Ok(())
        })
        .expect("replay");
        lines
    }

    /// Every line of one file and where it stopped being readable.
    fn read_file(path: &Path) -> (Vec<Vec<u8>>, Option<u64>) {
        let file = fs::File::open(path).expect("open");
        let mut seg = reader::Segment::new(path.to_owned(), file);
        let mut lines = Vec::new();
        while let Some(l) = seg.next_line().expect("read") {
            lines.push(l.to_vec());
        }
        (lines, seg.cut)
    }

    #[test]
    fn rotation_keeps_at_most_max_files_under_max_size() {
        let dir = tmpdir("rotate");
        let limits = Limits {
            max_size: 600,
            max_files: 3,
        };
        let mut w = writer(&dir, limits);
        for i in 0..200u32 {
            // Text that does not compress to nothing: a counter and noise.
            let noise = i.wrapping_mul(2_654_435_761);
            writeln!(w.pending, r#"{{"type":"stats","n":{i},"x":{noise}}}"#).expect("vec");
            w.flush().expect("flush");
        }
        let found = files(&dir);
        assert_eq!(found.len(), 3, "{found:?}");
        for f in &found {
            let meta = fs::metadata(f).expect("stat");
            assert!(
                meta.len() <= limits.max_size,
                "{} is {} bytes",
                f.display(),
                meta.len()
            );
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "private files");
            let (lines, cut) = read_file(f);
            assert_eq!(cut, None);
            let start = format!(
                r#"{{"type":"header","v":{},"#,
                crate::model::record::SCHEMA_VERSION
            );
            assert!(lines[0].starts_with(start.as_bytes()));
        }
        assert_eq!(
            fs::metadata(&dir).expect("stat").permissions().mode() & 0o777,
            0o700,
            "a private directory"
        );
        // The newest survive, in order.
        let lines = all_text(&dir);
        assert!(lines.last().is_some_and(|l| l.contains(r#""n":199,"#)));
        // A second recorder in the same directory numbers after it and
        // still keeps three files.
        let mut w = writer(&dir, limits);
        w.pending
            .extend_from_slice(b"{\"type\":\"stats\",\"n\":1000}\n");
        w.flush().expect("flush");
        let again = files(&dir);
        assert_eq!(again.len(), 3);
        let seq = |p: &PathBuf| p.file_name().and_then(|n| dir::seq_of(n.to_str()?));
        assert!(seq(&again[2]) > seq(&found[2]));
        assert!(!again.contains(&found[0]));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cut_short_file_replays_up_to_its_last_complete_frame() {
        let dir = tmpdir("cut");
        let mut w = writer(&dir, Limits::default());
        for i in 0..5 {
            writeln!(w.pending, r#"{{"type":"stats","n":{i}}}"#).expect("vec");
            w.flush().expect("flush");
        }
        let file = files(&dir).remove(0);
        let whole = fs::read(&file).expect("read");
        let (lines, _) = read_file(&file);
        assert_eq!(lines.len(), 6);
        // Cut the last frame in its middle, as a killed writer leaves it.
        fs::write(&file, &whole[..whole.len() - 5]).expect("cut");
        let (lines, cut) = read_file(&file);
        assert!(cut.is_some());
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[4], br#"{"type":"stats","n":3}"#);
        let all = all_text(&dir);
        assert_eq!(all.len(), 5, "{all:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_write_error_is_an_error_not_a_panic() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let dir = tmpdir("full");
        let mut w = writer(&dir, Limits::default());
        let full = File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        w.file = Some((full, PathBuf::from("/dev/full")));
        w.pending.extend_from_slice(b"{}\n");
        let e = w.flush().expect_err("ENOSPC");
        let msg = crate::util::errors::chain(&e);
        assert!(
            msg.contains("/dev/full") && msg.contains("No space left"),
            "{msg}"
        );
        // Each cause once.
        assert_eq!(msg.matches("No space left").count(), 1, "{msg}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stopped_recording_starts_again_in_a_new_file() {
        let dir = tmpdir("retry");
        let mut rec = Recorder::new(writer(&dir, Limits::default()));
        rec.retry_after = Duration::ZERO;
        let stats = |records| {
            Some(crate::model::record::Stats {
                ts_ns: 0,
                last: false,
                events_read: 0,
                records,
                counters: crate::kernel::probe::Counters::default(),
            })
        };
        let turn = |rec: &mut Recorder| {
            // Due now: the frame goes out.
            rec.last_flush = Instant::now() - FLUSH_EVERY;
            rec.turn_or_stop(stats, false)
        };
        let full = File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        rec.out.file = Some((full, PathBuf::from("/dev/full")));
        let mut records = Vec::new();
        crate::model::tracker::Tracker::new().apply(
            &crate::fixture::EventBuilder::bind(8080).build(),
            &mut records,
        );
        let r = records.pop().expect("a bind record");
        rec.push(&r);
        assert!(turn(&mut rec).is_err(), "ENOSPC");
        assert!(rec.stopped());
        assert_eq!((rec.errors, rec.lost), (1, 1), "the pending record is lost");
        rec.push(&r);
        assert_eq!(rec.lost, 2, "not buffered while stopped");
        assert_eq!(turn(&mut rec).ok(), Some(true), "a new file");
        rec.push(&r);
        assert_eq!(turn(&mut rec).ok(), Some(false));
        assert_eq!(files(&dir).len(), 2);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_planted_name_is_never_followed_or_truncated() {
        let dir = tmpdir("plant");
        let victim = tmpdir("plant-victim");
        fs::write(&victim, b"precious").expect("victim");
        let mut w = writer(&dir, Limits::default());
        // The next file's name, planted while the recorder runs.
        symlink(&victim, dir.join(dir::name_of(1))).expect("plant");
        let e = w.rotate().expect_err("an existing name is refused");
        let msg = crate::util::errors::chain(&e);
        assert!(msg.contains("exists"), "{msg}");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_file(&victim);
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        let dir = tmpdir("wrap");
        fs::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        // The highest number there is: the next recorder has none left.
        fs::write(dir.join(dir::name_of(dir::MAX_SEQ)), b"").expect("file");
        let e = Writer::create(&dir, Limits::default(), &header(), false)
            .err()
            .expect("no number left");
        assert!(matches!(e, RecordError::Exhausted { .. }), "{e}");
        // A name past the highest is not a recording file at all.
        assert_eq!(
            dir::seq_of("inspector-18446744073709551615.ndjson.zst"),
            None
        );
        assert!(
            dir.join(dir::name_of(dir::MAX_SEQ)).exists(),
            "nothing removed"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_others_may_write_in_is_refused_unless_shared() {
        let dir = tmpdir("shared");
        fs::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = Writer::create(&dir, Limits::default(), &header(), false)
            .err()
            .expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("may write in it") && msg.contains("--allow-shared-dir"),
            "{msg}"
        );
        Writer::create(&dir, Limits::default(), &header(), true).expect("--allow-shared-dir");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_and_future_schemas_are_refused_by_name() {
        let dir = tmpdir("garbage");
        fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk");
        fs::write(&junk, b"this is not zstd at all\n").expect("junk");
        let e = Reader::open(&junk)
            .and_then(|mut r| r.next_line().map(|_| ()))
            .expect_err("not a recording");
        assert!(matches!(e, ReadError::NotRecording { .. }), "{e}");
        // A zstd file whose first line is no header.
        let no_header = dir.join("noheader");
        fs::write(
            &no_header,
            zstd::bulk::compress(b"{\"type\":\"stats\"}\n", 3).expect("zstd"),
        )
        .expect("write");
        let e = Reader::open(&no_header)
            .and_then(|mut r| r.next_line().map(|_| ()))
            .expect_err("not a recording");
        assert!(matches!(e, ReadError::NotRecording { .. }), "{e}");
        // A header of schema 99.
        let future = dir.join("future");
        let mut h = serde_json::to_vec(&header()).expect("json");
        let text = String::from_utf8(h.clone()).expect("utf8").replace(
            &format!("\"v\":{}", crate::model::record::SCHEMA_VERSION),
            "\"v\":99",
        );
        h = text.into_bytes();
        h.push(b'\n');
        fs::write(&future, zstd::bulk::compress(&h, 3).expect("zstd")).expect("write");
        let e = Reader::open(&future)
            .and_then(|mut r| r.next_line().map(|_| ()))
            .expect_err("v99");
        assert!(e.to_string().contains("schema v99"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_line_bound() {
        let dir = tmpdir("bomb");
        fs::create_dir_all(&dir).expect("dir");
        let bomb = dir.join("bomb");
        let mut data = serde_json::to_vec(&header()).expect("json");
        data.push(b'\n');
        data.extend(std::iter::repeat_n(b'0', 8 << 20));
        fs::write(&bomb, zstd::bulk::compress(&data, 3).expect("zstd")).expect("write");
        let mut r = Reader::open(&bomb).expect("open");
        assert!(matches!(r.next_line(), Ok(Some(Line::Header(_)))));
        let e = r.next_line().expect_err("a line of 8 MiB");
        assert!(matches!(e, ReadError::LineTooLong { .. }), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn replay_reads_no_fifo_device_or_symlink_in_a_directory() {
        let dir = tmpdir("special");
        let mut w = writer(&dir, Limits::default());
        w.pending
            .extend_from_slice(b"{\"type\":\"stats\",\"n\":1}\n");
        w.flush().expect("flush");
        drop(w);
        symlink("/dev/zero", dir.join(dir::name_of(7))).expect("symlink");
        let e = Reader::open(&dir)
            .and_then(|mut r| {
                while r.next_line()?.is_some() {}
                Ok(())
            })
            .expect_err("the symlink is refused");
        assert!(e.to_string().contains("inspector-000007"), "{e}");
        let e = Reader::open(Path::new("/dev/zero"))
            .and_then(|mut r| r.next_line().map(|_| ()))
            .expect_err("a device");
        assert!(crate::util::errors::chain(&e).contains("a device"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
