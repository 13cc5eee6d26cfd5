//! SO_REUSEPORT groups: per member its deliveries, per second over the
//! last minute, kept within [`MAX_GROUPS`] and [`MAX_MEMBERS`].

use std::{collections::VecDeque, net::IpAddr};

use super::{HISTORY_SECS, MAX_GROUPS, MAX_MEMBERS, MEMBER_IDLE_NS, Model, owner};
use crate::{kernel::Proto, model::record::Record};

/// One member of a SO_REUSEPORT group.
#[derive(Debug, Clone)]
pub struct Member {
    pub sock_id: String,
    pub sock: u64,
    pub ino: Option<u64>,
    pub owner: Option<(u32, String)>,
    /// Its container (or cgroup) in short ([`Record::cgroup_tag`]).
    pub cgroup: Option<String>,
    pub deliveries: u64,
    /// Deliveries per second (kernel seconds), oldest first, the last
    /// [`HISTORY_SECS`] seconds.
    pub per_sec: VecDeque<(u64, u64)>,
    /// Its socket closed: the member stays, marked, as the record of what
    /// the group got, until it has been idle for [`MEMBER_IDLE_NS`].
    pub closed: bool,
}

impl Member {
    /// The kernel second of its last delivery.
    fn last_sec(&self) -> u64 {
        self.per_sec.back().map_or(0, |&(s, _)| s)
    }

    fn count_second(&mut self, ts_ns: u64) {
        let sec = ts_ns / 1_000_000_000;
        match self.per_sec.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.per_sec.push_back((sec, 1)),
        }
        while self
            .per_sec
            .front()
            .is_some_and(|(s, _)| sec.saturating_sub(*s) >= HISTORY_SECS as u64)
        {
            self.per_sec.pop_front();
        }
    }
}

/// A SO_REUSEPORT group, named by its address and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub proto: Option<Proto>,
    pub addr: IpAddr,
    pub port: u16,
    pub netns: u32,
}

impl Model {
    /// Forgets reuseport members idle for [`MEMBER_IDLE_NS`], and groups
    /// left empty.
    pub(super) fn age_members(&mut self) {
        self.windows.forget_idle(self.now_ns);
        let now = self.now_ns / 1_000_000_000;
        let idle = MEMBER_IDLE_NS / 1_000_000_000;
        let mut gone = Vec::new();
        self.groups.retain(|_, members| {
            members.retain(|m| {
                let keep = now.saturating_sub(m.last_sec()) < idle;
                if !keep {
                    gone.push(m.sock);
                }
                keep
            });
            !members.is_empty()
        });
        self.members_evicted += gone.len() as u64;
        for sock in gone {
            self.member_of.remove(&sock);
        }
    }

    /// A member's socket closed: it is marked, and goes with the idle ones
    /// ([`Model::age_members`]), so a finished run's split stays readable.
    pub(super) fn leave_group(&mut self, sock: u64) {
        let Some(key) = self.member_of.remove(&sock) else {
            return;
        };
        if let Some(members) = self.groups.get_mut(&key) {
            for m in members.iter_mut().filter(|m| m.sock == sock) {
                m.closed = true;
            }
        }
    }

    pub(super) fn deliver(&mut self, r: &Record) {
        let key = GroupKey {
            proto: r.proto,
            addr: r.laddr,
            port: r.lport,
            netns: r.netns,
        };
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            self.evict_idlest_group();
        }
        self.member_of.insert(r.sock, key.clone());
        let members = self.groups.entry(key).or_default();
        if members.len() >= MAX_MEMBERS
            && !members.iter().any(|m| m.sock == r.sock)
            && let Some(i) = (0..members.len()).min_by_key(|&i| members[i].last_sec())
        {
            let m = members.remove(i);
            self.member_of.remove(&m.sock);
            self.members_evicted += 1;
        }
        match members.iter_mut().find(|m| m.sock == r.sock) {
            Some(m) => {
                m.deliveries += 1;
                m.closed = false;
                m.count_second(r.ts_ns);
                if m.owner.is_none() {
                    m.owner = owner(r);
                }
                if m.cgroup.is_none() {
                    m.cgroup = r.cgroup_tag().map(str::to_owned);
                }
            }
            None => {
                let mut m = Member {
                    sock_id: r.sock_id(),
                    sock: r.sock,
                    ino: r.ino,
                    owner: owner(r),
                    cgroup: r.cgroup_tag().map(str::to_owned),
                    deliveries: 1,
                    per_sec: VecDeque::new(),
                    closed: false,
                };
                m.count_second(r.ts_ns);
                members.push(m);
            }
        }
    }

    /// Forgets the group whose last delivery is the oldest, with its
    /// members.
    fn evict_idlest_group(&mut self) {
        let idlest = self
            .groups
            .iter()
            .min_by_key(|(_, ms)| ms.iter().map(Member::last_sec).max().unwrap_or(0))
            .map(|(k, _)| k.clone());
        if let Some(members) = idlest.and_then(|k| self.groups.remove(&k)) {
            self.members_evicted += members.len() as u64;
            for m in members {
                self.member_of.remove(&m.sock);
            }
        }
    }

    /// Zeroes the delivery counters of every group (the `r` key).
    pub fn reset_groups(&mut self) {
        for members in self.groups.values_mut() {
            for m in members {
                m.deliveries = 0;
            }
        }
    }
}
