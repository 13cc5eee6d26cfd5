//! SO_REUSEPORT group members and their deliveries. A member's series is
//! named by what outlives one socket: its group (proto, port, netns), a
//! member index and its owner (pid, comm). The index is the lowest one no
//! live member of the group holds, so a worker that closes its listener
//! and opens a new one takes the index back: the label set, and with it
//! the series count, stays the same, where a socket inode label would
//! start a new series at every reconnect. The inode is a label only with
//! `--label-socket-inode`; the owner's container with `--container-label`,
//! and its pod's namespace, name and container name with `--kubernetes`.
//!
//! A new socket that takes a freed index starts its counter at 0: to
//! Prometheus a counter that goes down was reset, and `rate()` and
//! `increase()` account for it.

use std::collections::{HashMap, HashSet};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use inspector_common::{AcceptCount, AcceptKey};

use super::{
    AcceptQueue, KernelMember, Labels, Limits, OTHER, label,
    labels::{pod_container, pod_of},
    name,
};
use crate::model::record::Record;

/// (proto, netns, kernel socket address).
type Key = (&'static str, u32, u64);

/// One member of a SO_REUSEPORT group, keyed by its kernel socket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    proto: &'static str,
    port: u16,
    netns: u32,
    /// Lowest index free in the group when the member was first seen.
    index: u32,
    /// Socket inode, 0 when unknown.
    ino: u64,
    pid: Option<u32>,
    comm: String,
    /// Only with `--container-label` or `--kubernetes`: the container's
    /// name in its pod where the kubelet's directories tell, else its id.
    container: String,
    /// Kubernetes namespace and pod, with `--kubernetes`.
    pod: (String, String),
    /// Deliveries seen as events.
    deliveries: u64,
    /// Deliveries counted in the kernel ([`KernelMember`]).
    counted: u64,
    /// A TCP member's accept queue at the last scrape, where its
    /// namespace's socket table was read.
    queue: Option<AcceptQueue>,
    /// Connections each process accepted from it, counted in the kernel:
    /// (pid, comm, accepts), busiest first.
    accepts: Vec<(u32, String, u64)>,
    /// The listener closed: shown at the next scrape, then dropped.
    closed: bool,
    /// Its owner was looked for in the socket files once.
    looked_up: bool,
}

impl Member {
    fn total(&self) -> u64 {
        self.deliveries + self.counted
    }
}

/// Closes remembered between two scrapes: the size of the kernel's
/// `DELIVERIES` and `ACCEPTS` maps, whose entries they name.
const MAX_CLOSED: usize = 16384;

/// Every member, bounded by `max_series`.
#[derive(Debug, Default)]
pub(super) struct Members {
    map: HashMap<Key, Member>,
    /// Listeners seen closing before the kernel's count of them was read.
    closed: HashSet<Key>,
    /// Members dropped by the last exposition, by kernel socket address:
    /// their kernel counts are to be forgotten.
    forgotten: Vec<u64>,
    /// Deliveries (as events) to members past the cap: one `other` series.
    folded: u64,
    /// Accepts from listeners outside any SO_REUSEPORT group (one listener
    /// shared by forked workers, the shared accept queue): (netns, port,
    /// pid, comm, accepts).
    plain: Vec<(u32, u16, u32, String, u64)>,
    /// Listeners seen closing, by (netns, socket): their accept counts are
    /// forgotten at the next scrape (a new listener at the same address
    /// must not inherit them).
    closed_listeners: HashSet<(u32, u64)>,
}

impl Members {
    fn index_for(&self, proto: &'static str, port: u16, netns: u32) -> u32 {
        let taken: HashSet<u32> = self
            .map
            .values()
            .filter(|m| m.proto == proto && m.port == port && m.netns == netns)
            .map(|m| m.index)
            .collect();
        (0..).find(|i| !taken.contains(i)).unwrap_or(0)
    }

    fn create(&mut self, key: Key, port: u16, ino: u64) -> Member {
        let (proto, netns, _) = key;
        Member {
            proto,
            port,
            netns,
            index: self.index_for(proto, port, netns),
            ino,
            pid: None,
            comm: String::new(),
            container: String::new(),
            pod: (String::new(), String::new()),
            deliveries: 0,
            counted: 0,
            queue: None,
            accepts: Vec::new(),
            closed: self.closed.contains(&key),
            looked_up: false,
        }
    }

    /// Counts a delivery (an event) to the member `r` names, created on
    /// first sight; `false` when it was folded past `max`.
    pub(super) fn deliver(&mut self, r: &Record, proto: &'static str, max: usize) -> bool {
        let key = (proto, r.netns, r.sock);
        if !self.map.contains_key(&key) {
            if self.map.len() >= max {
                self.folded += 1;
                return false;
            }
            let m = self.create(key, r.lport, r.ino.unwrap_or(0));
            self.map.insert(key, m);
        }
        let Some(m) = self.map.get_mut(&key) else {
            return true;
        };
        m.deliveries += 1;
        // The owner may be learnt after the first delivery.
        if m.pid.is_none() && r.pid.is_some() {
            m.pid = r.pid;
            m.comm = label(r.comm.as_deref().unwrap_or(""));
        }
        if m.container.is_empty() {
            m.container = pod_container(r);
            m.pod = pod_of(r);
        }
        true
    }

    /// A listener closed: it leaves its group after the next exposition,
    /// and its accepts are forgotten.
    pub(super) fn close(&mut self, key: Key) {
        // Both sets are emptied at every scrape; without one they stop
        // growing at the kernel's own bound on what they name (a close
        // past it leaves its counts to the kernel's LRU).
        if self.closed_listeners.len() < MAX_CLOSED {
            self.closed_listeners.insert((key.1, key.2));
        }
        match self.map.get_mut(&key) {
            Some(m) => m.closed = true,
            None if self.closed.len() < MAX_CLOSED => {
                self.closed.insert(key);
            }
            None => {}
        }
    }

    /// Sets the kernel's count of one member, created on first sight;
    /// `false` when it was folded past `max`.
    pub(super) fn count(&mut self, k: &KernelMember, proto: &'static str, max: usize) -> bool {
        let key = (proto, k.netns, k.sock);
        if !self.map.contains_key(&key) {
            if self.map.len() >= max {
                // The kernel total is absolute, so a folded series cannot
                // add it up scrape after scrape: not shown, forgotten.
                self.forgotten.push(k.sock);
                return false;
            }
            let mut m = self.create(key, k.lport, k.ino);
            let pod = k.pod.as_deref();
            m.container = label(
                pod.and_then(|p| p.container.as_deref())
                    .or(k.container.as_deref())
                    .unwrap_or(""),
            );
            if let Some(p) = pod {
                m.pod = (label(&p.namespace), label(&p.pod));
            }
            self.map.insert(key, m);
        }
        if let Some(m) = self.map.get_mut(&key) {
            m.counted = k.deliveries;
            if m.pid.is_none() && k.pid.is_some() {
                m.pid = k.pid;
                m.comm = label(k.comm.as_deref().unwrap_or(""));
            }
        }
        true
    }

    /// Each TCP member's accept queue from the socket tables just read,
    /// found by (netns, socket inode); a member not found (closed, or its
    /// namespace not read) shows none.
    pub(super) fn set_queues(&mut self, queues: &HashMap<(u32, u64), AcceptQueue>) {
        for m in self.map.values_mut() {
            m.queue = (m.proto == "tcp" && m.ino != 0)
                .then(|| queues.get(&(m.netns, m.ino)).copied())
                .flatten();
        }
    }

    /// Each member's accepts by process from the kernel's counts, the
    /// busiest `max` (process, listener) pairs over all members; returns
    /// how many were left out past `max` and their kernel keys, to forget
    /// (a kernel total cannot be added into `other` scrape after scrape).
    /// A listener that is no member (outside any SO_REUSEPORT group) shows
    /// its accepts by process under its port, with an empty `member`.
    pub(super) fn set_accepts(
        &mut self,
        accepts: &[(AcceptKey, AcceptCount)],
        max: usize,
    ) -> (u64, Vec<AcceptKey>) {
        let by_sock: HashMap<u64, Key> = self
            .map
            .iter()
            .filter(|(_, m)| m.proto == "tcp" && !m.closed)
            .map(|(k, _)| (k.2, *k))
            .collect();
        for m in self.map.values_mut() {
            m.accepts.clear();
        }
        let mut rows: Vec<&(AcceptKey, AcceptCount)> = accepts.iter().collect();
        rows.sort_by(|a, b| {
            (b.1.count, a.0.listener, a.0.tgid).cmp(&(a.1.count, b.0.listener, b.0.tgid))
        });
        let (mut shown, mut folded, mut forget) = (0, 0, Vec::new());
        let closed = std::mem::take(&mut self.closed_listeners);
        self.plain.clear();
        for (k, v) in rows {
            if closed.contains(&(v.netns, k.listener)) {
                forget.push(*k);
                continue;
            }
            if shown >= max {
                folded += 1;
                forget.push(*k);
                continue;
            }
            shown += 1;
            let comm = label(&crate::model::record::comm(&v.comm));
            match by_sock
                .get(&k.listener)
                .filter(|key| key.1 == v.netns)
                .and_then(|key| self.map.get_mut(key))
            {
                Some(m) => m.accepts.push((k.tgid, comm, v.count)),
                None => self.plain.push((v.netns, v.lport, k.tgid, comm, v.count)),
            }
        }
        (folded, forget)
    }

    /// Forgets the closings seen before the kernel's counts were read.
    pub(super) fn counted(&mut self) {
        self.closed.clear();
    }

    /// Groups (netns, port) with a member whose owner is unknown and was
    /// not looked for yet: listeners older than the agent, whose bind it
    /// did not see.
    pub(super) fn without_owner(&self) -> Vec<(u32, u16)> {
        let mut groups: Vec<(u32, u16)> = self
            .map
            .values()
            .filter(|m| m.pid.is_none() && !m.looked_up)
            .map(|m| (m.netns, m.port))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// The owners of group (netns, port) from the socket files: `files`
    /// as (inode, pid, comm). Members without one are not looked for again.
    pub(super) fn set_owners(&mut self, netns: u32, port: u16, files: &[(u64, u32, String)]) {
        for m in self
            .map
            .values_mut()
            .filter(|m| m.netns == netns && m.port == port && m.pid.is_none())
        {
            m.looked_up = true;
            if let Some((_, pid, comm)) = files.iter().find(|f| m.ino != 0 && f.0 == m.ino) {
                m.pid = Some(*pid);
                m.comm = label(comm);
            }
        }
    }

    /// Kernel socket addresses of the members the last exposition dropped.
    pub(super) fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    /// After an exposition: closed members leave.
    pub(super) fn drop_closed(&mut self) {
        let forgotten = &mut self.forgotten;
        self.map.retain(|&(_, _, sock), m| {
            if m.closed {
                forgotten.push(sock);
            }
            !m.closed
        });
    }

    pub(super) fn register(&self, reg: &mut Registry, limits: &Limits) {
        let deliveries = Family::<Labels, Counter>::default();
        let length = Family::<Labels, Gauge>::default();
        let limit = Family::<Labels, Gauge>::default();
        let drops = Family::<Labels, Counter>::default();
        let accepts = Family::<Labels, Counter>::default();
        // The optional labels of member `m`; `absent` stands for each
        // where there is no member.
        let optional = |labels: &mut Labels, m: Option<&Member>, absent: &str| {
            if limits.kubernetes {
                labels.push(("namespace", m.map_or(absent.into(), |m| m.pod.0.clone())));
                labels.push(("pod", m.map_or(absent.into(), |m| m.pod.1.clone())));
            }
            if limits.container_label || limits.kubernetes {
                labels.push((
                    "container",
                    m.map_or(absent.into(), |m| m.container.clone()),
                ));
            }
            if limits.socket_inode_label {
                labels.push((
                    "socket",
                    m.map_or(absent.into(), |m| {
                        if m.ino == 0 {
                            String::new()
                        } else {
                            m.ino.to_string()
                        }
                    }),
                ));
            }
        };
        for m in self.map.values() {
            let mut labels = vec![
                ("proto", m.proto.to_owned()),
                ("port", m.port.to_string()),
                ("netns", m.netns.to_string()),
                ("member", m.index.to_string()),
                ("pid", m.pid.map(|p| p.to_string()).unwrap_or_default()),
                ("comm", m.comm.clone()),
            ];
            optional(&mut labels, Some(m), OTHER);
            deliveries.get_or_create(&labels).inc_by(m.total());
            if let Some(q) = m.queue {
                length.get_or_create(&labels).set(i64::from(q.length));
                limit.get_or_create(&labels).set(i64::from(q.limit));
                drops.get_or_create(&labels).inc_by(q.drops);
            }
            for (pid, comm, n) in &m.accepts {
                let mut labels = labels.clone();
                labels[4].1 = pid.to_string();
                labels[5].1 = comm.clone();
                accepts.get_or_create(&labels).inc_by(*n);
            }
        }
        for (netns, port, pid, comm, n) in &self.plain {
            let mut labels = vec![
                ("proto", "tcp".to_owned()),
                ("port", port.to_string()),
                ("netns", netns.to_string()),
                ("member", String::new()),
                ("pid", pid.to_string()),
                ("comm", comm.clone()),
            ];
            // No member to take them from: empty, not `other` (no fold).
            optional(&mut labels, None, "");
            // Two listeners on one port (two addresses) add up.
            accepts.get_or_create(&labels).inc_by(*n);
        }
        if self.folded > 0 {
            let mut labels: Labels = ["proto", "port", "netns", "member", "pid", "comm"]
                .into_iter()
                .map(|k| (k, OTHER.to_owned()))
                .collect();
            optional(&mut labels, None, OTHER);
            deliveries.get_or_create(&labels).inc_by(self.folded);
        }
        reg.register(
            name::DELIVERIES,
            "Connections (TCP) or datagrams (UDP) the kernel gave each member of a SO_REUSEPORT group; member is an index within the group (proto, port, netns) that a new listener takes back from a closed one",
            deliveries,
        );
        // Members past --max-series have no series here either (their
        // fold is counted with the deliveries'): a queue summed over
        // unrelated listeners would say nothing about any of them.
        reg.register(
            name::QUEUE_LENGTH,
            "Connections waiting in the accept queue of each TCP member of a SO_REUSEPORT group (sk_ack_backlog, Recv-Q in ss -tln), read from the socket tables at scrape time; a queue that stays full or grows while the group gets deliveries is a member not accepting",
            length,
        );
        reg.register(
            name::QUEUE_LIMIT,
            "The accept queue's limit of each TCP member of a SO_REUSEPORT group (sk_max_ack_backlog: the listen() backlog capped by net.core.somaxconn, Send-Q in ss -tln); the kernel drops the next connection once the length exceeds it",
            limit,
        );
        reg.register(
            name::QUEUE_DROPS,
            "SYNs and handshake ACKs each TCP member of a SO_REUSEPORT group dropped, mostly because its accept queue was full (the listener's sk_drops, raised by tcp_listendrop(); the namespace's TcpExtListenDrops counts the same events)",
            drops,
        );
        reg.register(
            name::ACCEPTS,
            "Connections each process took with accept() from each TCP listener, counted in the kernel; pid and comm are the accepting process's (several for one listener shared by forked workers: the shared accept queue), the other labels the listener's; member is its index in its SO_REUSEPORT group, empty for a listener in none",
            accepts,
        );
    }
}
