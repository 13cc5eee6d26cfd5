//! The traffic driver: each documented scenario, replayed on the live kernel
//! in network namespaces of its own, with the claim it tests, what happened
//! (syscall results, who received what), the kernel's own account of it
//! (the eBPF evidence), a verdict and the kernel rule behind it.
//!
//! A scenario is a plain function over a [`Ctx`]: it creates namespaces,
//! sockets and traffic through the context, which logs every call and its
//! errno, and returns an [`Outcome`] computed from what it observed. While it
//! runs, the caller hands every batch of trace records to
//! [`Running::observe`], which keeps those of the scenario's namespaces as
//! evidence; [`Running::finish`] checks that evidence against the driver's
//! own log. The batch runner ([`run_traced`]) and the dashboard both go
//! through these two calls.

mod catalog;
mod ctx;
mod foreign;
pub mod report;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use catalog::CATALOG;
pub use ctx::{Call, Ctx, Proto, Sock};
use serde::Serialize;

use crate::{
    kernel::{Errno, Phase},
    model::record::{Record, RecordType},
    pipeline::Pipeline,
};

/// One entry of the catalog.
pub struct Scenario {
    /// Its number in the catalog (stable; the README and docs refer to it).
    pub number: u32,
    pub name: &'static str,
    /// What the scenario sets up, in one line.
    pub title: &'static str,
    /// The claim: quoted verbatim from its source document (`...` marks a
    /// cut), or the project's own claim when `source` is `None`.
    pub claim: &'static str,
    /// The document's file name; `None` for an own claim, which the tally
    /// does not count as a document's.
    pub source: Option<&'static str>,
    pub run: fn(&mut Ctx) -> Result<Outcome, ScenarioError>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scenario({} {})", self.number, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Confirmed,
    Refuted,
    Partly,
    /// This machine cannot test the claim (see the result's `reason`).
    Untestable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Refuted => "refuted",
            Self::Partly => "partly",
            Self::Untestable => "untestable",
        }
    }

    /// `confirmed` when every part of a claim held, `refuted` when none
    /// did, `partly` in between.
    pub fn of(held: &[bool]) -> Self {
        match (held.iter().all(|&h| h), held.iter().any(|&h| h)) {
            (true, _) => Self::Confirmed,
            (false, false) => Self::Refuted,
            (false, true) => Self::Partly,
        }
    }
}

/// What a scenario function concludes from what it observed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    /// What happened, in one or two lines a reader takes in at once.
    pub summary: String,
    /// Structured observations specific to the scenario.
    pub details: serde_json::Value,
    /// Why, naming the kernel rule and function.
    pub explanation: String,
    /// Why the verdict is `untestable`.
    pub reason: Option<String>,
    /// A setting that changes the outcome, as shown by a second, labelled
    /// run (`details`): "refuted by default; holds with ...".
    pub advice: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// Whether the kernel's account (the trace records of the scenario's
/// namespaces) agrees with what the driver saw through its syscalls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvidenceCheck {
    pub agrees: bool,
    /// How many driver observations were checked against the evidence.
    pub checked: usize,
    pub mismatches: Vec<String>,
    /// Observations this kernel's probes cannot see, so not checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
}

/// A finished scenario: the `scenario run --json` object.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub number: u32,
    pub name: &'static str,
    pub title: &'static str,
    pub claim: &'static str,
    /// Null for an own claim.
    pub source: Option<&'static str>,
    /// Null when the scenario could not run (see `error`).
    pub verdict: Option<Verdict>,
    /// Why the verdict is `untestable`.
    pub reason: Option<String>,
    /// A non-default setting that changes the outcome, and how.
    pub advice: Option<String>,
    pub observed: serde_json::Value,
    /// The trace records of the scenario's namespaces (the first
    /// [`EVIDENCE_KEPT`]; `evidence_total` counts them all).
    pub evidence: Vec<Record>,
    pub evidence_total: usize,
    pub evidence_check: EvidenceCheck,
    pub explanation: String,
    pub namespaces: Vec<u32>,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl ScenarioResult {
    /// The one-line observed summary.
    pub fn summary(&self) -> &str {
        self.observed
            .get("summary")
            .and_then(|s| s.as_str())
            .unwrap_or("")
    }
}

/// Evidence records kept in a result; the check uses all of them.
pub const EVIDENCE_KEPT: usize = 500;

/// Finds a scenario by name or catalog number.
pub fn find(key: &str) -> Option<&'static Scenario> {
    let number = key.parse::<u32>().ok();
    CATALOG
        .iter()
        .find(|s| s.name == key || Some(s.number) == number)
}

/// How long to wait after a scenario's thread ends before the last poll:
/// its trailing loopback packets and timer events land in the ring buffer
/// meanwhile.
pub const SETTLE: Duration = Duration::from_millis(30);

/// A network namespace of a scenario, named so that no other namespace can
/// be mistaken for it.
///
/// The kernel hands out namespace inode numbers from an IDA and reuses them
/// as soon as a namespace is freed, and a namespace is torn down
/// asynchronously (`cleanup_net()`): the TIME_WAIT sockets of a finished
/// scenario are purged, with their `tw_exit` records, after it ended, maybe
/// while the next scenario already runs in a namespace with the same inode.
/// The records carry no netns cookie (the event format has the inode only),
/// so identity is the pair (inode, creation time):
/// - the scenario holds each namespace's file open until its result is
///   assembled ([`Ctx`] keeps it), so the inode cannot be reused while its
///   evidence is collected;
/// - `since_ns` is read just before `unshare()`: an earlier namespace with
///   the same inode was freed (`ns_free_inum()` in `net_ns_net_exit()`,
///   which runs after every other pernet exit, the TIME_WAIT purge
///   included) before this one could get the number, so all of its records
///   carry earlier kernel timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsId {
    pub ino: u32,
    /// CLOCK_MONOTONIC (the clock of the records' `ts_ns`) before creation.
    pub since_ns: u64,
}

impl NsId {
    /// Whether `r` happened in this namespace.
    pub fn owns(&self, r: &Record) -> bool {
        r.netns == self.ino && r.ts_ns >= self.since_ns
    }
}

/// A scenario running on a thread of its own, and the evidence collected
/// for it so far.
pub struct Running {
    pub scenario: &'static Scenario,
    namespaces: Arc<Mutex<Vec<NsId>>>,
    /// The namespaces as of the last [`Running::observe`].
    followed: Vec<u32>,
    /// The records of the scenario's namespaces, in arrival order.
    evidence: Vec<Record>,
    started: Instant,
    handle: JoinHandle<(Result<Outcome, ScenarioError>, Ctx)>,
    /// Whether the probes report SO_REUSEPORT deliveries on this kernel
    /// (tracepoint mode on Linux 6.1 has no `sock:sk_data_ready`).
    deliveries_seen: bool,
}

/// Starts `scenario` on a new thread, with `pipeline` collecting its
/// evidence; its namespaces appear in [`Running::namespaces`] as it
/// creates them.
pub fn start(scenario: &'static Scenario, pipeline: &Pipeline) -> std::io::Result<Running> {
    let namespaces = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&namespaces);
    let handle = std::thread::Builder::new()
        .name(format!("scenario-{}", scenario.number))
        .spawn(move || {
            let mut ctx = Ctx::new(shared);
            let outcome = (scenario.run)(&mut ctx);
            // Sockets still held by the context close here, on this
            // thread, so the namespaces go when the thread does.
            ctx.close_all();
            (outcome, ctx)
        })?;
    Ok(Running {
        scenario,
        namespaces,
        followed: Vec::new(),
        evidence: Vec::new(),
        started: Instant::now(),
        handle,
        deliveries_seen: pipeline.probes.sees_reuseport_deliveries(),
    })
}

impl Running {
    /// Network namespace inodes created so far.
    pub fn namespaces(&self) -> Vec<u32> {
        self.ns_ids().iter().map(|n| n.ino).collect()
    }

    fn ns_ids(&self) -> Vec<NsId> {
        self.namespaces
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Keeps, of `records`, those of the namespaces the scenario has created
    /// so far as evidence (by [`NsId`]: inode and creation time), and
    /// returns those namespaces' inodes.
    pub fn observe(&mut self, records: &[Record]) -> &[u32] {
        let ids = self.ns_ids();
        self.followed = ids.iter().map(|n| n.ino).collect();
        self.evidence.extend(
            records
                .iter()
                .filter(|r| ids.iter().any(|n| n.owns(r)))
                .cloned(),
        );
        &self.followed
    }

    /// Waits for the scenario and assembles its result with the evidence
    /// observed.
    pub fn finish(self) -> ScenarioResult {
        let s = self.scenario;
        let namespaces = self.namespaces();
        let evidence = self.evidence;
        let (outcome, ctx) = match self.handle.join() {
            Ok(v) => v,
            Err(_) => (
                Err(ScenarioError::Setup("the scenario thread panicked".into())),
                Ctx::default(),
            ),
        };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let check = check_evidence(&ctx, &evidence, self.deliveries_seen);
        let evidence_total = evidence.len();
        let mut evidence = evidence;
        evidence.truncate(EVIDENCE_KEPT);
        let mut observed = serde_json::json!({
            "setup": ctx.setup,
            "calls": ctx.calls,
            "deliveries": ctx.deliveries_json(),
        });
        let (verdict, explanation, reason, advice, error) = match outcome {
            Ok(o) => {
                observed["summary"] = o.summary.into();
                observed["details"] = o.details;
                (Some(o.verdict), o.explanation, o.reason, o.advice, None)
            }
            Err(e) => {
                let e = crate::util::errors::chain(&e);
                observed["summary"] = format!("did not run: {e}").into();
                (None, String::new(), None, None, Some(e))
            }
        };
        // The namespace files close only now that the evidence is in.
        drop(ctx);
        ScenarioResult {
            number: s.number,
            name: s.name,
            title: s.title,
            claim: s.claim,
            source: s.source,
            verdict,
            reason,
            advice,
            observed,
            evidence,
            evidence_total,
            evidence_check: check,
            explanation,
            namespaces,
            duration_ms,
            error,
        }
    }
}

/// Runs `scenario` to the end while `pipeline` collects its evidence.
pub fn run_traced(pipeline: &mut Pipeline, scenario: &'static Scenario) -> ScenarioResult {
    let mut batch = Vec::new();
    let mut running = match start(scenario, pipeline) {
        Ok(r) => r,
        Err(e) => return not_started(scenario, &crate::util::errors::chain(&e)),
    };
    while !running.is_finished() {
        pipeline.poll(&mut batch, false);
        running.observe(&batch);
        batch.clear();
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the last loopback packets and timer events land, then resolve
    // pending TIME_WAIT detaches now.
    std::thread::sleep(SETTLE);
    pipeline.poll(&mut batch, true);
    running.observe(&batch);
    running.finish()
}

pub fn not_started(s: &'static Scenario, why: &str) -> ScenarioResult {
    ScenarioResult {
        number: s.number,
        name: s.name,
        title: s.title,
        claim: s.claim,
        source: s.source,
        verdict: None,
        reason: None,
        advice: None,
        observed: serde_json::json!({ "summary": format!("did not run: {why}") }),
        evidence: Vec::new(),
        evidence_total: 0,
        evidence_check: EvidenceCheck::default(),
        explanation: String::new(),
        namespaces: Vec::new(),
        duration_ms: 0,
        error: Some(why.to_owned()),
    }
}

/// Compares the driver's log with the kernel's account:
/// - every EADDRINUSE / EADDRNOTAVAIL a call returned is a failed decision
///   with the same errno, phase and port;
/// - every socket whose deliveries the scenario counted got exactly that
///   many `reuseport` delivery events;
/// - every port where the scenario expects a TIME_WAIT socket has one.
pub fn check_evidence(ctx: &Ctx, evidence: &[Record], deliveries_seen: bool) -> EvidenceCheck {
    let mut check = EvidenceCheck::default();
    for call in &ctx.calls {
        let Some(errno) = call.errno else {
            continue;
        };
        if errno != Errno::EADDRINUSE && errno != Errno::EADDRNOTAVAIL {
            continue;
        }
        check.checked += 1;
        let want_type = if call.op == "connect" {
            RecordType::Connect
        } else {
            RecordType::Bind
        };
        // bind() to port 0 is the kernel's autobind.
        let phase = if call.op == "bind" && call.port == 0 {
            "autobind"
        } else {
            call.op
        };
        let found = evidence.iter().any(|r| {
            r.kind == want_type
                && r.errno == Some(errno)
                && r.phase.map(Phase::as_str) == Some(phase)
                && (r.req_port == Some(call.port) || r.lport == call.port)
        });
        if !found {
            check.mismatches.push(format!(
                "{} {} {}:{} returned {errno}, but no failed {} decision with that port is in the evidence",
                call.socket, call.op, call.addr, call.port, call.op
            ));
        }
    }
    let mut delivered: BTreeMap<u64, u64> = BTreeMap::new();
    for r in evidence.iter().filter(|r| r.kind == RecordType::Reuseport) {
        if let Some(ino) = r.ino {
            *delivered.entry(ino).or_default() += 1;
        }
    }
    for d in &ctx.deliveries {
        if !d.checked {
            continue;
        }
        if !deliveries_seen {
            check.unchecked.push(format!(
                "{} received {}: the probes on this kernel do not report SO_REUSEPORT \
                 deliveries",
                d.socket, d.count
            ));
            continue;
        }
        check.checked += 1;
        let seen = delivered.get(&d.ino).copied().unwrap_or(0);
        if seen != d.count {
            check.mismatches.push(format!(
                "{} received {} but the kernel reported {seen} deliveries to it",
                d.socket, d.count
            ));
        }
    }
    for &port in &ctx.expect_time_wait {
        check.checked += 1;
        if !evidence
            .iter()
            .any(|r| r.kind == RecordType::TwEnter && r.lport == port)
        {
            check
                .mismatches
                .push(format!("no TIME_WAIT entry on port {port} in the evidence"));
        }
    }
    check.agrees = check.mismatches.is_empty();
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_numbers_and_names_are_unique_and_in_order() {
        for (i, s) in CATALOG.iter().enumerate() {
            assert_eq!(s.number as usize, i + 1, "{s:?}");
            assert!(!s.claim.is_empty(), "{s:?}");
            assert!(s.source.is_none_or(|d| d.ends_with(".md")), "{s:?}");
            assert_eq!(
                CATALOG.iter().filter(|o| o.name == s.name).count(),
                1,
                "{s:?}"
            );
        }
        assert_eq!(find("1").map(|s| s.number), Some(1));
        assert_eq!(find(CATALOG[2].name).map(|s| s.number), Some(3));
        assert!(find("no-such-scenario").is_none());
    }

    #[test]
    fn verdict_of_parts() {
        assert_eq!(Verdict::of(&[true, true]), Verdict::Confirmed);
        assert_eq!(Verdict::of(&[false, false]), Verdict::Refuted);
        assert_eq!(Verdict::of(&[true, false]), Verdict::Partly);
    }

    /// The documents the claims come from, kept unchanged in docs/claims/.
    fn document(name: &str) -> Option<&'static str> {
        macro_rules! docs {
            ($($file:literal),*) => {
                match name {
                    $($file => Some(include_str!(concat!("../../../docs/claims/", $file))),)*
                    _ => None,
                }
            };
        }
        docs!(
            "golang-tcp-port-reuse.md",
            "reuseport-vs-reuseaddr-guide.md",
            "so-reuseaddr-explained.md",
            "socket-options-notes.md"
        )
    }

    fn normalise(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// A quoted claim is the document's own words: every part between the
    /// `...` cuts is a verbatim substring of the named document, with runs
    /// of whitespace counted as one space.
    #[test]
    fn every_quoted_claim_is_verbatim_from_its_document() {
        let mut checked = 0;
        for s in CATALOG {
            let Some(name) = s.source else {
                continue;
            };
            let text = document(name).unwrap_or_else(|| {
                panic!("scenario {} names {name}, not in docs/claims/", s.number)
            });
            let text = normalise(text);
            for part in s.claim.split("...").map(normalise) {
                assert!(
                    part.is_empty() || text.contains(&part),
                    "scenario {} quotes {part:?}, which is not in {name}",
                    s.number
                );
            }
            checked += 1;
        }
        assert!(checked > 0);
    }
}
