//! The trace record: one kernel observation, decoded, attributed and ready
//! to print or serialise. Its JSON form is the versioned schema documented in
//! docs/trace-schema.md; field names there are stable.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use inspector_common::{AF_INET6, Event, flag};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    kernel::{Errno, Family, Phase, Proto, TcpState},
    util::fasthash::KeyedState,
};

/// Version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordType {
    Bind,
    Connect,
    Accept,
    State,
    TwEnter,
    TwExit,
    Reuseport,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::State => "state",
            Self::TwEnter => "tw_enter",
            Self::TwExit => "tw_exit",
            Self::Reuseport => "reuseport",
        }
    }
}

/// Where `pid`/`comm` of a record come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    /// The owner's own syscall raised the event.
    Syscall,
    /// Remembered from the owner's earlier bind/listen/connect/accept.
    Remembered,
    /// An accepted-but-not-yet-accepted connection: the listener's owner.
    Listener,
    /// Nobody owns it (TIME_WAIT sockets, unknown sockets); see `last_pid`.
    None,
}

/// How a timewait socket went (`tw_exit`): its timer expired
/// (`tw_timer_handler`), it was killed (RST, `inet_twsk_deschedule_put`), or
/// a new connection took its 4-tuple (`tcp_tw_reuse`, a SYN in TIME_WAIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    Expired,
    Killed,
    Reused,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Killed => "killed",
            Self::Reused => "reused",
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The JSON and text name of a record's protocol; `other` for a protocol
/// the kernel programs do not emit.
pub fn proto_str(p: Option<Proto>) -> &'static str {
    p.map_or("other", Proto::as_str)
}

fn serialize_proto<S: Serializer>(p: &Option<Proto>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(proto_str(*p))
}

fn serialize_hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(*v))
}

fn deserialize_hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(u64::from_str_radix(&s, 16).unwrap_or(0))
}

fn deserialize_proto<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Proto>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(match &*s {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        _ => None,
    })
}

/// A process that owns (or owned) a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    /// Its cgroup v2 id when seen (0: unknown).
    pub cgroup: u64,
}

/// A process name shared by every entry that names it ([`Names`]): one
/// pointer wide (an `Arc<str>` is two), so an `Option<Name>` is 8 bytes in
/// the per-socket entries that hold up to 10^5 of them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(Arc<Box<str>>);

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self.0, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// Process names shared by every entry that names them: state kept per
/// socket holds a [`Name`] (8 bytes, no allocation of its own) instead of
/// a `String` each. Bounded: past [`Names::MAX`] distinct names the set
/// starts over (names still held elsewhere stay valid, only unshared).
#[derive(Debug, Default)]
pub struct Names(HashSet<Name, KeyedState>);

impl Names {
    /// Distinct names kept for sharing.
    pub const MAX: usize = 4096;

    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Name {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let n = Name(Arc::new(Box::from(name)));
        self.0.insert(n.clone());
        n
    }
}

/// Deserialises from its own JSON (a recorded trace); the fields the JSON
/// leaves out are filled by [`Record::from_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    #[serde(rename = "type")]
    pub kind: RecordType,
    pub ts_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub owner: OwnerSource,
    /// For TIME_WAIT records: the process that owned the connection before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_comm: Option<String>,
    /// cgroup v2 path relative to the v2 root (`/system.slice/nginx.service`):
    /// the caller's for syscall records, the socket's for the others, the
    /// last owner's for TIME_WAIT records (a timewait socket has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Container id (or machine name) parsed from `cgroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The Kubernetes namespace, pod and container names of `cgroup`'s
    /// pod, where the kubelet's log directories name it (`serve
    /// --kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s_container: Option<String>,
    /// The cgroup v2 id behind `cgroup`, resolved to it in user space.
    #[serde(skip)]
    pub cgroup_id: Option<u64>,
    pub netns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<u64>,
    /// Kernel socket address: ties the events of one socket together.
    /// Written as `sock_id`, in hex ([`Record::sock_id`]).
    #[serde(
        rename = "sock_id",
        serialize_with = "serialize_hex",
        deserialize_with = "deserialize_hex"
    )]
    pub sock: u64,
    /// The thread that made the call, for syscall records (its network
    /// namespace may differ from its process's).
    #[serde(skip)]
    pub tid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// `None` only for a protocol the kernel programs do not emit
    /// (serialised as `other`).
    #[serde(
        serialize_with = "serialize_proto",
        deserialize_with = "deserialize_proto"
    )]
    pub proto: Option<Proto>,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub bound_dev_if: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<Errno>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_state: Option<TcpState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_state: Option<TcpState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExitReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Reuseport group id (kernel address of the group), for `reuseport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For a failed `bind`: the kernel rule that refused it and the
    /// socket(s) holding the port, as `inspector explain` sees them right
    /// after the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// `format!("{v:x}")` without `core::fmt`.
pub fn hex(v: u64) -> String {
    let mut out = Vec::with_capacity(16);
    hex_into(&mut out, v);
    // Only ASCII hex digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `v` in lowercase hex, as `{v:x}` writes it.
pub fn hex_into(out: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = (16 - v.leading_zeros() as usize / 4).max(1);
    for i in (0..n).rev() {
        out.push(DIGITS[(v >> (i * 4)) as usize & 0xf]);
    }
}

impl Record {
    /// Decodes the parts every kind shares. Attribution (`pid`, `owner`,
    /// `last_*`) and kind-specific fields are set by the tracker.
    pub fn from_event(ev: &Event, kind: RecordType) -> Self {
        let family = ev.family;
        Self {
            v: SCHEMA_VERSION,
            kind,
            ts_ns: ev.ts_ns,
            pid: None,
            comm: None,
            uid: (ev.uid != u32::MAX).then_some(ev.uid),
            owner: OwnerSource::None,
            last_pid: None,
            last_comm: None,
            cgroup: None,
            container: None,
            k8s_namespace: None,
            k8s_pod: None,
            k8s_container: None,
            cgroup_id: (ev.cgroup != 0).then_some(ev.cgroup),
            netns: ev.netns,
            cookie: (ev.cookie != 0).then_some(ev.cookie),
            sock: ev.sock,
            tid: (ev.tid != 0).then_some(ev.tid),
            ino: (ev.ino != 0).then_some(ev.ino),
            proto: Proto::from_kernel(ev.proto),
            family: Family::from_kernel(family),
            laddr: addr(family, &ev.laddr),
            lport: ev.lport,
            raddr: addr(family, &ev.raddr),
            rport: ev.rport,
            reuseaddr: ev.flags & flag::REUSEADDR != 0,
            reuseport: ev.flags & flag::REUSEPORT != 0,
            v6only: ev.flags & flag::V6ONLY != 0,
            bound_dev_if: ev.bound_dev_if,
            phase: None,
            req_addr: None,
            req_port: None,
            errno: None,
            old_state: None,
            new_state: None,
            reason: None,
            duration_ns: None,
            group: None,
            explanation: None,
        }
    }

    /// The socket's kernel address in hex, as `sock_id` in the JSON.
    pub fn sock_id(&self) -> String {
        hex(self.sock)
    }

    /// One line of `trace --json` (or of a recording) back into a record.
    /// `tid` and `cgroup_id` stay unknown: the JSON leaves them out, and
    /// `cgroup` already holds their result.
    pub fn from_json(line: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(line)
    }

    /// Names `pid`/`comm` as the owner; its cgroup id stands in when the
    /// event carried none.
    pub fn set_owner(&mut self, pid: u32, comm: &str, cgroup: u64, source: OwnerSource) {
        self.pid = Some(pid);
        self.comm = Some(comm.to_owned());
        self.owner = source;
        if self.cgroup_id.is_none() && cgroup != 0 {
            self.cgroup_id = Some(cgroup);
        }
    }

    /// A short name for the record's cgroup where room is scarce: the
    /// container id (12 digits, as docker shows it) or machine name, else
    /// the cgroup path's last component; `None` when unknown or the root.
    pub fn cgroup_tag(&self) -> Option<&str> {
        if let Some(c) = self.container.as_deref() {
            let short = if c.len() == 64 { &c[..12] } else { c };
            return Some(short);
        }
        self.cgroup
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|last| !last.is_empty())
    }

    /// A bind/listen/connect that the caller saw fail (EINPROGRESS is not
    /// a failure of the port decision).
    pub fn is_failure(&self) -> bool {
        self.errno.is_some_and(Errno::is_failure)
    }
}

pub fn decode_bind(ev: &Event, kind: RecordType) -> Record {
    let mut r = Record::from_event(ev, kind);
    r.phase = Some(Phase::from_kernel(ev.phase));
    // An unreadable address (the call failed with EFAULT) asked for
    // nothing we know: null, not a zero address and port.
    if ev.flags & inspector_common::flag::ADDR_UNREADABLE == 0 {
        r.req_addr = Some(addr(ev.family, &ev.req_addr));
        r.req_port = Some(ev.req_port);
    }
    r.errno = (ev.errno != 0).then_some(Errno::from(ev.errno));
    r
}

pub fn decode_state(ev: &Event) -> Record {
    let mut r = Record::from_event(ev, RecordType::State);
    r.old_state = Some(TcpState::from(ev.old_state));
    r.new_state = Some(TcpState::from(ev.new_state));
    r
}

/// Kernel address bytes (network order; IPv4 in the first four) to an
/// address. IPv4-mapped IPv6 addresses stay IPv6: that is what the socket has.
pub fn addr(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The `comm` array up to its first NUL.
pub fn comm(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// In-band accounting of a trace (the `stats` record of
/// docs/trace-schema.md): cumulative since the probes were loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// CLOCK_MONOTONIC when taken.
    pub ts_ns: u64,
    /// The last one, written at exit.
    pub last: bool,
    /// Events read from the ring buffer.
    pub events_read: u64,
    /// Records written out (after filtering).
    pub records: u64,
    pub counters: crate::kernel::probe::Counters,
}

impl Stats {
    /// The text form: `stats: 12 events read, 10 printed, 0 dropped (ring
    /// buffer full), 0 kernel errors`, with the nonzero error kinds named.
    pub fn line(&self) -> String {
        let c = &self.counters;
        let mut line = format!(
            "stats: {} events read, {} printed, {} dropped (ring buffer full), {} kernel errors",
            self.events_read, self.records, c.dropped, c.read_errors
        );
        let kinds: Vec<String> = c
            .errors()
            .filter(|&(_, n)| n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        if !kinds.is_empty() {
            line.push_str(&format!(" ({})", kinds.join(", ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use inspector_common::{AF_INET, IPPROTO_TCP, kind, phase};

    use super::*;

    fn bind_event() -> Event {
        let mut ev = Event::zeroed();
        ev.kind = kind::BIND;
        ev.phase = phase::LISTEN;
        ev.family = AF_INET;
        ev.proto = IPPROTO_TCP;
        ev.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.lport = 8080;
        ev.req_port = 8080;
        ev.errno = libc::EADDRINUSE;
        ev.flags = flag::REUSEADDR | flag::V6ONLY;
        ev.sock = 0xffff_8880_1234_5678;
        ev.uid = 0;
        ev
    }

    #[test]
    fn decodes_a_failed_listen() {
        let r = decode_bind(&bind_event(), RecordType::Bind);
        assert_eq!(r.phase, Some(Phase::Listen));
        assert_eq!(r.errno, Some(Errno::EADDRINUSE));
        assert!(r.is_failure());
        assert!(r.reuseaddr && !r.reuseport && r.v6only);
        assert_eq!(r.laddr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(r.sock_id(), "ffff888012345678");
        for v in [0u64, 1, 0xf, 0x10, 0xabc, u64::MAX] {
            assert_eq!(hex(v), format!("{v:x}"));
        }
        assert_eq!(r.proto, Some(Proto::Tcp));
        assert_eq!(r.cookie, None);
    }

    #[test]
    fn json_field_names_are_the_schema() {
        let r = decode_bind(&bind_event(), RecordType::Bind);
        let v = serde_json::to_value(&r).expect("serialise");
        // Always there, and there when the bind event has them.
        for key in [
            "v",
            "type",
            "ts_ns",
            "owner",
            "netns",
            "sock_id",
            "proto",
            "family",
            "laddr",
            "lport",
            "raddr",
            "rport",
            "reuseaddr",
            "reuseport",
            "v6only",
            "bound_dev_if",
            "uid",
            "phase",
            "req_addr",
            "req_port",
            "errno",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        // Schema 2 leaves out what is null.
        for key in ["reason", "duration_ns", "old_state", "explanation", "pid"] {
            assert!(v.get(key).is_none(), "{key} is null: left out");
        }
        assert_eq!(v["v"], SCHEMA_VERSION);
        assert_eq!(v["type"], "bind");
        assert_eq!(v["errno"], "EADDRINUSE");
        assert_eq!(v["laddr"], "127.0.0.1");
        // It reads back whole, and so does a schema 1 line, which writes
        // every null.
        let back: Record = serde_json::from_value(v.clone()).expect("reads back");
        assert_eq!(back, r);
        let mut v1 = v;
        for key in ["reason", "duration_ns", "old_state", "explanation", "pid"] {
            v1[key] = serde_json::Value::Null;
        }
        v1["v"] = 1.into();
        let old: Record = serde_json::from_value(v1).expect("a schema 1 line reads");
        assert_eq!(Record { v: r.v, ..old }, r);
    }

    #[test]
    fn cgroup_tags_are_short() {
        let mut r = decode_bind(&bind_event(), RecordType::Bind);
        assert_eq!(r.cgroup_tag(), None);
        r.cgroup = Some("/".into());
        assert_eq!(r.cgroup_tag(), None);
        r.cgroup = Some("/system.slice/nginx.service".into());
        assert_eq!(r.cgroup_tag(), Some("nginx.service"));
        r.container = Some("3f4e156163a0".repeat(5) + "1234");
        assert_eq!(r.cgroup_tag(), Some("3f4e156163a0"));
        r.container = Some("web".into());
        assert_eq!(r.cgroup_tag(), Some("web"));
    }

    #[test]
    fn ipv6_and_comm_decoding() {
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(addr(AF_INET6, &b), IpAddr::V6(Ipv6Addr::LOCALHOST));
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(b"nginx"[..4].try_into().expect("4 bytes"));
        assert_eq!(comm(&c), "ngin");
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
    }
}

#[cfg(test)]
mod schema_doc {
    use super::{ExitReason, Record, TcpState};

    /// The schema document, as shipped.
    const DOC: &str = include_str!("../../../docs/trace-schema.md");

    /// The field names of the event records' table (the first table), each
    /// with whether it may be null (and so left out of a line).
    fn documented() -> Vec<(String, bool)> {
        let mut fields = Vec::new();
        let mut in_table = false;
        for line in DOC.lines() {
            if line.starts_with("| `") {
                in_table = true;
                let mut cells = line.split('|').skip(1);
                let first = cells.next().unwrap_or_default();
                let nullable = cells.next().unwrap_or_default().contains("or null");
                fields.extend(
                    first
                        .split(',')
                        .map(|f| f.trim().trim_matches('`').to_owned())
                        .filter(|f| !f.is_empty())
                        .map(|f| (f, nullable)),
                );
            } else if in_table && !line.starts_with('|') {
                break;
            }
        }
        fields
    }

    #[test]
    fn the_schema_example_parses_and_has_every_documented_field() {
        let fields = documented();
        assert!(fields.len() > 30, "{fields:?}");
        let example = DOC
            .split("## Example")
            .nth(1)
            .and_then(|s| s.split("```json").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("an example after `## Example`");
        let v: serde_json::Value = serde_json::from_str(example.trim()).expect("valid JSON");
        let obj = v.as_object().expect("an object");
        for (f, nullable) in &fields {
            assert!(*nullable || obj.contains_key(f), "the example lacks `{f}`");
        }
        for k in obj.keys() {
            assert!(
                fields.iter().any(|(f, _)| f == k),
                "`{k}` is not documented"
            );
        }
        // A record with every field set has every documented field, and
        // one with none set only those that are never null.
        let full = serde_json::to_value(full_record()).expect("serialise");
        for (f, _) in &fields {
            assert!(full.get(f).is_some(), "a full record lacks `{f}`");
        }
        let bare = Record {
            pid: None,
            comm: None,
            uid: None,
            last_pid: None,
            last_comm: None,
            cgroup: None,
            container: None,
            k8s_namespace: None,
            k8s_pod: None,
            k8s_container: None,
            cookie: None,
            ino: None,
            phase: None,
            req_addr: None,
            req_port: None,
            errno: None,
            old_state: None,
            new_state: None,
            reason: None,
            duration_ns: None,
            group: None,
            explanation: None,
            ..full_record()
        };
        let bare = serde_json::to_value(bare).expect("serialise");
        for (f, nullable) in &fields {
            assert_eq!(bare.get(f).is_some(), !nullable, "`{f}`");
        }
    }

    /// A record with every optional field set.
    fn full_record() -> Record {
        let example = DOC
            .split("## Example")
            .nth(1)
            .and_then(|s| s.split("```json").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("an example");
        let mut r: Record = serde_json::from_str(example.trim()).expect("a record");
        r.last_pid = Some(1);
        r.last_comm = Some("old".into());
        r.container = Some("c".into());
        r.k8s_namespace = Some("ns".into());
        r.k8s_pod = Some("pod".into());
        r.k8s_container = Some("ctr".into());
        r.cookie = Some(7);
        r.old_state = Some(TcpState::LISTEN);
        r.new_state = Some(TcpState::CLOSE);
        r.reason = Some(ExitReason::Expired);
        r.duration_ns = Some(1);
        r.group = Some("ffff".into());
        r
    }
}
