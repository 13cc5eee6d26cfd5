//! A sliding [`Observation`] per port, for a view that watches without end
//! (the dashboard's SO_REUSEPORT pane): the records of the port as they
//! come, and a snapshot of its sockets every few seconds from whoever
//! reads the kernel; the verdict is [`analyse`] of the records between the
//! oldest snapshot kept and the newest.
//!
//! Bounded: at most [`MAX_WINDOWS`] ports are followed (the one with the
//! oldest record goes first; one with no record for [`IDLE_NS`] goes
//! anyway) and [`MAX_EVENTS`] records per port; a port
//! whose records outrun that between two snapshots has its window start
//! after the last record dropped, so every verdict is over whole records.
//! A port with no SO_REUSEPORT delivery is followed only once two tasks
//! accepted on it (a shared accept queue): [`MAX_CANDIDATES`] such ports
//! are remembered, the oldest forgotten first.

use std::collections::{BTreeMap, VecDeque};

use std::net::SocketAddr;

use super::{Accept, Balance, Delivery, Listener, Observation, analyse};
use crate::{
    kernel::Proto,
    model::record::{Name, Names, Record, RecordType},
};

/// How far back a window reaches: its oldest snapshot is at most this much
/// older than its newest.
pub const WINDOW_NS: u64 = 30_000_000_000;
/// Ports followed at most.
pub const MAX_WINDOWS: usize = 8;
/// Deliveries and accepts kept per port at most (48 and 88 bytes each:
/// 4.5 MiB for every port followed at the most). A port read once has it
/// read again as soon as half as many came since ([`Windows::due`]), so a
/// busy port's window still spans reads.
pub const MAX_EVENTS: usize = 8192;
/// Ports with one accepting task remembered at most.
pub const MAX_CANDIDATES: usize = 1024;
/// A port with no record for this long is no longer followed (nor read).
pub const IDLE_NS: u64 = 300_000_000_000;

/// A port of a namespace: what one window follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub netns: u32,
    pub port: u16,
    pub proto: Proto,
}

/// One read of the port's sockets ([`crate::commands::balance::read`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC, the records' clock.
    pub taken_ns: u64,
    pub listeners: Vec<Listener>,
    /// Connected sockets on the port: (holder pid, inode).
    pub open: Vec<(u32, u64)>,
}

/// An [`Accept`] as a window keeps it: the task's name shared.
#[derive(Debug, Clone)]
struct Taken {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: Name,
    local: SocketAddr,
    peer: SocketAddr,
}

/// One port's records and snapshots, and the verdict on them.
#[derive(Debug, Default)]
pub struct Window {
    /// Oldest first; only the newest keeps its open connections.
    snapshots: VecDeque<Snapshot>,
    deliveries: VecDeque<(u64, Delivery)>,
    accepts: VecDeque<Taken>,
    /// Records since the newest snapshot.
    since_read: usize,
    /// Whether it was ever read (its snapshots may all have gone since).
    read_once: bool,
    /// The newest record's time.
    last_ns: u64,
    /// Records dropped past [`MAX_EVENTS`].
    pub dropped: u64,
    /// [`analyse`] of the window at its newest snapshot; `None` until two
    /// snapshots frame some time.
    pub verdict: Option<Balance>,
}

impl Window {
    /// Whether the oldest record went to make room.
    fn push_delivery(&mut self, ts_ns: u64, d: Delivery) -> bool {
        let dropped = self.make_room();
        self.deliveries.push_back((ts_ns, d));
        self.last_ns = self.last_ns.max(ts_ns);
        dropped
    }

    fn push_accept(&mut self, a: Taken) -> bool {
        let dropped = self.make_room();
        self.last_ns = self.last_ns.max(a.ts_ns);
        self.accepts.push_back(a);
        dropped
    }

    /// Drops the oldest record when full, and the snapshots taken before
    /// it: a window never starts before a record it no longer has.
    fn make_room(&mut self) -> bool {
        self.since_read += 1;
        if self.deliveries.len() + self.accepts.len() < MAX_EVENTS {
            return false;
        }
        let d = self.deliveries.front().map(|(t, _)| *t);
        let a = self.accepts.front().map(|a| a.ts_ns);
        let cut = match (d, a) {
            (Some(d), Some(a)) if a < d => self.accepts.pop_front().map(|a| a.ts_ns),
            (Some(_), _) => self.deliveries.pop_front().map(|(t, _)| t),
            (None, _) => self.accepts.pop_front().map(|a| a.ts_ns),
        };
        self.dropped += 1;
        if let Some(cut) = cut {
            while self.snapshots.front().is_some_and(|s| s.taken_ns <= cut) {
                self.snapshots.pop_front();
            }
        }
        true
    }

    /// A new snapshot: older ones beyond [`WINDOW_NS`] go with the records
    /// before the new start, and the verdict is taken again.
    fn snapshot(&mut self, key: PortKey, snap: Snapshot) {
        if let Some(prev) = self.snapshots.back_mut() {
            prev.open = Vec::new();
        }
        self.snapshots.push_back(snap);
        self.since_read = 0;
        self.read_once = true;
        let newest = self.snapshots.back().map_or(0, |s| s.taken_ns);
        while self.snapshots.len() > 2
            && self
                .snapshots
                .get(1)
                .is_some_and(|s| newest.saturating_sub(s.taken_ns) >= WINDOW_NS)
        {
            self.snapshots.pop_front();
        }
        let start = self.snapshots.front().map_or(0, |s| s.taken_ns);
        while self.deliveries.front().is_some_and(|(t, _)| *t <= start) {
            self.deliveries.pop_front();
        }
        while self.accepts.front().is_some_and(|a| a.ts_ns <= start) {
            self.accepts.pop_front();
        }
        self.verdict = self.observation(key).as_ref().map(analyse);
    }

    /// The records between the oldest snapshot and the newest.
    pub fn observation(&self, key: PortKey) -> Option<Observation> {
        let (first, last) = (self.snapshots.front()?, self.snapshots.back()?);
        if last.taken_ns <= first.taken_ns {
            return None;
        }
        let within = |t: u64| t > first.taken_ns && t <= last.taken_ns;
        Some(Observation {
            port: key.port,
            proto: key.proto,
            start_ns: first.taken_ns,
            end_ns: last.taken_ns,
            start: first.listeners.clone(),
            end: last.listeners.clone(),
            deliveries: self
                .deliveries
                .iter()
                .filter(|(t, _)| within(*t))
                .map(|(_, d)| *d)
                .collect(),
            accepts: self
                .accepts
                .iter()
                .filter(|a| within(a.ts_ns))
                .map(|a| Accept {
                    pid: a.pid,
                    tid: a.tid,
                    comm: a.comm.to_string(),
                    local: a.local,
                    peer: a.peer,
                    ts_ns: a.ts_ns,
                })
                .collect(),
            open: last.open.clone(),
        })
    }
}

/// The windows of every port followed.
#[derive(Debug, Default)]
pub struct Windows {
    windows: BTreeMap<PortKey, Window>,
    /// Ports with one task seen accepting, by the task's tid, and when.
    candidates: BTreeMap<PortKey, (u32, u64)>,
    /// Task names, shared by the accepts kept.
    names: Names,
    /// Windows forgotten to stay within [`MAX_WINDOWS`].
    pub evicted: u64,
    /// Records dropped past [`MAX_EVENTS`], every port's.
    pub dropped: u64,
}

impl Windows {
    /// Takes a record's part: a SO_REUSEPORT delivery opens its port's
    /// window; a successful accept() joins the window of its port, or opens
    /// it when a second task accepts there.
    pub fn apply(&mut self, r: &Record) {
        let Some(proto) = r.proto else { return };
        let key = PortKey {
            netns: r.netns,
            port: r.lport,
            proto,
        };
        match r.kind {
            RecordType::Reuseport => {
                let Some(ino) = r.ino else { return };
                let peer = SocketAddr::new(r.raddr, r.rport);
                if self
                    .open(key)
                    .push_delivery(r.ts_ns, Delivery { ino, peer })
                {
                    self.dropped += 1;
                }
            }
            RecordType::Accept if r.errno.is_none() && proto == Proto::Tcp => {
                let Some(pid) = r.pid else { return };
                let tid = r.tid.unwrap_or(pid);
                if !self.windows.contains_key(&key) && !self.second_task(key, tid, r.ts_ns) {
                    return;
                }
                let comm = self.names.get(r.comm.as_deref().unwrap_or_default());
                let taken = Taken {
                    pid,
                    tid,
                    comm,
                    local: SocketAddr::new(r.laddr, r.lport),
                    peer: SocketAddr::new(r.raddr, r.rport),
                    ts_ns: r.ts_ns,
                };
                if self.open(key).push_accept(taken) {
                    self.dropped += 1;
                }
            }
            _ => {}
        }
    }

    /// Whether `tid` is a second task accepting on a port not followed
    /// yet; the first is remembered.
    fn second_task(&mut self, key: PortKey, tid: u32, ts_ns: u64) -> bool {
        match self.candidates.get_mut(&key) {
            Some((first, _)) if *first != tid => {
                self.candidates.remove(&key);
                true
            }
            Some((_, at)) => {
                *at = ts_ns;
                false
            }
            None => {
                if self.candidates.len() >= MAX_CANDIDATES
                    && let Some(oldest) = self
                        .candidates
                        .iter()
                        .min_by_key(|(_, (_, at))| *at)
                        .map(|(k, _)| *k)
                {
                    self.candidates.remove(&oldest);
                }
                self.candidates.insert(key, (tid, ts_ns));
                false
            }
        }
    }

    fn open(&mut self, key: PortKey) -> &mut Window {
        if !self.windows.contains_key(&key)
            && self.windows.len() >= MAX_WINDOWS
            && let Some(idlest) = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.last_ns)
                .map(|(k, _)| *k)
        {
            self.windows.remove(&idlest);
            self.evicted += 1;
        }
        self.windows.entry(key).or_default()
    }

    /// Stops following ports with no record for [`IDLE_NS`].
    pub fn forget_idle(&mut self, now_ns: u64) {
        self.windows
            .retain(|_, w| now_ns.saturating_sub(w.last_ns) < IDLE_NS);
    }

    /// The ports to read snapshots of.
    pub fn keys(&self) -> Vec<PortKey> {
        self.windows.keys().copied().collect()
    }

    /// The ports to read before their turn, with whether each was never
    /// read: one not read yet (its window starts at its first read), and
    /// one that got half of [`MAX_EVENTS`] records since its last read
    /// (read now, its window keeps a read after the oldest record kept).
    pub fn due(&self) -> Vec<(PortKey, bool)> {
        self.windows
            .iter()
            .filter(|(_, w)| w.snapshots.is_empty() || w.since_read >= MAX_EVENTS / 2)
            .map(|(k, w)| (*k, !w.read_once))
            .collect()
    }

    /// A snapshot of a port followed (one forgotten since is ignored).
    pub fn snapshot(&mut self, key: PortKey, snap: Snapshot) {
        if let Some(w) = self.windows.get_mut(&key) {
            w.snapshot(key, snap);
        }
    }

    pub fn get(&self, key: &PortKey) -> Option<&Window> {
        self.windows.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PortKey, &Window)> {
        self.windows.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::model::balance::Code;

    const S: u64 = 1_000_000_000;
    const KEY: PortKey = PortKey {
        netns: 7,
        port: 8080,
        proto: Proto::Tcp,
    };

    fn record(kind: RecordType, ts_ns: u64, peer_port: u16) -> Record {
        let ev = crate::fixture::EventBuilder::new(0).build();
        let mut r = Record::from_event(&ev, kind);
        r.ts_ns = ts_ns;
        r.netns = KEY.netns;
        r.proto = Some(Proto::Tcp);
        r.laddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        r.lport = KEY.port;
        r.raddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        r.rport = peer_port;
        r
    }

    fn delivery(ts_ns: u64, ino: u64, peer_port: u16) -> Record {
        let mut r = record(RecordType::Reuseport, ts_ns, peer_port);
        r.ino = Some(ino);
        r
    }

    fn accept(ts_ns: u64, tid: u32, peer_port: u16) -> Record {
        let mut r = record(RecordType::Accept, ts_ns, peer_port);
        r.pid = Some(100);
        r.tid = Some(tid);
        r.comm = Some("worker".into());
        r
    }

    fn listener(ino: u64, queued: u32) -> Listener {
        crate::fixture::listener(ino, KEY.port, queued, (100 + ino as u32, "worker"))
    }

    fn snap(taken_ns: u64, queued: [u32; 2]) -> Snapshot {
        Snapshot {
            taken_ns,
            listeners: vec![listener(1, queued[0]), listener(2, queued[1])],
            open: Vec::new(),
        }
    }

    #[test]
    fn a_verdict_needs_two_snapshots_and_covers_what_is_between() {
        let mut w = Windows::default();
        w.apply(&delivery(S / 2, 1, 1));
        w.snapshot(KEY, snap(S, [0, 0]));
        assert!(w.get(&KEY).expect("followed").verdict.is_none());
        // Member 2 gets 20 and accepts none; member 1 accepts its 20.
        for i in 0..20u16 {
            let t = S + u64::from(i) * 1_000_000 + 1;
            w.apply(&delivery(t, 1, 100 + i));
            w.apply(&accept(t + 1, 101, 100 + i));
            w.apply(&delivery(t, 2, 200 + i));
        }
        w.snapshot(KEY, snap(3 * S, [0, 20]));
        let v = w
            .get(&KEY)
            .and_then(|w| w.verdict.as_ref())
            .expect("verdict");
        let delivered: Vec<u64> = v.members.iter().map(|m| m.delivered).collect();
        assert_eq!(delivered, [20, 20], "the delivery before the start is out");
        assert!(
            v.causes.iter().any(|c| c.code == Code::MemberNotAccepting),
            "{:?}",
            v.causes
        );
    }

    #[test]
    fn the_window_slides_and_keeps_its_bounds() {
        let mut w = Windows::default();
        w.apply(&delivery(1, 1, 1));
        for i in 0..40u64 {
            w.snapshot(KEY, snap(i * 2 * S, [0, 0]));
        }
        assert!(w.due().is_empty(), "read, and nothing since");
        let win = w.get(&KEY).expect("followed");
        let obs = win.observation(KEY).expect("framed");
        assert!(obs.end_ns - obs.start_ns <= WINDOW_NS + 2 * S);
        assert!(obs.end_ns - obs.start_ns >= WINDOW_NS - 2 * S);
        // Records past the bound drop the snapshots before them.
        for i in 0..(MAX_EVENTS as u64 + 10) {
            w.apply(&delivery(80 * S + i, 1, 1));
        }
        assert_eq!(w.due(), [(KEY, false)], "filling up: read before its turn");
        let win = w.get(&KEY).expect("followed");
        assert_eq!(win.dropped, 10, "the first went with its snapshot");
        assert_eq!(w.dropped, 10);
        assert!(win.observation(KEY).is_none(), "no snapshot after the cut");
        assert!(win.deliveries.len() + win.accepts.len() <= MAX_EVENTS);
        // Ports past the bound: the idlest goes.
        for p in 0..MAX_WINDOWS as u16 {
            let mut r = delivery(100 * S + u64::from(p), 1, 1);
            r.lport = 9000 + p;
            w.apply(&r);
        }
        assert_eq!(w.keys().len(), MAX_WINDOWS);
        assert!(w.get(&KEY).is_none());
        assert_eq!(w.evicted, 1);
        w.forget_idle(100 * S + 7 + IDLE_NS - 1);
        assert_eq!(w.keys().len(), 1, "only the newest is left");
    }

    #[test]
    fn a_plain_port_is_followed_once_a_second_task_accepts() {
        let mut w = Windows::default();
        w.apply(&accept(S, 101, 1));
        w.apply(&accept(2 * S, 101, 2));
        assert!(w.keys().is_empty(), "one task: nothing to follow");
        w.apply(&accept(3 * S, 102, 3));
        assert_eq!(w.keys(), [KEY]);
        for p in 0..(MAX_CANDIDATES as u16 + 5) {
            let mut r = accept(4 * S + u64::from(p), 101, 1);
            r.lport = 10_000 + p;
            w.apply(&r);
        }
        assert!(w.candidates.len() <= MAX_CANDIDATES);
    }
}
