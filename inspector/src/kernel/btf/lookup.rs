//! Finding layout facts in a parsed [`Btf`]: a member by its dotted path
//! ([`Btf::member`]), its byte offset ([`Btf::offset`]), a struct's size,
//! whether a typedef exists.
//!
//! This is what the rest of the program asks of BTF. The lookups follow C's
//! name rules (members of anonymous structs and unions belong to the outer
//! one; typedefs and qualifiers are seen through) and stop on cycles, so a
//! malformed blob gives an error, never a hang.

use super::{
    Btf, BtfError, Member,
    format::{MEMBER_LEN, Type, btf_str, kind, read_u32},
    malformed,
};

/// Bound on typedef chains and anonymous-member nesting, so that cyclic
/// (malformed) input ends in an error rather than a hang or stack overflow.
const MAX_DEPTH: usize = 64;

impl Btf {
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

    /// Whether a typedef called `name` exists, e.g. `btf_trace_sk_data_ready`
    /// for a tracepoint of this kernel (one linear scan).
    pub fn has_type(&self, name: &str) -> bool {
        self.types.iter().any(|t| {
            t.kind() == kind::TYPEDEF
                && btf_str(&self.data, &self.strings, t.name_off)
                    .is_ok_and(|n| n == name.as_bytes())
        })
    }

    /// Size in bytes of a named struct (or union).
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
