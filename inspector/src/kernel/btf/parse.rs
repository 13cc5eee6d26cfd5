//! Reading a BTF blob into a [`Btf`]: the header checked, every type
//! record indexed by id, and struct and union names indexed once, so that
//! the lookups never rescan the ~100k types of vmlinux.
//!
//! Parsing stops at the first thing that does not fit the format, since
//! with an unknown record length every later record is unknowable; the
//! error says where.

use std::{collections::HashMap, path::Path};

use super::{
    Btf, BtfError,
    format::{HEADER_LEN, MAGIC, TYPE_LEN, Type, VERSION, btf_str, read_u32, trailing_len},
    malformed,
};

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
}
