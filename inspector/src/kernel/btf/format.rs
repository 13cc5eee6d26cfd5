//! The BTF format as the kernel lays it out (`include/uapi/linux/btf.h`):
//! the header's constants, the `BTF_KIND_*` values, one type record
//! ([`Type`]) and the length of the data that follows it, and the string
//! section.
//!
//! Kept apart from the parser and the lookups because it is the one part
//! that follows the kernel's header file word for word: a new BTF kind is
//! a change here and nowhere else.

use std::ops::Range;

use super::{BtfError, malformed};

/// `BTF_MAGIC` as it reads in little-endian byte order.
pub(super) const MAGIC: u16 = 0xeb9f;
/// The only header version the kernel emits (`BTF_VERSION`).
pub(super) const VERSION: u8 = 1;
/// Size of `struct btf_header` in version 1; a longer `hdr_len` is allowed.
pub(super) const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`, the fixed part of every type record.
pub(super) const TYPE_LEN: usize = 12;
/// Size of `struct btf_member`.
pub(super) const MEMBER_LEN: usize = 12;

/// `BTF_KIND_*` values; only the ones whose trailing data or meaning this
/// module needs are named, the rest are listed in [`trailing_len`].
pub(super) mod kind {
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

/// Fixed part of one type record plus where its trailing data starts; the
/// trailing data is decoded on demand to keep parsing fast.
#[derive(Debug, Clone, Copy)]
pub(super) struct Type {
    pub(super) name_off: u32,
    pub(super) info: u32,
    pub(super) size_or_type: u32,
    /// Absolute offset in the BTF blob of the kind-specific trailing data.
    pub(super) extra: usize,
}

impl Type {
    /// Type id 0 is the implicit `void`; it has no record in the blob.
    pub(super) const VOID: Type = Type {
        name_off: 0,
        info: 0,
        size_or_type: 0,
        extra: 0,
    };

    pub(super) fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    pub(super) fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    pub(super) fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }

    pub(super) fn is_composite(&self) -> bool {
        matches!(self.kind(), kind::STRUCT | kind::UNION)
    }
}

/// Bytes of kind-specific data following a type record, or `None` for a kind
/// this reader does not know (its length, and so every later record, would be
/// unknowable).
pub(super) fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
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

pub(super) fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..)?
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b))
}

/// The NUL-terminated string at `off` in the string section.
pub(super) fn btf_str<'a>(
    data: &'a [u8],
    strings: &Range<usize>,
    off: u32,
) -> Result<&'a [u8], BtfError> {
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
