//! A small reader for kernel BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs read kernel structures at raw byte offsets, and those
//! offsets change between kernel builds, so they are looked up here at start-up
//! rather than compiled in. Only what that needs is implemented: parsing the
//! type and string sections (layout per `include/uapi/linux/btf.h`) and
//! resolving member paths inside structs and unions. Every read is
//! bounds-checked, so malformed input yields a [`BtfError`], never a panic.

use std::{
    collections::HashMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

/// `BTF_MAGIC` as it reads in little-endian byte order.
const MAGIC: u16 = 0xeb9f;
/// The only header version the kernel emits (`BTF_VERSION`).
const VERSION: u8 = 1;
/// Size of `struct btf_header` in version 1; a longer `hdr_len` is allowed.
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`, the fixed part of every type record.
const TYPE_LEN: usize = 12;
/// Size of `struct btf_member`.
const MEMBER_LEN: usize = 12;
/// Bound on typedef chains and anonymous-member nesting, so that cyclic
/// (malformed) input ends in an error rather than a hang or stack overflow.
const MAX_DEPTH: usize = 64;

/// `BTF_KIND_*` values; only the ones whose trailing data or meaning this
/// module needs are named, the rest are listed in [`trailing_len`].
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// Why BTF could not be read or a layout fact not found. Messages are one
/// line and name the struct and member, since they reach the user as-is.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {} (is CONFIG_DEBUG_INFO_BTF enabled?)", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blob violates the format (also used by callers for layouts they
    /// cannot work with).
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// No struct or union of that name (typedef names do not count).
    #[error("kernel BTF has no struct {0}")]
    NoType(String),
    #[error("kernel BTF: struct {ty} has no member {member}")]
    NoMember { ty: String, member: String },
    /// A non-final path component is not a struct/union (e.g. a pointer).
    #[error("kernel BTF: {ty}.{path} is not a struct or union, so it has no member {member}")]
    NotComposite {
        ty: String,
        path: String,
        member: String,
    },
    /// [`Btf::offset`] on a bitfield; use [`Btf::member`] for those.
    #[error("kernel BTF: {ty}.{path} is a {bits}-bit bitfield, so it has no byte offset")]
    Bitfield { ty: String, path: String, bits: u32 },
    #[error("kernel BTF: {ty}.{path} starts at bit {bit_offset}, not on a byte boundary")]
    NotByteAligned {
        ty: String,
        path: String,
        bit_offset: u32,
    },
    #[error("invalid member path {0:?}: expected dot-separated, non-empty member names")]
    InvalidPath(String),
}

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

/// A member located by [`Btf::member`]. Offsets are in bits from the start of
/// the outer struct because bitfields are not byte-addressable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Bit offset from the start of the struct named in the lookup.
    pub bit_offset: u32,
    /// Width in bits if the member is a bitfield, otherwise 0.
    pub bitfield_size: u32,
    /// BTF type id of the member's declared type.
    pub type_id: u32,
}

/// Fixed part of one type record plus where its trailing data starts; the
/// trailing data is decoded on demand to keep parsing fast.
#[derive(Debug, Clone, Copy)]
struct Type {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// Absolute offset in the BTF blob of the kind-specific trailing data.
    extra: usize,
}

impl Type {
    /// Type id 0 is the implicit `void`; it has no record in the blob.
    const VOID: Type = Type {
        name_off: 0,
        info: 0,
        size_or_type: 0,
        extra: 0,
    };

    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }

    fn is_composite(&self) -> bool {
        matches!(self.kind(), kind::STRUCT | kind::UNION)
    }
}

/// Bytes of kind-specific data following a type record, or `None` for a kind
/// this reader does not know (its length, and so every later record, would be
/// unknowable).
fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => vlen * 12,
        kind::ENUM | kind::FUNC_PROTO => vlen * 8,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        _ => return None,
    })
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..)?
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b))
}

/// Parsed kernel BTF: the raw blob plus an index of its type records.
pub struct Btf {
    data: Vec<u8>,
    /// Absolute byte range of the string section within `data`.
    strings: Range<usize>,
    /// Type records indexed by type id; entry 0 is `void`.
    types: Vec<Type>,
    /// Struct/union name -> type id, built once so lookups do not rescan the
    /// ~100k types of vmlinux.
    composites: HashMap<Box<[u8]>, u32>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The blob is megabytes; show its shape instead.
        f.debug_struct("Btf")
            .field("bytes", &self.data.len())
            .field("types", &self.types.len().saturating_sub(1))
            .field("named_composites", &self.composites.len())
            .finish()
    }
}

impl Btf {
    /// Reads and parses a BTF file such as `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(data)
    }

    /// Parses a BTF blob. Only little-endian BTF is supported, which is what
    /// every little-endian kernel (x86_64, arm64) exposes.
    pub fn from_bytes(data: Vec<u8>) -> Result<Self, BtfError> {
        let hdr = data.first_chunk::<HEADER_LEN>().ok_or_else(|| {
            malformed(format!(
                "{} bytes is too short for the {HEADER_LEN}-byte header",
                data.len()
            ))
        })?;
        let magic = u16::from_le_bytes([hdr[0], hdr[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(malformed("big-endian BTF is not supported"));
        }
        if magic != MAGIC {
            return Err(malformed(format!(
                "bad magic {magic:#06x}, expected {MAGIC:#06x}"
            )));
        }
        if hdr[2] != VERSION {
            return Err(malformed(format!(
                "unsupported version {}, expected {VERSION}",
                hdr[2]
            )));
        }
        let field = |at: usize| read_u32(hdr, at).unwrap_or(0) as usize;
        let hdr_len = field(4);
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(malformed(format!(
                "header length {hdr_len} is outside {HEADER_LEN}..={}",
                data.len()
            )));
        }
        // Section offsets count from the end of the header.
        let section = |name: &str, off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .filter(|r| r.end <= data.len())
                .ok_or_else(|| {
                    malformed(format!(
                        "{name} section (offset {off}, length {len}) runs past the end of the {}-byte blob",
                        data.len()
                    ))
                })
        };
        let type_sec = section("type", field(8), field(12))?;
        let strings = section("string", field(16), field(20))?;

        let mut btf = Btf {
            strings,
            types: vec![Type::VOID],
            composites: HashMap::new(),
            data: Vec::new(),
        };
        let mut pos = type_sec.start;
        while pos < type_sec.end {
            let id = btf.types.len();
            let rec = data
                .get(pos..type_sec.end)
                .and_then(|s| s.first_chunk::<TYPE_LEN>())
                .ok_or_else(|| malformed(format!("type {id}: record truncated")))?;
            let word = |at: usize| read_u32(rec, at).unwrap_or(0);
            let ty = Type {
                name_off: word(0),
                info: word(4),
                size_or_type: word(8),
                extra: pos + TYPE_LEN,
            };
            let extra_len = trailing_len(ty.kind(), ty.vlen())
                .ok_or_else(|| malformed(format!("type {id}: unknown kind {}", ty.kind())))?;
            let end = ty
                .extra
                .checked_add(extra_len)
                .filter(|&end| end <= type_sec.end)
                .ok_or_else(|| {
                    malformed(format!(
                        "type {id}: data runs past the end of the type section"
                    ))
                })?;
            if ty.is_composite() && ty.name_off != 0 {
                let id = u32::try_from(id).map_err(|_| malformed("more than 2^32 types"))?;
                let name = btf_str(&data, &btf.strings, ty.name_off)?;
                match btf.composites.get_mut(name) {
                    None => {
                        btf.composites.insert(name.into(), id);
                    }
                    // A struct with no members may be a placeholder for a
                    // configured-out type; prefer a later one with members.
                    Some(first) => {
                        let first_vlen = btf.types.get(*first as usize).map_or(0, Type::vlen);
                        if first_vlen == 0 && ty.vlen() > 0 {
                            *first = id;
                        }
                    }
                }
            }
            btf.types.push(ty);
            pos = end;
        }
        btf.data = data;
        Ok(btf)
    }

    /// Resolves a dot-separated member path inside a named struct or union,
    /// e.g. `member("net", "ns.inum")`.
    ///
    /// Each component is searched among the members, descending into
    /// anonymous struct/union members (vmlinux nests many fields that way,
    /// e.g. `sock_common.skc_daddr`). Intermediate components are followed
    /// through typedefs and qualifiers to a struct or union; pointers are not
    /// followed, since the target would live in a different object. Bitfield
    /// widths come from the struct's `kind_flag` encoding, which every kernel
    /// built by a current pahole uses.
    pub fn member(&self, struct_name: &str, path: &str) -> Result<Member, BtfError> {
        let parts: Vec<&str> = path.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(BtfError::InvalidPath(path.to_owned()));
        }
        let mut current = self.ty(self.composite_id(struct_name)?)?;
        let mut found: Option<Member> = None;
        for (i, part) in parts.iter().enumerate() {
            if let Some(prev) = found {
                let (_, next) = self.skip_modifiers(prev.type_id)?;
                if !next.is_composite() {
                    return Err(BtfError::NotComposite {
                        ty: struct_name.to_owned(),
                        path: parts[..i].join("."),
                        member: (*part).to_owned(),
                    });
                }
                current = next;
            }
            let m = self
                .find_member(current, part.as_bytes(), 0)?
                .ok_or_else(|| BtfError::NoMember {
                    ty: match i {
                        0 => struct_name.to_owned(),
                        _ => format!("{struct_name}.{}", parts[..i].join(".")),
                    },
                    member: (*part).to_owned(),
                })?;
            let base = found.map_or(0, |f| f.bit_offset);
            found = Some(Member {
                bit_offset: base.checked_add(m.bit_offset).ok_or_else(|| {
                    malformed(format!("{struct_name}.{path}: bit offset overflows"))
                })?,
                ..m
            });
        }
        found.ok_or_else(|| BtfError::InvalidPath(path.to_owned()))
    }

    /// Byte offset of a member, for fields read whole. Bitfields and
    /// misaligned members are errors because a byte offset would silently
    /// read the wrong bits.
    pub fn offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let m = self.member(struct_name, path)?;
        if m.bitfield_size != 0 {
            return Err(BtfError::Bitfield {
                ty: struct_name.to_owned(),
                path: path.to_owned(),
                bits: m.bitfield_size,
            });
        }
        if m.bit_offset % 8 != 0 {
            return Err(BtfError::NotByteAligned {
                ty: struct_name.to_owned(),
                path: path.to_owned(),
                bit_offset: m.bit_offset,
            });
        }
        Ok(m.bit_offset / 8)
    }

    /// Size in bytes of a named struct (or union).
    /// Whether a typedef called `name` exists, e.g. `btf_trace_sk_data_ready`
    /// for a tracepoint of this kernel (one linear scan).
    pub fn has_type(&self, name: &str) -> bool {
        self.types.iter().any(|t| {
            t.kind() == kind::TYPEDEF
                && btf_str(&self.data, &self.strings, t.name_off)
                    .is_ok_and(|n| n == name.as_bytes())
        })
    }

    pub fn struct_size(&self, struct_name: &str) -> Result<u32, BtfError> {
        Ok(self.ty(self.composite_id(struct_name)?)?.size_or_type)
    }

    fn composite_id(&self, name: &str) -> Result<u32, BtfError> {
        self.composites
            .get(name.as_bytes())
            .copied()
            .ok_or_else(|| BtfError::NoType(name.to_owned()))
    }

    fn ty(&self, id: u32) -> Result<Type, BtfError> {
        self.types.get(id as usize).copied().ok_or_else(|| {
            malformed(format!(
                "reference to type {id}, but the last type is {}",
                self.types.len().saturating_sub(1)
            ))
        })
    }

    fn name(&self, off: u32) -> Result<&[u8], BtfError> {
        btf_str(&self.data, &self.strings, off)
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn skip_modifiers(&self, mut id: u32) -> Result<(u32, Type), BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind() {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Ok((id, t)),
            }
        }
        Err(malformed(format!(
            "type {id}: typedef/qualifier chain longer than {MAX_DEPTH} (a cycle?)"
        )))
    }

    /// Finds `name` among the members of `t`, searching anonymous
    /// struct/union members recursively, as C name lookup does. The returned
    /// bit offset is relative to the start of `t`.
    fn find_member(&self, t: Type, name: &[u8], depth: usize) -> Result<Option<Member>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!(
                "anonymous members nested deeper than {MAX_DEPTH} (a cycle?)"
            )));
        }
        for i in 0..t.vlen() {
            let at = t.extra + i * MEMBER_LEN;
            let word = |k: usize| {
                read_u32(&self.data, at + 4 * k)
                    .ok_or_else(|| malformed("member record outside the blob"))
            };
            let (name_off, type_id, raw_offset) = (word(0)?, word(1)?, word(2)?);
            let (bit_offset, bitfield_size) = if t.kind_flag() {
                (raw_offset & 0x00ff_ffff, raw_offset >> 24)
            } else {
                (raw_offset, 0)
            };
            let member_name = self.name(name_off)?;
            if member_name.is_empty() {
                // Anonymous: an embedded struct/union whose members belong to
                // `t`, or unnamed bitfield padding, which is skipped.
                let (_, inner) = self.skip_modifiers(type_id)?;
                if inner.is_composite()
                    && let Some(m) = self.find_member(inner, name, depth + 1)?
                {
                    return Ok(Some(Member {
                        bit_offset: bit_offset
                            .checked_add(m.bit_offset)
                            .ok_or_else(|| malformed("member bit offset overflows"))?,
                        ..m
                    }));
                }
            } else if member_name == name {
                return Ok(Some(Member {
                    bit_offset,
                    bitfield_size,
                    type_id,
                }));
            }
        }
        Ok(None)
    }
}

/// The NUL-terminated string at `off` in the string section.
fn btf_str<'a>(data: &'a [u8], strings: &Range<usize>, off: u32) -> Result<&'a [u8], BtfError> {
    let section = data
        .get(strings.clone())
        .ok_or_else(|| malformed("string section outside the blob"))?;
    let tail = section.get(off as usize..).ok_or_else(|| {
        malformed(format!(
            "name offset {off} is outside the {}-byte string section",
            section.len()
        ))
    })?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| malformed(format!("string at offset {off} is not NUL-terminated")))?;
    Ok(&tail[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
