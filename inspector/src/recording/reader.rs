//! Reading a recording as a stream, in bounded memory whatever the file
//! holds: frames are decompressed a buffer at a time (never a whole file or
//! frame at once), a line may not pass [`MAX_LINE`], a frame's text may not
//! pass [`MAX_FRAME_TEXT`], and the decoder's window is capped. A file that
//! does not start with a zstd frame and a header line is "not a recording";
//! a header of a schema newer than this build is refused by name.

use std::{
    fs::File,
    io::{self, Read as _},
    path::{Path, PathBuf},
};

use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

use super::{
    Header, Line,
    dir::{self, RecordingDir},
    parse_line,
    snapshot::Assembler,
};

/// The longest line replay accepts. The recorder's longest lines (a
/// failure with its explanation) are a few kilobytes.
pub const MAX_LINE: usize = 1 << 20;
/// The most text one frame may hold: the recorder cuts a frame at 1 MiB of
/// text (plus the line that passed it), and a file at `--max-size`.
pub const MAX_FRAME_TEXT: u64 = 64 << 20;
/// The decoder's window at most (16 MiB): the recorder's frames need far
/// less, and a crafted frame cannot make the decoder allocate more.
const WINDOW_LOG_MAX: u32 = 24;
const CHUNK: usize = 1 << 16;
/// The first bytes of a zstd frame (RFC 8878, little-endian 0xFD2FB528).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no recording at {}", path.display())]
    Missing { path: PathBuf },
    #[error(
        "{} holds no recording ({}NNNNNN{} files)",
        path.display(),
        dir::PREFIX,
        dir::SUFFIX
    )]
    Empty { path: PathBuf },
    #[error(
        "{} is not a recording: it does not start with a zstd frame holding a header line (recordings are the files `inspector record` writes)",
        path.display()
    )]
    NotRecording { path: PathBuf },
    #[error(
        "{} is a recording of schema v{v}, newer than this build reads (v{}): replay it with a newer inspector",
        path.display(),
        crate::model::record::SCHEMA_VERSION
    )]
    Version { path: PathBuf, v: u32 },
    #[error(
        "{} line {line} (at byte {offset} of the file) is longer than {MAX_LINE} bytes, which the recorder never writes: the file is damaged or not a recording",
        path.display()
    )]
    LineTooLong {
        path: PathBuf,
        line: u64,
        offset: u64,
    },
    #[error(
        "{}: the zstd frame at byte {offset} holds more than {MAX_FRAME_TEXT} bytes of text, which the recorder never writes: the file is damaged or not a recording",
        path.display()
    )]
    FrameTooLarge { path: PathBuf, offset: u64 },
}

/// One file of a recording, read line by line.
pub struct Segment {
    path: PathBuf,
    file: File,
    dctx: DCtx<'static>,
    input: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    /// Compressed bytes read from the file so far.
    read: u64,
    eof: bool,
    /// A frame is being decoded: where it started and its text so far.
    frame: Option<(u64, u64)>,
    out: Box<[u8]>,
    out_start: usize,
    out_end: usize,
    line: Vec<u8>,
    line_no: u64,
    /// Nothing more to read (end of file, or a damaged frame).
    done: bool,
    /// Where the file stops being readable: an incomplete or damaged frame.
    pub cut: Option<u64>,
}

impl Segment {
    pub fn new(path: PathBuf, file: File) -> Self {
        let mut dctx = DCtx::create();
        // A rejected parameter leaves the library's own limit (128 MiB).
        let _ = dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX));
        Self {
            path,
            file,
            dctx,
            input: vec![0; CHUNK].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            read: 0,
            eof: false,
            frame: None,
            out: vec![0; CHUNK].into_boxed_slice(),
            out_start: 0,
            out_end: 0,
            line: Vec::new(),
            line_no: 0,
            done: false,
            cut: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next line, without its newline; `None` at the end of what is
    /// readable (see [`Segment::cut`]).
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, ReadError> {
        self.line.clear();
        loop {
            if self.out_start < self.out_end {
                let avail = &self.out[self.out_start..self.out_end];
                let (take, newline) = match avail.iter().position(|&b| b == b'\n') {
                    Some(i) => (i, true),
                    None => (avail.len(), false),
                };
                if self.line.len() + take > MAX_LINE {
                    return Err(ReadError::LineTooLong {
                        path: self.path.clone(),
                        line: self.line_no + 1,
                        offset: self.frame.map_or(self.position(), |(start, _)| start),
                    });
                }
                self.line.extend_from_slice(&avail[..take]);
                self.out_start += take + usize::from(newline);
                if newline {
                    self.line_no += 1;
                    return Ok(Some(&self.line));
                }
            }
            if !self.decode()? {
                // A line without its newline is the tail of a cut frame.
                return Ok(None);
            }
        }
    }

    /// Offset in the file of the next compressed byte.
    fn position(&self) -> u64 {
        self.read - (self.in_end - self.in_start) as u64
    }

    /// Decodes more text into `out`; false when nothing more can be read.
    fn decode(&mut self) -> Result<bool, ReadError> {
        loop {
            if self.done {
                return Ok(false);
            }
            if self.in_start == self.in_end {
                if self.eof {
                    self.done = true;
                    if let Some((start, _)) = self.frame {
                        self.cut = Some(start);
                    }
                    return Ok(false);
                }
                let n = self
                    .file
                    .read(&mut self.input)
                    .map_err(|source| ReadError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                if n == 0 {
                    self.eof = true;
                    continue;
                }
                self.in_start = 0;
                self.in_end = n;
                self.read += n as u64;
                if self.read == n as u64 && !self.input[..n].starts_with(&ZSTD_MAGIC) {
                    return Err(ReadError::NotRecording {
                        path: self.path.clone(),
                    });
                }
            }
            let start = self.position();
            let mut src = InBuffer::around(&self.input[self.in_start..self.in_end]);
            let mut dst = OutBuffer::around(&mut self.out[..]);
            let res = self.dctx.decompress_stream(&mut dst, &mut src);
            let produced = dst.pos();
            self.in_start += src.pos();
            match res {
                Ok(left) => {
                    let (frame_start, text) = self.frame.get_or_insert((start, 0));
                    *text += produced as u64;
                    if *text > MAX_FRAME_TEXT {
                        return Err(ReadError::FrameTooLarge {
                            path: self.path.clone(),
                            offset: *frame_start,
                        });
                    }
                    if left == 0 {
                        self.frame = None;
                    }
                }
                Err(_) if start == 0 => {
                    return Err(ReadError::NotRecording {
                        path: self.path.clone(),
                    });
                }
                Err(_) => {
                    self.done = true;
                    self.cut = Some(self.frame.map_or(start, |(s, _)| s));
                }
            }
            if produced > 0 {
                self.out_start = 0;
                self.out_end = produced;
                return Ok(true);
            }
        }
    }
}

/// Where a recording's files come from.
enum Files {
    /// One file the user named.
    One(Option<PathBuf>),
    /// A recording directory: its files by name, oldest first, each opened
    /// through the directory without following links.
    Dir {
        dir: RecordingDir,
        names: std::vec::IntoIter<(u64, String)>,
    },
}

/// A whole recording (a file, or a directory's files in order), line by
/// line. A cut-short file is warned about and replay goes on with the
/// next; a line this build cannot read is warned about and skipped. A
/// snapshot's lines are handed over as one [`Line::Snapshot`] once all are
/// read (one that is incomplete is warned about and skipped).
pub struct Reader {
    files: Files,
    current: Option<Segment>,
    /// The current file's header has been read.
    headed: bool,
    /// The current file's snapshot, while its lines are read.
    snapshot: Assembler,
    /// Warnings so far (each also printed once on stderr).
    pub warnings: u64,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let files = if dir::is_dir(path) {
            let dir = RecordingDir::open(path).map_err(|e| ReadError::Io {
                path: path.to_owned(),
                source: io::Error::other(crate::util::errors::chain(&e)),
            })?;
            let names = dir.segments().map_err(|source| ReadError::Io {
                path: path.to_owned(),
                source,
            })?;
            if names.is_empty() {
                return Err(ReadError::Empty {
                    path: path.to_owned(),
                });
            }
            Files::Dir {
                dir,
                names: names.into_iter(),
            }
        } else if path.symlink_metadata().is_ok() {
            Files::One(Some(path.to_owned()))
        } else {
            return Err(ReadError::Missing {
                path: path.to_owned(),
            });
        };
        Ok(Self {
            files,
            current: None,
            headed: false,
            snapshot: Assembler::default(),
            warnings: 0,
        })
    }

    fn next_file(&mut self) -> Result<Option<Segment>, ReadError> {
        let (path, file) = match &mut self.files {
            Files::One(p) => {
                let Some(path) = p.take() else {
                    return Ok(None);
                };
                let file = dir::open_file(&path).map_err(|source| ReadError::Io {
                    path: path.clone(),
                    source,
                })?;
                (path, file)
            }
            Files::Dir { dir, names } => {
                let Some((_, name)) = names.next() else {
                    return Ok(None);
                };
                let path = dir.path().join(&name);
                let file = dir.open_segment(&name).map_err(|source| ReadError::Io {
                    path: path.clone(),
                    source,
                })?;
                (path, file)
            }
        };
        Ok(Some(Segment::new(path, file)))
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        self.warnings += 1;
        eprintln!("inspector: warning: {what}");
    }

    /// The next line of the recording; `None` at its end.
    pub fn next_line(&mut self) -> Result<Option<Line>, ReadError> {
        loop {
            if self.current.is_none() {
                match self.next_file()? {
                    Some(s) => {
                        self.current = Some(s);
                        self.headed = false;
                    }
                    None => return Ok(None),
                }
            }
            let Some(seg) = self.current.as_mut() else {
                continue;
            };
            let line = seg.next_line()?.map(<[u8]>::to_vec);
            let Some(line) = line else {
                let (path, cut, headed) = (seg.path.clone(), seg.cut, self.headed);
                self.current = None;
                if let Some(w) = self.snapshot.end() {
                    self.warn(format_args!("{}: {w}", path.display()));
                }
                if !headed {
                    return Err(ReadError::NotRecording { path });
                }
                if let Some(at) = cut {
                    self.warn(format_args!(
                        "{} ends in an incomplete or damaged frame at byte {at}; replayed up to it",
                        path.display()
                    ));
                }
                continue;
            };
            if line.is_empty() {
                continue;
            }
            let parsed = parse_line(&line);
            if !self.headed {
                let seg_path = self
                    .current
                    .as_ref()
                    .map(|s| s.path.clone())
                    .unwrap_or_default();
                match parsed {
                    Ok(Line::Header(h)) => {
                        check_version(&h, &seg_path)?;
                        self.headed = true;
                        return Ok(Some(Line::Header(h)));
                    }
                    _ => return Err(ReadError::NotRecording { path: seg_path }),
                }
            }
            match parsed {
                Ok(Line::Header(h)) => {
                    let seg_path = self
                        .current
                        .as_ref()
                        .map(|s| s.path.clone())
                        .unwrap_or_default();
                    check_version(&h, &seg_path)?;
                    return Ok(Some(Line::Header(h)));
                }
                Ok(Line::SnapshotPart(c)) => {
                    let mut dropped = Vec::new();
                    let whole = self.snapshot.push(*c, &mut |w| dropped.push(w));
                    let path = self.current.as_ref().map(|s| s.path.clone());
                    for w in dropped {
                        let p = path.as_deref().unwrap_or(Path::new("?"));
                        self.warn(format_args!("{}: {w}", p.display()));
                    }
                    if let Some(snap) = whole {
                        return Ok(Some(Line::Snapshot(Box::new(snap))));
                    }
                }
                Ok(line) => return Ok(Some(line)),
                Err(e) => {
                    let (path, n) = self
                        .current
                        .as_ref()
                        .map(|s| (s.path.clone(), s.line_no))
                        .unwrap_or_default();
                    self.warn(format_args!("{} line {n}: {e}; skipped", path.display()));
                }
            }
        }
    }
}

fn check_version(h: &Header, path: &Path) -> Result<(), ReadError> {
    if h.v > crate::model::record::SCHEMA_VERSION {
        return Err(ReadError::Version {
            path: path.to_owned(),
            v: h.v,
        });
    }
    Ok(())
}
