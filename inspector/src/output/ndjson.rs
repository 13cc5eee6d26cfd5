//! The trace's NDJSON lines, written directly. `trace --json` runs next to
//! the workload it watches, and serde's generic path (escaping every field
//! name, formatting through `fmt`) was the tracer's largest cost; so was
//! `core::fmt` itself for integers and addresses (a `perf` of the tracer
//! under a connection loop: a third of its CPU), hence `itoa` and the
//! address writers below. The output is the same JSON as
//! `serde_json::to_writer(record)`; a test holds the two equal.

use std::{io::Write as _, net::IpAddr};

use crate::{
    kernel::{Errno, TcpState},
    model::record::{OwnerSource, Record, proto_str},
};

fn owner_str(o: OwnerSource) -> &'static str {
    match o {
        OwnerSource::Syscall => "syscall",
        OwnerSource::Remembered => "remembered",
        OwnerSource::Listener => "listener",
        OwnerSource::None => "none",
    }
}

/// A JSON string literal of `s`.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Names, states and paths almost never need escaping: one scan, one copy.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Obj<'_> {
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
    fn num(&mut self, k: &str, v: impl itoa_like::Int) {
        self.key(k);
        v.write(self.out);
    }
    // Schema 2 leaves out a key whose value is null (docs/trace-schema.md).
    fn opt_num<T: itoa_like::Int>(&mut self, k: &str, v: Option<T>) {
        if let Some(v) = v {
            self.num(k, v);
        }
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        string(self.out, v);
    }
    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }
    /// A kernel number by its table name; one this build does not know
    /// goes through `Display` (still plain ASCII, nothing to escape).
    fn opt_named<T: std::fmt::Display>(&mut self, k: &str, v: Option<T>, name: Option<&str>) {
        match (v, name) {
            (_, Some(n)) => self.str(k, n),
            (Some(v), None) => {
                self.key(k);
                let _ = write!(self.out, "\"{v}\"");
            }
            (None, None) => {}
        }
    }
    fn opt_errno(&mut self, k: &str, v: Option<Errno>) {
        self.opt_named(k, v, v.and_then(Errno::name));
    }
    fn opt_state(&mut self, k: &str, v: Option<TcpState>) {
        self.opt_named(k, v, v.and_then(TcpState::name));
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }
    fn addr(&mut self, k: &str, v: IpAddr) {
        self.key(k);
        self.out.push(b'"');
        match v {
            IpAddr::V4(a) => ipv4(self.out, a.octets()),
            IpAddr::V6(a) => {
                let _ = write!(self.out, "{a}");
            }
        }
        self.out.push(b'"');
    }
    fn opt_addr(&mut self, k: &str, v: Option<IpAddr>) {
        if let Some(a) = v {
            self.addr(k, a);
        }
    }
}

/// Dotted quad, as `Ipv4Addr`'s `Display` writes it.
fn ipv4(out: &mut Vec<u8>, o: [u8; 4]) {
    let mut buf = itoa::Buffer::new();
    for (i, b) in o.into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(buf.format(b).as_bytes());
    }
}

mod itoa_like {
    pub trait Int: Copy {
        fn write(self, out: &mut Vec<u8>);
    }
    macro_rules! int {
        ($($t:ty),*) => {$(
            impl Int for $t {
                fn write(self, out: &mut Vec<u8>) {
                    out.extend_from_slice(itoa::Buffer::new().format(self).as_bytes());
                }
            }
        )*};
    }
    int!(u16, u32, u64, i32);
}

/// Appends `r` as one JSON object and a newline.
pub fn write(r: &Record, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut o = Obj { out, first: true };
    o.num("v", r.v);
    o.str("type", r.kind.as_str());
    o.num("ts_ns", r.ts_ns);
    o.opt_num("pid", r.pid);
    o.opt_str("comm", r.comm.as_deref());
    o.opt_num("uid", r.uid);
    o.str("owner", owner_str(r.owner));
    o.opt_num("last_pid", r.last_pid);
    o.opt_str("last_comm", r.last_comm.as_deref());
    o.opt_str("cgroup", r.cgroup.as_deref());
    o.opt_str("container", r.container.as_deref());
    o.opt_str("k8s_namespace", r.k8s_namespace.as_deref());
    o.opt_str("k8s_pod", r.k8s_pod.as_deref());
    o.opt_str("k8s_container", r.k8s_container.as_deref());
    o.num("netns", r.netns);
    o.opt_num("cookie", r.cookie);
    o.key("sock_id");
    o.out.push(b'"');
    crate::model::record::hex_into(o.out, r.sock);
    o.out.push(b'"');
    o.opt_num("ino", r.ino);
    o.str("proto", proto_str(r.proto));
    o.str("family", r.family.as_str());
    o.addr("laddr", r.laddr);
    o.num("lport", r.lport);
    o.addr("raddr", r.raddr);
    o.num("rport", r.rport);
    o.bool("reuseaddr", r.reuseaddr);
    o.bool("reuseport", r.reuseport);
    o.bool("v6only", r.v6only);
    o.num("bound_dev_if", r.bound_dev_if);
    o.opt_str("phase", r.phase.map(|p| p.as_str()));
    o.opt_addr("req_addr", r.req_addr);
    o.opt_num("req_port", r.req_port);
    o.opt_errno("errno", r.errno);
    o.opt_state("old_state", r.old_state);
    o.opt_state("new_state", r.new_state);
    o.opt_str("reason", r.reason.map(|x| x.as_str()));
    o.opt_num("duration_ns", r.duration_ns);
    o.opt_str("group", r.group.as_deref());
    o.opt_str("explanation", r.explanation.as_deref());
    out.extend_from_slice(b"}\n");
}

/// Appends the `stats` record (docs/trace-schema.md) and a newline.
pub fn write_stats(s: &crate::model::record::Stats, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut o = Obj { out, first: true };
    o.num("v", crate::model::record::SCHEMA_VERSION);
    o.str("type", "stats");
    o.num("ts_ns", s.ts_ns);
    o.bool("final", s.last);
    o.num("events_read", s.events_read);
    o.num("records", s.records);
    o.num("emitted", s.counters.emitted);
    o.num("dropped", s.counters.dropped);
    o.num("kernel_errors", s.counters.read_errors);
    o.key("errors");
    o.out.push(b'{');
    let mut e = Obj {
        out: o.out,
        first: true,
    };
    for (name, n) in s.counters.errors() {
        e.num(name, n);
    }
    o.out.extend_from_slice(b"}}\n");
}

#[cfg(test)]
mod tests {
    use inspector_common::{AF_INET6, Event, kind, phase};
    use serde_json::Value;

    use super::*;
    use crate::{
        kernel::Proto,
        model::record::{ExitReason, RecordType, decode_bind, decode_state},
    };

    fn same(r: &Record) {
        let mut out = Vec::new();
        write(r, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let fast: Value = serde_json::from_slice(&out).expect("valid JSON");
        let reference = serde_json::to_value(r).expect("serde");
        assert_eq!(fast, reference);
        // Same keys in the same order, too.
        let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(&fast), keys(&reference));
        // A replayed line reads back into a record that writes the same bytes.
        let back = Record::from_json(&out).expect("reads back");
        assert_eq!(back.sock, r.sock);
        let mut again = Vec::new();
        write(&back, &mut again);
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn addresses_and_integers_read_as_display_writes_them() {
        for a in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [255, 255, 255, 255],
            [10, 9, 100, 200],
        ] {
            let mut out = Vec::new();
            ipv4(&mut out, a);
            assert_eq!(out, std::net::Ipv4Addr::from(a).to_string().as_bytes());
        }
        for v in [0u64, 9, 10, 65535, u64::MAX] {
            let mut out = Vec::new();
            itoa_like::Int::write(v, &mut out);
            assert_eq!(out, v.to_string().as_bytes());
        }
        let mut out = Vec::new();
        itoa_like::Int::write(-98i32, &mut out);
        assert_eq!(out, b"-98");
    }

    #[test]
    fn matches_serde_for_every_field_state() {
        let mut ev = Event::zeroed();
        ev.kind = kind::BIND;
        ev.phase = phase::LISTEN;
        ev.family = AF_INET6;
        ev.errno = libc::EADDRINUSE;
        ev.laddr[15] = 1;
        ev.req_port = 8080;
        ev.bound_dev_if = -3;
        let mut r = decode_bind(&ev, RecordType::Bind);
        same(&r);
        r.pid = Some(42);
        r.comm = Some("we\"ird\\na\tme\u{1}".into());
        r.uid = Some(0);
        r.cookie = Some(u64::MAX);
        r.ino = Some(12345);
        r.explanation = Some("held by LISTEN [::1]:8080 (pid 7 srv)".into());
        r.duration_ns = Some(60_000_000_000);
        r.reason = Some(ExitReason::Expired);
        r.group = Some("ffff8881".into());
        r.last_comm = Some("ünïcode".into());
        r.cgroup = Some("/system.slice/docker-3f4e.scope".into());
        r.container = Some("3f4e".into());
        r.kind = RecordType::TwExit;
        same(&r);
        // A protocol, errno and state this build has no name for.
        r.proto = None;
        r.errno = Some(Errno::from(4095));
        r.old_state = Some(TcpState::from(99));
        same(&r);
        ev.kind = kind::STATE;
        ev.proto = inspector_common::IPPROTO_UDP;
        ev.old_state = 1;
        ev.new_state = 7;
        let r = decode_state(&ev);
        assert_eq!(r.proto, Some(Proto::Udp));
        same(&r);
    }

    #[test]
    fn stats_record_has_every_documented_field() {
        use inspector_common::counter;

        use crate::{kernel::probe::Counters, model::record::Stats};

        let mut slots = [0; counter::LEN as usize];
        slots[counter::EMITTED as usize] = 1204;
        slots[counter::DROPPED as usize] = 7;
        slots[counter::READ_USER_ADDR as usize] = 2;
        slots[counter::MAP_OWNER_FULL as usize] = 1;
        let s = Stats {
            ts_ns: 5_213_113_327_409,
            last: true,
            events_read: 1204,
            records: 17,
            counters: Counters::from_slots(slots),
        };
        let mut out = Vec::new();
        write_stats(&s, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        // serde_json's map sorts keys: the order is checked on the text.
        let text = std::str::from_utf8(&out).expect("UTF-8");
        let keys = [
            "v",
            "type",
            "ts_ns",
            "final",
            "events_read",
            "records",
            "emitted",
            "dropped",
            "kernel_errors",
            "errors",
        ];
        in_order(text, &keys);
        assert_eq!(v.as_object().map(serde_json::Map::len), Some(keys.len()));
        assert_eq!(v["v"], crate::model::record::SCHEMA_VERSION);
        assert_eq!(v["type"], "stats");
        assert_eq!(v["ts_ns"], 5_213_113_327_409u64);
        assert_eq!(v["final"], true);
        assert_eq!(v["events_read"], 1204);
        assert_eq!(v["records"], 17);
        assert_eq!(v["emitted"], 1204);
        assert_eq!(v["dropped"], 7);
        assert_eq!(v["kernel_errors"], 3);
        let errors = v["errors"].as_object().expect("errors object");
        let names = [
            "read_sock",
            "read_user_addr",
            "read_timer",
            "read_syscall",
            "read_packet",
            "map_inflight_full",
            "map_owner_full",
            "scratch_busy",
            "skipped_by_kernel",
            "malformed_event",
        ];
        // Every kind, in slot order.
        in_order(text, &names);
        assert_eq!(errors.len(), names.len());
        assert_eq!(errors["read_user_addr"], 2);
        assert_eq!(errors["map_owner_full"], 1);
        assert_eq!(errors["read_sock"], 0);
        // The documented example is the same shape.
        let doc = include_str!("../../../docs/trace-schema.md");
        let example = doc
            .lines()
            .find(|l| l.starts_with("{\"v\":2,\"type\":\"stats\""))
            .expect("a stats example in docs/trace-schema.md");
        let ex: Value = serde_json::from_str(example).expect("example is JSON");
        in_order(example, &keys);
        in_order(example, &names);
        assert_eq!(ex.as_object().map(serde_json::Map::len), Some(keys.len()));
        assert_eq!(
            ex["errors"].as_object().map(serde_json::Map::len),
            Some(names.len())
        );
        for name in names {
            assert!(
                doc.contains(&format!("`errors.{name}`")),
                "{name} documented"
            );
        }
    }

    /// Each of `keys` appears as a JSON key in `text`, in this order.
    fn in_order(text: &str, keys: &[&str]) {
        let mut from = 0;
        for k in keys {
            let needle = format!("\"{k}\":");
            let at = text[from..]
                .find(&needle)
                .unwrap_or_else(|| panic!("{k} missing or out of order in {text}"));
            from += at + needle.len();
        }
    }
}
