//! The agent's log: what it writes to stderr (the journal, a pod's log)
//! about the failures it sees, without flooding it. A failing bind in a
//! restart loop fails many times a second; the log says so once per
//! (port, errno, owner's name) and [`EVERY`], then how many it left out. Every
//! string from another process is escaped: a process name with a newline
//! cannot forge a line.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    model::record::{Record, proto_str},
    util::escape::Escaped,
    util::fasthash::KeyedState,
};

/// One line per kind of failure this often at most.
pub const EVERY: Duration = Duration::from_secs(60);
/// Kinds remembered at most; the stalest go first.
const KINDS_MAX: usize = 4096;

/// What makes two failures "the same" for the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    pub what: &'static str,
    pub port: u16,
    pub errno: String,
    pub owner: String,
}

#[derive(Debug)]
struct Seen {
    logged: Instant,
    left_out: u64,
}

/// Rate-limits log lines by [`Kind`].
#[derive(Debug)]
pub struct Limiter {
    seen: HashMap<Kind, Seen, KeyedState>,
    /// Lines left out so far, for the metrics.
    pub suppressed: u64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            seen: HashMap::with_hasher(KeyedState::default()),
            suppressed: 0,
        }
    }
}

impl Limiter {
    /// Whether a line of `kind` may go out now, and how many of its kind
    /// were left out since the last one (to say so on it).
    pub fn admit(&mut self, kind: Kind, now: Instant) -> Option<u64> {
        if let Some(s) = self.seen.get_mut(&kind) {
            if now.duration_since(s.logged) < EVERY {
                s.left_out += 1;
                self.suppressed += 1;
                return None;
            }
            let left_out = std::mem::take(&mut s.left_out);
            s.logged = now;
            return Some(left_out);
        }
        if self.seen.len() >= KINDS_MAX {
            // The stalest kind goes; its count of left-out lines with it
            // (still counted in `suppressed`).
            if let Some(k) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.logged)
                .map(|(k, _)| k.clone())
            {
                self.seen.remove(&k);
            }
        }
        self.seen.insert(
            kind,
            Seen {
                logged: now,
                left_out: 0,
            },
        );
        Some(0)
    }
}

/// The log line of a failed bind `r` explained by `why`: one line, every
/// foreign string escaped.
pub fn failure_line(r: &Record, why: &str, left_out: u64) -> String {
    let errno = r.errno.map(|e| e.to_string()).unwrap_or_default();
    let (proto, phase) = (proto_str(r.proto), r.phase.map_or("bind", |p| p.as_str()));
    let port = r.req_port.unwrap_or(r.lport);
    let who = match (r.pid, r.comm.as_deref()) {
        (Some(p), Some(c)) => format!("pid {p} {}", Escaped(c)),
        (Some(p), None) => format!("pid {p}"),
        _ => "pid ?".to_owned(),
    };
    let more = if left_out > 0 {
        format!(
            " ({left_out} more like it in the last {} s not logged)",
            EVERY.as_secs()
        )
    } else {
        String::new()
    };
    format!(
        "inspector: {proto} {phase} port {port} failed with {errno} ({who}): {}{more}",
        Escaped(why)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(port: u16) -> Kind {
        Kind {
            what: "bind",
            port,
            errno: "EADDRINUSE".into(),
            owner: "7 x".into(),
        }
    }

    #[test]
    fn one_line_per_kind_per_interval_with_the_count_left_out() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert_eq!(l.admit(kind(80), t0), Some(0));
        for i in 1..=999 {
            assert_eq!(l.admit(kind(80), t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(
            l.admit(kind(81), t0),
            Some(0),
            "another port is its own kind"
        );
        assert_eq!(l.admit(kind(80), t0 + EVERY), Some(999));
        assert_eq!(l.suppressed, 999);
    }

    #[test]
    fn a_line_cannot_be_forged() {
        let mut records = Vec::new();
        crate::model::tracker::Tracker::new().apply(
            &crate::fixture::EventBuilder::bind(80)
                .owner(7, "x\ninspector: OK")
                .errno(libc::EADDRINUSE)
                .build(),
            &mut records,
        );
        let r = records.pop().expect("a bind record");
        let line = failure_line(&r, "held by LISTEN (pid 7 x\ninspector: OK)", 0);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.contains('\u{1b}'));
    }
}
