//! What a failure's port looked like when it failed: a scenario's holders
//! are gone a moment later, the reason for the failure stays. A failed
//! bind() or listen() keeps the holders of the port it asked for; a failed
//! connect() keeps the local ports in use toward its destination.

use super::{App, CAPTURE_EVERY_NS, CAPTURE_HOLDERS, CAPTURES_KEEP, CAPTURES_PER_SECOND};
use crate::{
    commands::dashboard::model::{Holder, PortKey},
    kernel::Phase,
    model::{
        ephemeral::{self, DestKey, DestRow},
        record::{Record, RecordType},
    },
};

/// The port a decision asked for, as the kernel keys it (a failed one got
/// no local port).
pub fn asked_key(r: &Record) -> PortKey {
    PortKey {
        proto: r.proto,
        port: r.req_port.filter(|p| *p != 0).unwrap_or(r.lport),
        netns: r.netns,
    }
}

/// Where a connect() decision went; `None` for a bind() or listen().
pub fn connect_destination(r: &Record) -> Option<DestKey> {
    let connect = r.kind == RecordType::Connect || r.phase == Some(Phase::Connect);
    connect.then(|| ephemeral::destination(r)).flatten()
}

/// What a capture is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKey {
    /// The port a bind() or listen() asked for.
    Port(PortKey),
    /// The destination of a connect().
    Destination(DestKey),
}

impl CaptureKey {
    pub fn of(r: &Record) -> Self {
        connect_destination(r).map_or_else(|| Self::Port(asked_key(r)), Self::Destination)
    }
}

/// A destination's local ports at one moment, as a detail view tells
/// them: pane 5's row, and when its TIME_WAIT ports entered it.
#[derive(Debug, Clone)]
pub struct DestFacts {
    pub row: DestRow,
    /// When the oldest and the newest of its ports in TIME_WAIT entered
    /// it: each is free again TCP_TIMEWAIT_LEN later.
    pub tw_entered: Option<(u64, u64)>,
}

/// A port or a destination when a decision there failed.
#[derive(Debug, Clone)]
pub struct Capture {
    pub key: CaptureKey,
    pub ts_ns: u64,
    /// The port's sockets (a failed bind() or listen()).
    pub holders: Vec<Holder>,
    /// The destination's ports (a failed connect()), when it had any.
    pub destination: Option<DestFacts>,
}

impl App {
    /// A destination's ports now. Walks its ports: for a detail view and
    /// a capture, not per frame.
    pub fn dest_facts(&self, key: &DestKey) -> Option<DestFacts> {
        let row = self.model.ephemeral.row(key)?;
        let tw = self.model.ephemeral.time_wait_entries(key);
        Some(DestFacts {
            row,
            tw_entered: tw.first().copied().zip(tw.last().copied()),
        })
    }

    pub(super) fn capture(&mut self, r: &Record) {
        let key = CaptureKey::of(r);
        if self
            .captures
            .iter()
            .rev()
            .take_while(|c| r.ts_ns.saturating_sub(c.ts_ns) < CAPTURE_EVERY_NS)
            .any(|c| c.key == key)
        {
            return;
        }
        // Each capture walks the model's sockets: a failure storm over
        // many ports must not turn intake into a scan per record.
        if self
            .captures
            .iter()
            .rev()
            .take(CAPTURES_PER_SECOND)
            .filter(|c| r.ts_ns.saturating_sub(c.ts_ns) < 1_000_000_000)
            .count()
            >= CAPTURES_PER_SECOND
        {
            return;
        }
        if self.captures.len() == CAPTURES_KEEP {
            self.captures.pop_front();
        }
        let (holders, destination) = match key {
            CaptureKey::Port(port) => {
                let mut holders = self.model.holders(port);
                holders.truncate(CAPTURE_HOLDERS);
                (holders, None)
            }
            CaptureKey::Destination(dest) => (Vec::new(), self.dest_facts(&dest)),
        };
        self.captures.push_back(Capture {
            key,
            ts_ns: r.ts_ns,
            holders,
            destination,
        });
    }

    /// What was captured when `r` (or the failure just before it on the
    /// same port or toward the same destination) failed.
    pub fn captured(&self, r: &Record) -> Option<&Capture> {
        let key = CaptureKey::of(r);
        self.captures
            .iter()
            .rev()
            .find(|c| c.key == key && c.ts_ns <= r.ts_ns)
    }
}
