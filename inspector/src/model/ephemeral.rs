//! Ephemeral ports per destination, kept from the record stream: the local
//! ports a namespace's TCP clients hold toward each (netns, address, port),
//! live or in TIME_WAIT, next to the size of the range `connect()` picks
//! from. No terminal and no I/O here: the loop reads each namespace's
//! `ip_local_port_range` and hands it in ([`Ephemeral::set_range`]).
//!
//! Why per destination: `__inet_hash_connect()` may give one local port to
//! many connections as long as their 4-tuples differ
//! (`__inet_check_established()`), so the range runs out toward one
//! destination while others still connect.
//!
//! Bounded: at most [`MAX_DESTS`] destinations and [`MAX_PORTS`] port
//! entries over all of them; past either the destination idle the longest
//! goes (counted in [`Ephemeral::evicted`]). A TIME_WAIT entry whose exit
//! never came ages out after [`TW_LIFETIME_NS`]; a destination with nothing
//! in use and idle for [`DEST_IDLE_NS`] goes.
//!
//! Connections that existed before the records began come from the
//! kernel's table ([`Ephemeral::seed`]); records about them later are
//! matched by their cookie.

pub use crate::kernel::netns::PortRange;

use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    kernel::{Errno, Proto, TcpState},
    model::record::{Names, Record, RecordType},
    model::tracker::TW_LIFETIME_NS,
    util::fasthash::FastMap,
};

/// Destinations tracked at most.
pub const MAX_DESTS: usize = 256;
/// Port entries (live or TIME_WAIT) tracked at most, over all destinations.
pub const MAX_PORTS: usize = 100_000;
/// A destination with nothing in use is forgotten after this long idle.
pub const DEST_IDLE_NS: u64 = 600_000_000_000;
/// Owners remembered per destination.
const OWNERS: usize = 8;

/// A destination as the kernel's established hash tells connections apart
/// on the remote side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestKey {
    pub netns: u32,
    pub addr: IpAddr,
    pub port: u16,
}

/// One local port toward a destination: the live connection holding it,
/// and the timewait socket of an earlier one (both for a moment, when a
/// connection closes: the timewait socket is hashed before the full socket
/// reports CLOSE, `tcp_time_wait()`).
#[derive(Debug, Clone, Copy, Default)]
struct PortUse {
    live: Option<u64>,
    /// (timewait socket, entry time).
    tw: Option<(u64, u64)>,
    /// Held since before the records began ([`Ephemeral::seed`]).
    pre: bool,
}

#[derive(Debug, Default)]
struct Dest {
    ports: FastMap<u16, PortUse>,
    time_wait: u32,
    connects: u64,
    failures: Vec<(Errno, u64)>,
    /// (pid, comm, connect() calls), most calls first after each update.
    owners: Vec<(u32, crate::model::record::Name, u64)>,
    last_ns: u64,
    /// Port entries held since before the records began.
    pre: u32,
}

impl Dest {
    fn owner(&mut self, pid: u32, comm: crate::model::record::Name) {
        if let Some(o) = self.owners.iter_mut().find(|o| o.0 == pid) {
            o.2 += 1;
            if *o.1 != *comm {
                o.1 = comm;
            }
        } else if self.owners.len() < OWNERS {
            self.owners.push((pid, comm, 1));
        } else if let Some(last) = self.owners.last_mut() {
            // Full: the least busy gives way, so a new heavy user shows.
            *last = (pid, comm, 1);
        }
        self.owners
            .sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    }
}

/// A destination as the pane shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DestRow {
    pub key: DestKey,
    /// Local ports held toward it: live connections and TIME_WAIT.
    pub in_use: u32,
    pub time_wait: u32,
    /// Its namespace's range, once read.
    pub range: Option<PortRange>,
    pub connects: u64,
    /// Failed connect() calls by errno, most first.
    pub failures: Vec<(Errno, u64)>,
    pub owners: Vec<(u32, String, u64)>,
    /// Of `in_use`, ports held since before the records began (found in
    /// the kernel's table).
    pub pre: u32,
}

impl DestRow {
    /// In use over the range's size, when known.
    pub fn share(&self) -> Option<f64> {
        let size = self.range?.size();
        Some(if size == 0 {
            1.0
        } else {
            f64::from(self.in_use) / f64::from(size)
        })
    }

    pub fn failed(&self) -> u64 {
        self.failures.iter().map(|f| f.1).sum()
    }
}

#[derive(Debug, Default)]
pub struct Ephemeral {
    dests: FastMap<DestKey, Dest>,
    /// Live client sockets: where they connect and from which port.
    by_sock: FastMap<u64, (DestKey, u16)>,
    by_tw: FastMap<u64, (DestKey, u16)>,
    /// Port entries over all destinations.
    ports: usize,
    ranges: BTreeMap<u32, PortRange>,
    /// Destinations made per namespace so far: a new one may be in a new
    /// namespace that reuses an inode whose range was read before, so the
    /// loop reads the range again when this moves.
    made: BTreeMap<u32, u64>,
    names: Names,
    /// Destinations forgotten past [`MAX_DESTS`] or [`MAX_PORTS`].
    pub evicted: u64,
    /// TIME_WAIT entries forgotten [`TW_LIFETIME_NS`] after entry.
    pub tw_aged_out: u64,
    aged_sec: u64,
    /// Cookies of the connections seeded from the kernel's table while
    /// they hold a port: their entries are keyed by cookie.
    seeded: FastMap<u64, ()>,
}

/// Where a connect() record went: the address asked for (a failed
/// connect() has its destination reset, `tcp_v4_connect()`'s failure
/// path), else the socket's peer.
pub fn destination(r: &Record) -> Option<DestKey> {
    let (addr, port) = match (r.req_addr, r.req_port) {
        (Some(a), Some(p)) if p != 0 => (a, p),
        _ => (r.raddr, r.rport),
    };
    (port != 0).then_some(DestKey {
        netns: r.netns,
        addr,
        port,
    })
}

impl Ephemeral {
    pub fn new() -> Self {
        Self::default()
    }

    /// A namespace's range, read by the loop.
    pub fn set_range(&mut self, netns: u32, range: PortRange) {
        self.ranges.insert(netns, range);
    }

    pub fn take_ranges(&mut self) -> BTreeMap<u32, PortRange> {
        std::mem::take(&mut self.ranges)
    }

    pub fn put_ranges(&mut self, ranges: BTreeMap<u32, PortRange>) {
        self.ranges = ranges;
    }

    pub fn range(&self, netns: u32) -> Option<PortRange> {
        self.ranges.get(&netns).copied()
    }

    /// Namespaces with a destination tracked.
    pub fn namespaces(&self) -> std::collections::BTreeSet<u32> {
        self.dests.keys().map(|k| k.netns).collect()
    }

    /// How many destinations were made in `netns` so far.
    pub fn made(&self, netns: u32) -> u64 {
        self.made.get(&netns).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.dests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// A connection that existed before the records began, from the
    /// kernel's table: local `port` held toward `key` by the socket with
    /// `cookie`, live, or in TIME_WAIT since `tw_entered_ns`. Its entry is
    /// keyed by the cookie: a record about it later names the cookie (a
    /// timewait socket keeps its connection's, `inet_twsk_alloc()`).
    pub fn seed(
        &mut self,
        key: DestKey,
        port: u16,
        cookie: u64,
        tw_entered_ns: Option<u64>,
        now_ns: u64,
    ) {
        if port == 0 || cookie == 0 {
            return;
        }
        if !self.dests.contains_key(&key) && self.dests.len() >= MAX_DESTS {
            self.evict_idlest();
        }
        self.dests.entry(key).or_default();
        self.use_port(key, port, now_ns);
        let Some(d) = self.dests.get_mut(&key) else {
            return;
        };
        let Some(u) = d.ports.get_mut(&port) else {
            return;
        };
        if !u.pre {
            u.pre = true;
            d.pre += 1;
        }
        match tw_entered_ns {
            Some(at) => {
                if u.tw.is_none() {
                    d.time_wait += 1;
                }
                u.tw = Some((cookie, at));
                self.by_tw.insert(cookie, (key, port));
            }
            None => {
                u.live = Some(cookie);
                self.by_sock.insert(cookie, (key, port));
            }
        }
        self.seeded.insert(cookie, ());
    }

    pub fn apply(&mut self, r: &Record) {
        if r.proto != Some(Proto::Tcp) {
            return;
        }
        // A seeded connection is known by its cookie (rare: a copy only
        // for the records of those).
        let by_cookie;
        let r = match r.cookie {
            Some(c) if c != r.sock && self.seeded.contains_key(&c) => {
                by_cookie = Record {
                    sock: c,
                    ..r.clone()
                };
                &by_cookie
            }
            _ => r,
        };
        match r.kind {
            RecordType::Connect => self.connect(r),
            RecordType::State if r.new_state == Some(TcpState::CLOSE) => {
                if let Some((key, port)) = self.by_sock.remove(&r.sock) {
                    self.release(key, port, |u| {
                        if u.live == Some(r.sock) {
                            u.live = None;
                        }
                    });
                }
            }
            RecordType::TwEnter => {
                // A timewait socket of a connection to a destination seen
                // connected to: the client closed first and its port stays
                // taken toward that destination.
                let key = DestKey {
                    netns: r.netns,
                    addr: r.raddr,
                    port: r.rport,
                };
                if r.lport == 0 || !self.dests.contains_key(&key) {
                    return;
                }
                self.tw_leave(r.sock);
                self.use_port(key, r.lport, r.ts_ns);
                if let Some(d) = self.dests.get_mut(&key)
                    && let Some(u) = d.ports.get_mut(&r.lport)
                {
                    if u.tw.is_none() {
                        d.time_wait += 1;
                    }
                    u.tw = Some((r.sock, r.ts_ns));
                    self.by_tw.insert(r.sock, (key, r.lport));
                }
            }
            RecordType::TwExit => self.tw_leave(r.sock),
            _ => {}
        }
        self.bound(r.ts_ns);
    }

    fn connect(&mut self, r: &Record) {
        let Some(key) = destination(r) else { return };
        if !self.dests.contains_key(&key) {
            if self.dests.len() >= MAX_DESTS {
                self.evict_idlest();
            }
            *self.made.entry(key.netns).or_default() += 1;
            // Bounded with the destinations: only namespaces still present.
            if self.made.len() > MAX_DESTS {
                let live = self.namespaces();
                self.made
                    .retain(|ns, _| live.contains(ns) || *ns == key.netns);
            }
        }
        let comm = r.comm.as_deref().map(|c| self.names.get(c));
        let d = self.dests.entry(key).or_default();
        d.connects += 1;
        d.last_ns = d.last_ns.max(r.ts_ns);
        if let (Some(pid), Some(comm)) = (r.pid, comm) {
            d.owner(pid, comm);
        }
        if let Some(e) = r.errno.filter(|e| e.is_failure()) {
            match d.failures.iter_mut().find(|f| f.0 == e) {
                Some(f) => f.1 += 1,
                None => d.failures.push((e, 1)),
            }
            d.failures.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            return;
        }
        if r.lport == 0 {
            return;
        }
        // A socket connecting again (after a failed attempt) moves.
        if let Some((old, port)) = self.by_sock.remove(&r.sock) {
            self.release(old, port, |u| u.live = None);
        }
        self.use_port(key, r.lport, r.ts_ns);
        if let Some(u) = self
            .dests
            .get_mut(&key)
            .and_then(|d| d.ports.get_mut(&r.lport))
        {
            u.live = Some(r.sock);
            self.by_sock.insert(r.sock, (key, r.lport));
        }
    }

    /// The entry of `port` toward `key`, made if new.
    fn use_port(&mut self, key: DestKey, port: u16, ts_ns: u64) {
        let Some(d) = self.dests.get_mut(&key) else {
            return;
        };
        d.last_ns = d.last_ns.max(ts_ns);
        if let std::collections::hash_map::Entry::Vacant(e) = d.ports.entry(port) {
            e.insert(PortUse::default());
            self.ports += 1;
        }
    }

    /// Applies `f` to `port`'s entry toward `key` and drops the entry
    /// when nothing holds it any more.
    fn release(&mut self, key: DestKey, port: u16, f: impl FnOnce(&mut PortUse)) {
        let Some(d) = self.dests.get_mut(&key) else {
            return;
        };
        let Some(u) = d.ports.get_mut(&port) else {
            return;
        };
        let had_tw = u.tw.is_some();
        f(u);
        if had_tw && u.tw.is_none() {
            d.time_wait = d.time_wait.saturating_sub(1);
        }
        if u.live.is_none() && u.tw.is_none() {
            if u.pre {
                d.pre = d.pre.saturating_sub(1);
            }
            d.ports.remove(&port);
            self.ports = self.ports.saturating_sub(1);
        }
    }

    fn tw_leave(&mut self, sock: u64) {
        if let Some((key, port)) = self.by_tw.remove(&sock) {
            self.release(key, port, |u| {
                if u.tw.is_some_and(|(s, _)| s == sock) {
                    u.tw = None;
                }
            });
        }
    }

    fn forget(&mut self, key: DestKey) {
        if let Some(d) = self.dests.remove(&key) {
            self.ports = self.ports.saturating_sub(d.ports.len());
            for u in d.ports.values() {
                if let Some(s) = u.live {
                    self.by_sock.remove(&s);
                }
                if let Some((s, _)) = u.tw {
                    self.by_tw.remove(&s);
                }
            }
        }
    }

    fn evict_idlest(&mut self) {
        let idlest = self
            .dests
            .iter()
            .min_by_key(|(k, d)| (d.last_ns, **k))
            .map(|(k, _)| *k);
        if let Some(k) = idlest {
            self.forget(k);
            self.evicted += 1;
        }
    }

    /// Keeps within [`MAX_PORTS`]; once per second of `now_ns`, ages out
    /// TIME_WAIT entries whose exit was lost and idle destinations.
    pub fn bound(&mut self, now_ns: u64) {
        while self.ports > MAX_PORTS && !self.dests.is_empty() {
            self.evict_idlest();
        }
        let sec = now_ns / 1_000_000_000;
        if sec <= self.aged_sec {
            return;
        }
        self.aged_sec = sec;
        let old: Vec<u64> = self
            .by_tw
            .keys()
            .copied()
            .filter(|s| {
                self.by_tw
                    .get(s)
                    .and_then(|(k, p)| self.dests.get(k)?.ports.get(p)?.tw)
                    .is_some_and(|(_, at)| now_ns.saturating_sub(at) >= TW_LIFETIME_NS)
            })
            .collect();
        self.tw_aged_out += old.len() as u64;
        for s in old {
            self.tw_leave(s);
        }
        let idle: Vec<DestKey> = self
            .dests
            .iter()
            .filter(|(_, d)| d.ports.is_empty() && now_ns.saturating_sub(d.last_ns) >= DEST_IDLE_NS)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.forget(k);
        }
        if !self.seeded.is_empty() {
            let (live, tw) = (&self.by_sock, &self.by_tw);
            self.seeded
                .retain(|c, ()| live.contains_key(c) || tw.contains_key(c));
        }
    }

    /// Every destination, the fullest first: by share of the range, then by
    /// ports in use, then failures.
    pub fn rows(&self) -> Vec<DestRow> {
        let mut rows: Vec<DestRow> = self.dests.iter().map(|(k, d)| self.row_of(*k, d)).collect();
        rows.sort_by(|a, b| {
            let share = |r: &DestRow| r.share().unwrap_or(0.0);
            share(b)
                .total_cmp(&share(a))
                .then(b.in_use.cmp(&a.in_use))
                .then(b.failed().cmp(&a.failed()))
                .then(a.key.cmp(&b.key))
        });
        rows
    }

    /// One destination's row.
    pub fn row(&self, key: &DestKey) -> Option<DestRow> {
        self.dests.get(key).map(|d| self.row_of(*key, d))
    }

    fn row_of(&self, key: DestKey, d: &Dest) -> DestRow {
        DestRow {
            key,
            in_use: d.ports.len() as u32,
            time_wait: d.time_wait,
            range: self.ranges.get(&key.netns).copied(),
            connects: d.connects,
            failures: d.failures.clone(),
            owners: d
                .owners
                .iter()
                .map(|(p, c, n)| (*p, c.to_string(), *n))
                .collect(),
            pre: d.pre,
        }
    }

    /// When `key`'s ports in TIME_WAIT entered it, oldest first: each is
    /// free again TCP_TIMEWAIT_LEN later. Walks the destination's ports:
    /// for a detail view, not per frame.
    pub fn time_wait_entries(&self, key: &DestKey) -> Vec<u64> {
        let mut at: Vec<u64> = self
            .dests
            .get(key)
            .into_iter()
            .flat_map(|d| d.ports.values().filter_map(|u| u.tw.map(|(_, at)| at)))
            .collect();
        at.sort_unstable();
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixture::EventBuilder, model::record::decode_bind};

    const NS: u32 = 4026532100;

    fn connect(sock: u64, to: u16, lport: u16, errno: i32, ts: u64) -> Record {
        let mut ev = EventBuilder::connect(to)
            .lport(lport)
            .sock(sock)
            .netns(NS)
            .owner(77, "curl")
            .at(ts);
        if errno != 0 {
            // A failed connect() has no peer left on the socket.
            ev = ev.errno(errno).lport(0).rport(0).requested(to);
        }
        let mut r = decode_bind(&ev.build(), RecordType::Connect);
        r.pid = Some(77);
        r.comm = Some("curl".into());
        r
    }

    fn close(sock: u64, ts: u64) -> Record {
        let ev = EventBuilder::state(TcpState::FIN_WAIT2, TcpState::CLOSE)
            .sock(sock)
            .netns(NS)
            .at(ts)
            .build();
        crate::model::record::decode_state(&ev)
    }

    fn tw(kind: RecordType, sock: u64, lport: u16, to: u16, ts: u64) -> Record {
        let ev = EventBuilder::time_wait(inspector_common::kind::TW_ARM, TcpState::TIME_WAIT)
            .sock(sock)
            .ports(lport, to)
            .netns(NS)
            .at(ts)
            .build();
        Record::from_event(&ev, kind)
    }

    #[test]
    fn ranges_parse_with_reserved_ports_inside_only() {
        let r = PortRange::parse("40000\t40003\n", "").expect("range");
        assert_eq!((r.low, r.high, r.size()), (40000, 40003, 4));
        let r = PortRange::parse("32768 60999", "80,40000-40009,61000-61010\n").expect("range");
        assert_eq!(r.reserved, 10);
        assert_eq!(r.size(), 60999 - 32768 + 1 - 10);
        assert!(PortRange::parse("5 4", "").is_none());
        assert!(PortRange::parse("x", "").is_none());
    }

    #[test]
    fn live_and_time_wait_ports_count_per_destination_and_leave() {
        let mut e = Ephemeral::new();
        e.set_range(NS, PortRange::parse("40000 40003", "").expect("range"));
        for i in 0..4u16 {
            e.apply(&connect(u64::from(i) + 1, 8018, 40000 + i, 0, 1));
        }
        e.apply(&connect(10, 8018, 0, libc::EADDRNOTAVAIL, 2));
        e.apply(&connect(11, 9000, 40000, 0, 2));
        let rows = e.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].key.port, rows[0].in_use), (8018, 4));
        assert_eq!(rows[0].share(), Some(1.0));
        assert_eq!(rows[0].failures, vec![(Errno::EADDRNOTAVAIL, 1)]);
        assert_eq!(rows[0].owners, vec![(77, "curl".to_owned(), 5)]);
        assert_eq!((rows[1].key.port, rows[1].in_use), (9000, 1));
        // The first client closes first: its port moves to TIME_WAIT, in
        // either order of the two events.
        e.apply(&tw(RecordType::TwEnter, 0x100, 40000, 8018, 3));
        e.apply(&close(1, 3));
        e.apply(&close(2, 3));
        e.apply(&tw(RecordType::TwEnter, 0x101, 40001, 8018, 3));
        let r = &e.rows()[0];
        assert_eq!((r.in_use, r.time_wait), (4, 2));
        e.apply(&tw(RecordType::TwExit, 0x100, 40000, 8018, 4));
        let r = &e.rows()[0];
        assert_eq!((r.in_use, r.time_wait), (3, 1));
        // A server-side TIME_WAIT (the peer is a client's port) is not a
        // destination anyone connected to.
        e.apply(&tw(RecordType::TwEnter, 0x200, 8018, 45000, 5));
        assert_eq!(e.rows().len(), 2);
    }

    #[test]
    fn lost_exits_age_out_and_idle_destinations_go() {
        let mut e = Ephemeral::new();
        e.apply(&connect(1, 8018, 40000, 0, 1));
        e.apply(&tw(RecordType::TwEnter, 0x100, 40000, 8018, 2));
        e.apply(&close(1, 2));
        assert_eq!(e.rows()[0].time_wait, 1);
        e.bound(2 + TW_LIFETIME_NS);
        assert_eq!((e.rows()[0].in_use, e.tw_aged_out), (0, 1));
        e.bound(3 + TW_LIFETIME_NS + DEST_IDLE_NS);
        assert!(e.is_empty());
    }

    #[test]
    fn destinations_are_bounded_the_idlest_going_first() {
        let mut e = Ephemeral::new();
        for i in 0..(MAX_DESTS as u64 + 10) {
            e.apply(&connect(i + 1, 1000 + i as u16, 40000, 0, i + 1));
        }
        assert_eq!(e.len(), MAX_DESTS);
        assert_eq!(e.evicted, 10);
        let ports: Vec<u16> = e.rows().iter().map(|r| r.key.port).collect();
        assert!(!ports.contains(&1000) && ports.contains(&(1000 + MAX_DESTS as u16 + 9)));
        assert_eq!(e.ports, MAX_DESTS);
        assert_eq!(e.by_sock.len(), MAX_DESTS);
    }

    #[test]
    fn connections_from_before_are_seeded_and_leave_by_their_cookie() {
        let mut e = Ephemeral::new();
        let key = DestKey {
            netns: NS,
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 8018,
        };
        // Two live connections and one in TIME_WAIT, found at start.
        e.seed(key, 40000, 11, None, 1);
        e.seed(key, 40001, 12, None, 1);
        e.seed(key, 40002, 13, Some(0), 1);
        let r = e.row(&key).expect("seeded");
        assert_eq!((r.in_use, r.time_wait, r.pre, r.connects), (3, 1, 3, 0));
        assert_eq!(e.time_wait_entries(&key), vec![0]);
        // The first closes: its timewait socket, then its full socket,
        // each under another socket address but the same cookie.
        let mut enter = tw(RecordType::TwEnter, 0x100, 40000, 8018, 2);
        enter.cookie = Some(11);
        e.apply(&enter);
        let mut gone = close(0x200, 2);
        gone.cookie = Some(11);
        e.apply(&gone);
        let r = e.row(&key).expect("still held");
        assert_eq!((r.in_use, r.time_wait, r.pre), (3, 2, 3));
        let mut exit = tw(RecordType::TwExit, 0x100, 40000, 8018, 3);
        exit.cookie = Some(11);
        e.apply(&exit);
        let mut exit = tw(RecordType::TwExit, 0x300, 40002, 8018, 3);
        exit.cookie = Some(13);
        e.apply(&exit);
        let r = e.row(&key).expect("one left");
        assert_eq!((r.in_use, r.time_wait, r.pre), (1, 0, 1));
        // A connection made since counts, not as found at start.
        e.apply(&connect(0x400, 8018, 40003, 0, 4));
        let r = e.row(&key).expect("row");
        assert_eq!((r.in_use, r.pre, r.connects), (2, 1, 1));
        e.bound(2_000_000_000);
        assert_eq!(e.seeded.len(), 1, "the cookies of what is gone go too");
    }
}
