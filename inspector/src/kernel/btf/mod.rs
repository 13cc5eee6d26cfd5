//! A small reader for kernel BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs read kernel structures at raw byte offsets, and those
//! offsets change between kernel builds, so they are looked up here at start-up
//! rather than compiled in. Only what that needs is implemented: parsing the
//! type and string sections (layout per `include/uapi/linux/btf.h`) and
//! resolving member paths inside structs and unions. Every read is
//! bounds-checked, so malformed input yields a [`BtfError`], never a panic.
//!
//! One file per job: `format` (the kernel's layout of the blob), `parse`
//! (blob to index), `lookup` (member paths and sizes); the tests, with a
//! builder of small BTF blobs, in `tests`.

mod format;
mod lookup;
mod parse;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, fmt, ops::Range, path::PathBuf};

use format::Type;

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
