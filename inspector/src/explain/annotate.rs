//! Every failed bind or listen in `trace` and the dashboard carries its
//! explanation, computed right after the failure by the same predictor and
//! inventory as `inspector explain`.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{Decision, Request, explain};
use crate::{
    kernel::{Errno, Phase, Proto},
    record::{Record, RecordType},
};

/// At most this many explanations per second: each one dumps the port's
/// sockets and scans `/proc`, and a failure storm must not stall intake.
const PER_SECOND: u32 = 20;

/// How long an explanation answers the same failure again: a failure
/// storm usually repeats one request, and each answer costs a socket dump
/// and a `/proc` scan on the ring buffer reader's path.
const REUSE: Duration = Duration::from_secs(1);

/// What makes two failures the same question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    netns: u32,
    pid: Option<u32>,
    proto: Option<Proto>,
    addr: Option<IpAddr>,
    port: Option<u16>,
    phase: Option<Phase>,
    flags: (bool, bool, bool),
    uid: Option<u32>,
}

impl Key {
    fn of(r: &Record) -> Self {
        Self {
            netns: r.netns,
            pid: r.pid,
            proto: r.proto,
            addr: r.req_addr,
            port: r.req_port,
            phase: r.phase,
            flags: (r.reuseaddr, r.reuseport, r.v6only),
            uid: r.uid,
        }
    }
}

#[derive(Debug)]
pub struct Annotator {
    window: Instant,
    used: u32,
    /// Failures left unexplained by the rate limit.
    pub skipped: u64,
    /// Answers of the last [`REUSE`] period, by question.
    recent: HashMap<Key, (Instant, Option<String>)>,
}

impl Default for Annotator {
    fn default() -> Self {
        Self {
            window: Instant::now(),
            used: 0,
            skipped: 0,
            recent: HashMap::new(),
        }
    }
}

impl Annotator {
    /// Fills `explanation` on the EADDRINUSE decisions of `records`.
    pub fn annotate(&mut self, records: &mut [Record]) {
        for r in records.iter_mut() {
            if r.kind != RecordType::Bind || r.errno != Some(Errno::EADDRINUSE) {
                continue;
            }
            let key = Key::of(r);
            if let Some((at, why)) = self.recent.get(&key)
                && at.elapsed() < REUSE
            {
                r.explanation.clone_from(why);
                continue;
            }
            if self.window.elapsed() >= Duration::from_secs(1) {
                self.window = Instant::now();
                self.used = 0;
                self.recent.retain(|_, (at, _)| at.elapsed() < REUSE);
            }
            if self.used >= PER_SECOND {
                self.skipped += 1;
                continue;
            }
            self.used += 1;
            r.explanation = explain_failure(r);
            self.recent
                .insert(key, (Instant::now(), r.explanation.clone()));
        }
    }
}

/// One line: the rule that refused the call and the socket(s) that hold
/// the port, from the failing process's namespace as it is now.
pub fn explain_failure(r: &Record) -> Option<String> {
    let pid = r.pid?;
    // The calling thread's namespace: a thread may have entered another.
    let netns = r
        .tid
        .map(|tid| std::path::PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net")))
        .filter(|p| p.exists());
    let req = Request {
        port: u32::from(r.req_port?),
        tcp: r.proto == Some(Proto::Tcp),
        udp: r.proto == Some(Proto::Udp),
        addr: r.req_addr,
        pid: if netns.is_some() { None } else { Some(pid) },
        netns,
        reuseaddr: r.reuseaddr,
        reuseport: r.reuseport,
        v6only: r.v6only,
        uid: r.uid,
        ..Request::default()
    };
    let e = explain(&req).ok()?;
    // The namespace may have changed hands since; only a same-namespace
    // answer explains this record.
    if e.netns != r.netns {
        return None;
    }
    let d: &Decision = if r.phase == Some(Phase::Listen) {
        &e.listen
    } else {
        &e.bind
    };
    if d.result == "ok" {
        return Some(
            "no socket that blocks it is visible now: the holder has gone since, or it is a \
             TCP socket bound without listen(), which sock_diag lists only from Linux 6.6 on"
                .into(),
        );
    }
    let blockers: Vec<String> = d
        .blockers
        .iter()
        .take(3)
        .map(|b| {
            let owner = match (b.pid, &b.comm) {
                (Some(p), Some(c)) => format!("pid {p} {c}"),
                _ => "no owner".into(),
            };
            format!(
                "{} {} ({owner})",
                b.state,
                super::fmt_addr(b.laddr, b.lport)
            )
        })
        .collect();
    let mut line = format!("{}: {}", d.rule.function, d.rule.condition);
    if !blockers.is_empty() {
        line.push_str(&format!("; held by {}", blockers.join(", ")));
    }
    if let Some(a) = d.advice.first() {
        line.push_str(&format!("; {a}"));
    }
    Some(line)
}
