//! Snapshot lines: the kernel's socket tables (the sockets the live
//! dashboard seeds its panes from) written at the start of every file of a
//! recording, so that a file replayed alone, or a window cut from the
//! middle of a recording, starts with the sockets that existed then.
//!
//! One snapshot is one or more lines of `type` `snapshot`, each a batch of
//! sockets whose text stays under [`CHUNK_TEXT`] (far below the reader's
//! [`MAX_LINE`](super::reader::MAX_LINE)). Every line carries the
//! snapshot's `id`, its own `chunk` index, the number of `chunks` and of
//! `sockets`, so a reader knows when it holds the whole
//! ([`Assembler`]). At most [`MAX_SOCKETS`] sockets are written; those left
//! out are counted in the snapshot's `left_out`.

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::{
    kernel::{Proto, TcpState},
    model::seed::{SeedSock, SockAddr},
};

/// Sockets in one snapshot at most; past it the rest is counted in
/// `left_out`, not written. About 13 MB of text (2 MB compressed) at most,
/// once per file.
pub const MAX_SOCKETS: usize = 65_536;
/// Text of one snapshot line at most, before the next socket starts a new
/// line. A socket's text is bounded (its longest field is a 15-byte
/// command name, escaped), so a line never passes this by more than one.
pub const CHUNK_TEXT: usize = 256 << 10;
/// A command name read back is cut to this many characters (the kernel
/// keeps 15 bytes).
const COMM_MAX: usize = 64;

/// The sockets of the kernel's tables at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC when the walk started (the clock of records'
    /// `ts_ns`).
    pub ts_ns: u64,
    pub socks: Vec<SeedSock>,
    /// Sockets past [`MAX_SOCKETS`], not written.
    pub left_out: u64,
}

impl Snapshot {
    /// `socks` taken at `ts_ns`, cut to [`MAX_SOCKETS`] (the rest counted).
    pub fn new(ts_ns: u64, mut socks: Vec<SeedSock>) -> Self {
        let left_out = socks.len().saturating_sub(MAX_SOCKETS) as u64;
        socks.truncate(MAX_SOCKETS);
        Self {
            ts_ns,
            socks,
            left_out,
        }
    }
}

/// One socket as a snapshot line holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sock {
    proto: Proto,
    netns: u32,
    laddr: IpAddr,
    lport: u16,
    reuseaddr: bool,
    reuseport: bool,
    v6only: bool,
    cookie: u64,
    pid: Option<u32>,
    comm: Option<String>,
    state: TcpState,
    tw_left_ns: Option<u64>,
    peer: Option<SocketAddr>,
}

impl From<&SeedSock> for Sock {
    fn from(s: &SeedSock) -> Self {
        Self {
            proto: s.proto,
            netns: s.netns,
            laddr: s.addr.ip,
            lport: s.addr.port,
            reuseaddr: s.addr.reuseaddr,
            reuseport: s.addr.reuseport,
            v6only: s.addr.v6only,
            cookie: s.cookie,
            pid: s.owner.as_ref().map(|o| o.0),
            comm: s.owner.as_ref().map(|o| o.1.clone()),
            state: s.state,
            tw_left_ns: s.tw_left_ns,
            peer: s.peer,
        }
    }
}

impl From<Sock> for SeedSock {
    fn from(s: Sock) -> Self {
        Self {
            proto: s.proto,
            netns: s.netns,
            addr: SockAddr {
                ip: s.laddr,
                port: s.lport,
                reuseaddr: s.reuseaddr,
                reuseport: s.reuseport,
                v6only: s.v6only,
            },
            cookie: s.cookie,
            owner: s.pid.map(|p| {
                (
                    p,
                    s.comm.unwrap_or_default().chars().take(COMM_MAX).collect(),
                )
            }),
            state: s.state,
            tw_left_ns: s.tw_left_ns,
            peer: s.peer,
        }
    }
}

/// One line of a snapshot, as read.
#[derive(Debug, Deserialize)]
pub struct Chunk {
    pub ts_ns: u64,
    pub id: u64,
    pub chunk: u64,
    pub chunks: u64,
    pub sockets: u64,
    pub left_out: u64,
    socks: Vec<Sock>,
}

/// Writes `snap` as the lines of snapshot `id` to `out`; returns how many
/// lines. A snapshot without sockets is one line.
pub fn write(snap: &Snapshot, id: u64, out: &mut Vec<u8>) -> usize {
    // Each socket's text first: the number of lines is known before the
    // first is written.
    let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
    for s in &snap.socks {
        let text = serde_json::to_vec(&Sock::from(s)).unwrap_or_default();
        let last = chunks.last_mut().filter(|c| c.len() < CHUNK_TEXT);
        let chunk = match last {
            Some(c) => c,
            None => {
                chunks.push(Vec::new());
                chunks.last_mut().expect("just pushed")
            }
        };
        if !chunk.is_empty() {
            chunk.push(b',');
        }
        chunk.extend_from_slice(&text);
    }
    let n = chunks.len();
    for (i, socks) in chunks.iter().enumerate() {
        let _ = write!(
            out,
            r#"{{"v":{},"type":"snapshot","ts_ns":{},"id":{id},"chunk":{i},"chunks":{n},"sockets":{},"left_out":{},"socks":["#,
            crate::model::record::SCHEMA_VERSION,
            snap.ts_ns,
            snap.socks.len(),
            snap.left_out,
        );
        out.extend_from_slice(socks);
        out.extend_from_slice(b"]}\n");
    }
    n
}

/// Reads a snapshot line.
pub fn parse(line: &[u8]) -> Result<Chunk, String> {
    serde_json::from_slice(line).map_err(|e| format!("a snapshot line: {e}"))
}

/// Puts a snapshot's lines back together: whole snapshots out, in bounded
/// memory (at most [`MAX_SOCKETS`] sockets held).
#[derive(Debug, Default)]
pub struct Assembler {
    /// The snapshot being read: its id, the next chunk expected, how many
    /// there are and how many sockets they hold.
    part: Option<(u64, u64, u64, u64, Snapshot)>,
}

impl Assembler {
    /// Takes the next snapshot line; a snapshot once it is whole. What
    /// cannot be used (a line out of order, a snapshot cut short or over
    /// its bounds) is dropped and named to `warn`.
    pub fn push(&mut self, c: Chunk, warn: &mut dyn FnMut(String)) -> Option<Snapshot> {
        if c.chunk == 0 {
            if let Some(w) = self.end() {
                warn(w);
            }
            if c.sockets > MAX_SOCKETS as u64 || c.chunks == 0 || c.chunks > c.sockets.max(1) {
                warn(format!(
                    "snapshot {} claims {} sockets in {} lines (at most {MAX_SOCKETS} sockets); dropped",
                    c.id, c.sockets, c.chunks
                ));
                return None;
            }
            self.part = Some((
                c.id,
                0,
                c.chunks,
                c.sockets,
                Snapshot {
                    ts_ns: c.ts_ns,
                    socks: Vec::new(),
                    left_out: c.left_out,
                },
            ));
        }
        let Some((id, next, chunks, sockets, snap)) = &mut self.part else {
            warn(format!(
                "line {} of snapshot {} without its first; dropped",
                c.chunk, c.id
            ));
            return None;
        };
        let id = *id;
        let fits = snap.socks.len() as u64 + c.socks.len() as u64 <= *sockets;
        if c.id != id || c.chunk != *next || c.chunks != *chunks || c.ts_ns != snap.ts_ns || !fits {
            self.part = None;
            warn(format!(
                "snapshot {id}: line {} of snapshot {} does not follow (out of order, or more sockets than it says); dropped",
                c.chunk, c.id
            ));
            return None;
        }
        snap.socks.extend(c.socks.into_iter().map(SeedSock::from));
        *next += 1;
        if *next < *chunks {
            return None;
        }
        let whole = snap.socks.len() as u64 == *sockets;
        let done = self.part.take().map(|p| p.4);
        if !whole {
            warn(format!(
                "snapshot {id} holds fewer sockets than it says; dropped"
            ));
            return None;
        }
        done
    }

    /// The end of a file: a snapshot still incomplete is dropped; the
    /// warning that says so.
    pub fn end(&mut self) -> Option<String> {
        self.part.take().map(|(id, next, chunks, ..)| {
            format!("snapshot {id} ended after {next} of its {chunks} lines; dropped")
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::PathBuf};

    use super::*;
    use crate::recording::{Header, Limits, Line, Reader, Writer, reader::MAX_LINE};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("inspector-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// `n` sockets of every kind a snapshot holds: listeners, TIME_WAIT
    /// and clients' connections, with owners whose names need escaping.
    fn socks(n: usize) -> Vec<SeedSock> {
        (0..n)
            .map(|i| {
                let kind = i % 3;
                SeedSock {
                    proto: Proto::Tcp,
                    netns: 4_026_531_840,
                    addr: SockAddr {
                        ip: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
                        port: 10_000 + (i % 50_000) as u16,
                        reuseaddr: i % 2 == 0,
                        reuseport: i % 5 == 0,
                        v6only: false,
                    },
                    cookie: 1 + i as u64,
                    owner: (kind != 1).then(|| (1000 + i as u32, format!("srv\u{1b}[31m{i}"))),
                    state: [TcpState::LISTEN, TcpState::TIME_WAIT, TcpState::ESTABLISHED][kind],
                    tw_left_ns: (kind == 1).then_some(59_000_000_000),
                    peer: (kind != 0).then(|| SocketAddr::from(([10, 9, 8, 7], 443))),
                }
            })
            .collect()
    }

    fn header() -> Header {
        Header::new("tracepoint".into(), "none".into())
    }

    /// Every line of the recording in `dir`.
    fn lines(dir: &std::path::Path) -> (Vec<Line>, u64) {
        let mut r = Reader::open(dir).expect("open");
        let mut out = Vec::new();
        while let Some(l) = r.next_line().expect("read") {
            out.push(l);
        }
        (out, r.warnings)
    }

    #[test]
    fn a_snapshot_past_one_line_is_chunked_and_read_back_whole() {
        let snap = Snapshot::new(5_000_000_000, socks(20_000));
        let mut text = Vec::new();
        let n = write(&snap, 7, &mut text);
        assert!(
            text.len() > MAX_LINE,
            "{} bytes: more than one line's bound",
            text.len()
        );
        assert!(
            n > 1
                && n == text
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
        );
        for l in text.split(|&b| b == b'\n') {
            assert!(l.len() <= CHUNK_TEXT + 1024, "a line of {} bytes", l.len());
        }
        // Through a recorder's file and the streaming reader.
        let dir = tmpdir("chunked");
        let taken = snap.clone();
        let mut w = Writer::with_snapshots(
            &dir,
            Limits::default(),
            &header(),
            false,
            Some(Box::new(move || taken.clone())),
        )
        .expect("writer");
        assert_eq!(w.snapshots_written, 1);
        assert_eq!(w.last_snapshot, (20_000, n, text.len()));
        w.pending
            .extend_from_slice(b"{\"type\":\"stats\",\"n\":1}\n");
        w.flush().expect("flush");
        let (read, warnings) = lines(&dir);
        assert_eq!(warnings, 0);
        assert!(matches!(read[0], Line::Header(_)));
        let Line::Snapshot(back) = &read[1] else {
            panic!("a snapshot after the header: {:?}", read[1]);
        };
        assert_eq!(**back, snap, "every socket, in order");
        assert!(matches!(read[2], Line::Stats(_)));
        assert_eq!(read.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_rotated_file_starts_with_its_own_snapshot() {
        let dir = tmpdir("rotated");
        let mut taken = 0u64;
        let mut w = Writer::with_snapshots(
            &dir,
            Limits {
                max_size: 4096,
                max_files: 8,
            },
            &header(),
            false,
            Some(Box::new(move || {
                taken += 1;
                Snapshot::new(taken * 1_000, socks(3))
            })),
        )
        .expect("writer");
        let mut x = 88_172_645_463_325_252u64;
        for i in 0..40u32 {
            // Text that does not compress to nothing.
            let noise: String = (0..200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{:02x}", x as u8)
                })
                .collect();
            std::io::Write::write_all(
                &mut w.pending,
                format!("{{\"type\":\"stats\",\"n\":{i},\"x\":\"{noise}\"}}\n").as_bytes(),
            )
            .expect("vec");
            w.flush().expect("flush");
        }
        assert!(w.snapshots_written > 2, "{}", w.snapshots_written);
        for (seq, name) in crate::recording::RecordingDir::open(&dir)
            .expect("dir")
            .segments()
            .expect("list")
        {
            let (read, _) = lines(&dir.join(&name));
            match &read[..2] {
                [Line::Header(_), Line::Snapshot(s)] => {
                    assert_eq!(s.socks.len(), 3);
                    assert_eq!(s.ts_ns, (seq + 1) * 1_000, "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_recording_without_snapshots_still_reads() {
        let dir = tmpdir("none");
        let mut w = Writer::create(&dir, Limits::default(), &header(), false).expect("writer");
        w.pending
            .extend_from_slice(b"{\"type\":\"stats\",\"n\":1}\n");
        w.flush().expect("flush");
        let (read, warnings) = lines(&dir);
        assert_eq!(warnings, 0);
        assert!(
            matches!(read[..], [Line::Header(_), Line::Stats(_)]),
            "{read:?}"
        );
        assert_eq!(w.snapshots_written, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cap_is_counted_and_broken_snapshots_are_dropped() {
        let snap = Snapshot::new(1, socks(MAX_SOCKETS + 5));
        assert_eq!((snap.socks.len(), snap.left_out), (MAX_SOCKETS, 5));
        let mut text = Vec::new();
        write(&snap, 1, &mut text);
        let parts: Vec<Chunk> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse(l).expect("a snapshot line"))
            .collect();
        assert!(parts.iter().all(|c| c.left_out == 5));
        let mut warned = Vec::new();
        let mut a = Assembler::default();
        let mut whole = None;
        for c in parts {
            whole = a.push(c, &mut |w| warned.push(w)).or(whole);
        }
        assert_eq!(whole.map(|s| s.socks.len()), Some(MAX_SOCKETS));
        assert!(warned.is_empty(), "{warned:?}");
        // A line missing in the middle: nothing used, one warning.
        let snap = Snapshot::new(2, socks(6_000));
        let mut text = Vec::new();
        assert!(write(&snap, 2, &mut text) >= 3);
        let mut parts: Vec<Chunk> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse(l).expect("line"))
            .collect();
        parts.remove(1);
        let mut a = Assembler::default();
        let got: Vec<Snapshot> = parts
            .into_iter()
            .filter_map(|c| a.push(c, &mut |w| warned.push(w)))
            .collect();
        assert!(got.is_empty());
        assert!(
            warned.iter().any(|w| w.contains("does not follow")),
            "{warned:?}"
        );
        // A snapshot that claims more than the bound is refused at once.
        let big = format!(
            r#"{{"v":1,"type":"snapshot","ts_ns":1,"id":3,"chunk":0,"chunks":1,"sockets":{},"left_out":0,"socks":[]}}"#,
            MAX_SOCKETS + 1
        );
        let c = parse(big.as_bytes()).expect("line");
        assert!(a.push(c, &mut |w| warned.push(w)).is_none());
        assert!(
            warned.last().is_some_and(|w| w.contains("at most")),
            "{warned:?}"
        );
    }

    /// docs/trace-schema.md documents every field a snapshot line and its
    /// sockets have, and its example parses.
    #[test]
    fn the_schema_documents_snapshot_lines() {
        const DOC: &str = include_str!("../../../docs/trace-schema.md");
        let section = DOC
            .split("### Snapshots")
            .nth(1)
            .expect("a snapshot section");
        // The first column of the section's two tables.
        let documented: Vec<String> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| {
                l.split('|')
                    .nth(1)
                    .unwrap_or_default()
                    .split(',')
                    .map(|f| f.trim().trim_matches('`').to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut text = Vec::new();
        write(&Snapshot::new(9, socks(3)), 1, &mut text);
        let v: serde_json::Value =
            serde_json::from_slice(text.split(|&b| b == b'\n').next().expect("a line"))
                .expect("json");
        let mut written: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        written.extend(v["socks"][1].as_object().expect("a socket").keys().cloned());
        for k in &written {
            assert!(documented.contains(k), "`{k}` is not documented");
        }
        for k in &documented {
            assert!(written.contains(k), "`{k}` is documented, not written");
        }
        let example = section
            .split("```json")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .expect("an example");
        let c = parse(example.trim().as_bytes()).expect("the example parses");
        assert_eq!(c.socks.len() as u64, c.sockets);
    }
}
