//! What a failure's port looked like when it failed: a scenario's holders
//! are gone a moment later, the reason for the failure stays.

use super::{App, CAPTURE_EVERY_NS, CAPTURE_HOLDERS, CAPTURES_KEEP, CAPTURES_PER_SECOND};
use crate::{
    commands::dashboard::model::{Holder, PortKey},
    model::record::Record,
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

/// The sockets on a port when a decision there failed: a scenario's
/// holders are gone a moment later, the reason for the failure stays.
#[derive(Debug, Clone)]
pub struct Capture {
    pub key: PortKey,
    pub ts_ns: u64,
    pub holders: Vec<Holder>,
}

impl App {
    pub(super) fn capture(&mut self, r: &Record) {
        let key = asked_key(r);
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
        let mut holders = self.model.holders(key);
        holders.truncate(CAPTURE_HOLDERS);
        self.captures.push_back(Capture {
            key,
            ts_ns: r.ts_ns,
            holders,
        });
    }

    /// The holders captured when `r` (or the failure just before it on the
    /// same port) failed.
    pub fn captured(&self, r: &Record) -> Option<&Capture> {
        let key = asked_key(r);
        self.captures
            .iter()
            .rev()
            .find(|c| c.key == key && c.ts_ns <= r.ts_ns)
    }
}
