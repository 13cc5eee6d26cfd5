//! The reader against hand-built blobs ([`Builder`]) that mimic the kernel
//! shapes the real lookups rely on, against every truncation and byte
//! corruption of them, and against the running kernel's own BTF where it
//! has one.

use std::path::Path;

use super::{
    Btf, BtfError, Member,
    format::{HEADER_LEN, MAGIC, VERSION, kind, read_u32},
};

/// Assembles a little-endian BTF blob type by type, for tests.
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

impl Builder {
    fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            count: 0,
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn raw(
        &mut self,
        name: &str,
        kind: u32,
        vlen: u32,
        kflag: bool,
        size_or_type: u32,
        extra: &[u32],
    ) -> u32 {
        let name_off = self.str(name);
        let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
        for w in [name_off, info, size_or_type].iter().chain(extra) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.count += 1;
        self.count
    }

    fn int(&mut self, name: &str, size: u32) -> u32 {
        self.raw(name, kind::INT, 0, false, size, &[size * 8])
    }

    fn modifier(&mut self, kind: u32, name: &str, target: u32) -> u32 {
        self.raw(name, kind, 0, false, target, &[])
    }

    /// Members are `(name, type, raw offset word)`; for `kflag` structs
    /// use [`bf`] to encode bitfields.
    fn composite(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        kflag: bool,
        members: &[(&str, u32, u32)],
    ) -> u32 {
        let mut extra = Vec::new();
        for &(n, ty, off) in members {
            extra.extend([self.str(n), ty, off]);
        }
        self.raw(name, kind, members.len() as u32, kflag, size, &extra)
    }

    fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[VERSION, 0]);
        let type_len = self.types.len() as u32;
        for w in [
            HEADER_LEN as u32,
            0,
            type_len,
            type_len,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// Offset word of a bitfield member in a `kind_flag` struct.
fn bf(bit_offset: u32, bits: u32) -> u32 {
    (bits << 24) | bit_offset
}

/// Type ids of the fixture, for assertions.
const INT: u32 = 1;
const UCHAR: u32 = 2;

/// A miniature of the kernel shapes the real lookups rely on.
fn fixture() -> Vec<u8> {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let uchar = b.int("unsigned char", 1);
    assert_eq!((int, uchar), (INT, UCHAR));
    let ns = b.composite(
        kind::STRUCT,
        "ns_common",
        16,
        false,
        &[("count", int, 0), ("inum", int, 32)],
    );
    let ns_t = b.modifier(kind::TYPEDEF, "ns_common_t", ns);
    let ns_ct = b.modifier(kind::CONST, "", ns_t);
    let pair = b.composite(
        kind::STRUCT,
        "",
        8,
        false,
        &[("daddr", int, 0), ("rcv_saddr", int, 32)],
    );
    let addr = b.composite(
        kind::UNION,
        "",
        8,
        false,
        &[("addrpair", int, 0), ("", pair, 0)],
    );
    let common = b.composite(
        kind::STRUCT,
        "common",
        32,
        true,
        &[
            ("", addr, 0),
            ("family", uchar, 64),
            ("reuse", uchar, bf(72, 4)),
            ("reuseport", uchar, bf(76, 1)),
            ("", int, bf(77, 3)), // unnamed padding bitfield
            ("ns", ns_ct, 128),
        ],
    );
    // FWD and an empty struct come first and must be skipped.
    b.raw("sock", kind::FWD, 0, false, 0, &[]);
    b.composite(kind::STRUCT, "sock", 0, false, &[]);
    let sock = b.composite(
        kind::STRUCT,
        "sock",
        40,
        false,
        &[("__sk_common", common, 0), ("sk_protocol", uchar, 256)],
    );
    b.composite(
        kind::STRUCT,
        "sock",
        99,
        false,
        &[("later_duplicate", int, 0)],
    );
    b.composite(
        kind::UNION,
        "u",
        4,
        false,
        &[("a", int, 0), ("b", uchar, 0)],
    );
    let sock_ptr = b.modifier(kind::PTR, "", sock);
    b.composite(
        kind::STRUCT,
        "holder",
        8,
        false,
        &[("p", sock_ptr, 0), ("odd", uchar, 3)],
    );
    // Other kinds with trailing data, so their lengths are exercised.
    b.raw("arr", kind::ARRAY, 0, false, 0, &[int, int, 4]);
    b.raw("e", kind::ENUM, 2, false, 4, &[0, 0, 0, 1]);
    b.raw("", kind::FUNC_PROTO, 1, false, int, &[0, int]);
    b.raw("e64", kind::ENUM64, 1, false, 8, &[0, 0, 0]);
    b.raw("v", kind::VAR, 0, false, int, &[0]);
    b.raw(".data", kind::DATASEC, 1, false, 4, &[0, 0, 4]);
    b.raw("tag", kind::DECL_TAG, 0, false, int, &[0]);
    b.raw("f", kind::FLOAT, 0, false, 8, &[]);
    b.raw("tt", kind::TYPE_TAG, 0, false, int, &[]);
    b.composite(kind::STRUCT, "after_all_kinds", 4, false, &[("x", int, 0)]);
    b.build()
}

fn parsed() -> Btf {
    Btf::from_bytes(fixture()).expect("fixture parses")
}

#[test]
fn plain_member() {
    let btf = parsed();
    let m = btf.member("common", "family").expect("family");
    assert_eq!(
        m,
        Member {
            bit_offset: 64,
            bitfield_size: 0,
            type_id: UCHAR
        }
    );
    assert_eq!(btf.offset("common", "family").expect("family"), 8);
    assert_eq!(btf.offset("sock", "sk_protocol").expect("sk_protocol"), 32);
    assert_eq!(btf.offset("u", "b").expect("union member"), 0);
    assert_eq!(
        btf.offset("after_all_kinds", "x").expect("after all kinds"),
        0
    );
}

#[test]
fn nested_path_through_typedef_and_const() {
    let btf = parsed();
    assert_eq!(btf.offset("common", "ns.inum").expect("ns.inum"), 16 + 4);
    assert_eq!(btf.offset("sock", "__sk_common.ns.inum").expect("deep"), 20);
    assert_eq!(btf.offset("sock", "__sk_common.family").expect("nested"), 8);
    let m = btf.member("sock", "__sk_common.ns.inum").expect("deep");
    assert_eq!(m.type_id, INT);
}

#[test]
fn anonymous_union_and_struct_descent() {
    let btf = parsed();
    assert_eq!(btf.offset("common", "addrpair").expect("addrpair"), 0);
    assert_eq!(btf.offset("common", "daddr").expect("daddr"), 0);
    assert_eq!(btf.offset("common", "rcv_saddr").expect("rcv_saddr"), 4);
    assert_eq!(
        btf.offset("sock", "__sk_common.rcv_saddr")
            .expect("nested anon"),
        4
    );
}

#[test]
fn bitfields_with_kind_flag() {
    let btf = parsed();
    let reuse = btf.member("common", "reuse").expect("reuse");
    assert_eq!(
        reuse,
        Member {
            bit_offset: 72,
            bitfield_size: 4,
            type_id: UCHAR
        }
    );
    let reuseport = btf
        .member("sock", "__sk_common.reuseport")
        .expect("reuseport");
    assert_eq!((reuseport.bit_offset, reuseport.bitfield_size), (76, 1));
    assert!(matches!(
        btf.offset("common", "reuse"),
        Err(BtfError::Bitfield { bits: 4, .. })
    ));
    assert!(matches!(
        btf.offset("holder", "odd"),
        Err(BtfError::NotByteAligned { bit_offset: 3, .. })
    ));
}

#[test]
fn struct_size_prefers_first_definition_with_members() {
    let btf = parsed();
    assert_eq!(btf.struct_size("sock").expect("sock"), 40);
    assert_eq!(btf.struct_size("common").expect("common"), 32);
    assert_eq!(btf.struct_size("u").expect("union"), 4);
}

#[test]
fn lookup_errors() {
    let btf = parsed();
    let err = btf.member("nope", "x").expect_err("must fail");
    assert!(matches!(&err, BtfError::NoType(n) if n == "nope"));
    assert_eq!(err.to_string(), "kernel BTF has no struct nope");
    // Typedef names are not struct names.
    assert!(matches!(
        btf.struct_size("ns_common_t"),
        Err(BtfError::NoType(_))
    ));

    let err = btf.member("common", "missing").expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "kernel BTF: struct common has no member missing"
    );
    let err = btf
        .member("sock", "__sk_common.ns.missing")
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "kernel BTF: struct sock.__sk_common.ns has no member missing"
    );
    let err = btf
        .member("holder", "p.sk_protocol")
        .expect_err("must fail");
    assert!(matches!(err, BtfError::NotComposite { .. }), "{err}");
    for bad in ["", ".", "a..b", ".x", "x."] {
        assert!(
            matches!(btf.member("common", bad), Err(BtfError::InvalidPath(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn every_truncation_is_an_error() {
    let blob = fixture();
    for len in 0..blob.len() {
        assert!(
            Btf::from_bytes(blob[..len].to_vec()).is_err(),
            "prefix of {len} bytes"
        );
    }
}

/// Rewrites the header word at byte `at`.
fn patch(blob: &mut [u8], at: usize, value: u32) {
    blob[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn bad_headers_are_errors() {
    let good = fixture();
    let type_len = read_u32(&good, 12).expect("type_len");
    let check = |blob: Vec<u8>, want: &str| match Btf::from_bytes(blob) {
        Err(BtfError::Malformed(msg)) => assert!(msg.contains(want), "{msg:?} lacks {want:?}"),
        other => panic!("expected Malformed({want}), got {other:?}"),
    };
    check(Vec::new(), "too short");
    check(vec![0xff; 100], "bad magic");
    let mut b = good.clone();
    b[..2].copy_from_slice(&MAGIC.to_be_bytes());
    check(b, "big-endian");
    let mut b = good.clone();
    b[2] = 2;
    check(b, "version");
    let mut b = good.clone();
    patch(&mut b, 4, 8);
    check(b, "header length");
    let mut b = good.clone();
    patch(&mut b, 4, u32::MAX);
    check(b, "header length");
    let mut b = good.clone();
    patch(&mut b, 20, u32::MAX); // str_len
    check(b, "string section");
    let mut b = good.clone();
    patch(&mut b, 8, u32::MAX); // type_off overflows when added
    check(b, "type section");
    let mut b = good.clone();
    patch(&mut b, 12, type_len - 2); // type section ends mid-record
    check(b, "type");
    let mut b = good.clone();
    b[HEADER_LEN + 7] = 30; // first type's kind byte -> unknown kind
    check(b, "unknown kind");
    let mut b = good.clone();
    // Struct names are checked while indexing; ns_common follows two
    // 16-byte INT records.
    patch(&mut b, HEADER_LEN + 32, 1 << 30);
    check(b, "name offset");
    let mut b = good;
    let last = b.len() - 1;
    b[last] = b'x'; // last string loses its NUL
    check(b, "NUL-terminated");
}

#[test]
fn cycles_are_errors_not_hangs() {
    let mut b = Builder::new();
    let int = b.int("int", 4);
    // Type 2 is a typedef of itself; type 3 embeds itself anonymously.
    let td = b.modifier(kind::TYPEDEF, "loop_t", 2);
    b.composite(kind::STRUCT, "s", 4, false, &[("t", td, 0), ("x", int, 0)]);
    b.composite(kind::STRUCT, "self_anon", 4, false, &[("", 4, 0)]);
    let btf = Btf::from_bytes(b.build()).expect("parses; cycles are found lazily");
    assert!(matches!(
        btf.member("s", "t.x"),
        Err(BtfError::Malformed(_))
    ));
    assert!(matches!(
        btf.member("self_anon", "x"),
        Err(BtfError::Malformed(_))
    ));
    // Dangling type id.
    let mut b = Builder::new();
    b.composite(kind::STRUCT, "s", 4, false, &[("", 77, 0)]);
    let btf = Btf::from_bytes(b.build()).expect("parses");
    assert!(matches!(btf.member("s", "x"), Err(BtfError::Malformed(_))));
}

/// Flips every byte of the fixture several ways; parsing and lookups may
/// fail but must never panic.
#[test]
fn corrupted_bytes_never_panic() {
    let good = fixture();
    let lookups = [
        ("common", "family"),
        ("common", "ns.inum"),
        ("common", "rcv_saddr"),
        ("sock", "__sk_common.reuse"),
        ("holder", "p.x"),
        ("u", "b"),
    ];
    for i in 0..good.len() {
        for v in [0, 1, 0x7f, 0x80, 0xff, good[i] ^ 0x55] {
            let mut b = good.clone();
            b[i] = v;
            if let Ok(btf) = Btf::from_bytes(b) {
                for (s, p) in lookups {
                    let _ = btf.member(s, p);
                    let _ = btf.offset(s, p);
                    let _ = btf.struct_size(s);
                }
            }
        }
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = Btf::from_file(Path::new("/nonexistent/btf")).expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot read BTF from /nonexistent/btf "),
        "{msg}"
    );
    assert!(msg.contains("CONFIG_DEBUG_INFO_BTF"), "{msg}");
    // The OS error is the source, printed once by the caller's chain.
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.contains("os error")), "{err:?}");
}

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's BTF, or `None` (with the reason printed) where
/// the test machine has none.
fn vmlinux() -> Option<Btf> {
    let path = Path::new(VMLINUX);
    if !path.exists() {
        eprintln!("skipping: {VMLINUX} is absent (kernel without CONFIG_DEBUG_INFO_BTF?)");
        return None;
    }
    let start = std::time::Instant::now();
    let btf = Btf::from_file(path).expect("kernel BTF parses");
    eprintln!("parsed {VMLINUX} in {:?}: {btf:?}", start.elapsed());
    Some(btf)
}

#[test]
fn vmlinux_sock_common() {
    let Some(btf) = vmlinux() else { return };
    let sc = "sock_common";
    let size = btf.struct_size(sc).expect("sock_common size");
    for field in [
        "skc_family",
        "skc_num",
        "skc_dport",
        "skc_daddr",
        "skc_rcv_saddr",
        "skc_state",
        "skc_net",
    ] {
        let off = btf.offset(sc, field).expect(field);
        assert!(off < size, "{field} at {off} beyond size {size}");
    }
    // skc_dport and skc_num share the anonymous skc_portpair.
    let dport = btf.offset(sc, "skc_dport").expect("skc_dport");
    assert_eq!(btf.offset(sc, "skc_num").expect("skc_num"), dport + 2);
    let reuse = btf.member(sc, "skc_reuse").expect("skc_reuse");
    let reuseport = btf.member(sc, "skc_reuseport").expect("skc_reuseport");
    let ipv6only = btf.member(sc, "skc_ipv6only").expect("skc_ipv6only");
    assert_eq!(reuse.bitfield_size, 4);
    assert_eq!(reuseport.bitfield_size, 1);
    assert_eq!(ipv6only.bitfield_size, 1);
    // Declared consecutively: `skc_reuse:4, skc_reuseport:1, skc_ipv6only:1`.
    assert_eq!(reuseport.bit_offset, reuse.bit_offset + 4);
    assert_eq!(ipv6only.bit_offset, reuseport.bit_offset + 1);
    assert!(matches!(
        btf.offset(sc, "skc_reuse"),
        Err(BtfError::Bitfield { bits: 4, .. })
    ));
}

#[test]
fn vmlinux_other_paths() {
    let Some(btf) = vmlinux() else { return };
    assert_eq!(btf.offset("sock", "__sk_common").expect("__sk_common"), 0);
    let inum = btf.offset("net", "ns.inum").expect("net ns.inum");
    assert!(inum < btf.struct_size("net").expect("net size"));
    let tail = btf
        .offset("inet_connection_sock", "icsk_accept_queue.rskq_accept_tail")
        .expect("rskq_accept_tail");
    assert!(tail < btf.struct_size("inet_connection_sock").expect("icsk size"));
    if cfg!(target_arch = "x86_64") {
        // x86_64 pt_regs: r15 first, orig_ax is the 16th long.
        assert_eq!(btf.offset("pt_regs", "orig_ax").expect("orig_ax"), 15 * 8);
    }
    assert!(btf.offset("sock", "sk_receive_queue.prev").is_ok());
    assert!(matches!(
        btf.member("sock_common", "no_such_field"),
        Err(BtfError::NoMember { .. })
    ));
    assert!(matches!(
        btf.member("no_such_struct_xyz", "x"),
        Err(BtfError::NoType(_))
    ));
}
