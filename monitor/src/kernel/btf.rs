//! Member offsets of kernel structs, from the kernel's BTF
//! (/sys/kernel/btf/vmlinux). Rust eBPF has no CO-RE relocations: the
//! daemon reads the few offsets it needs here and hands them to the
//! programs as load-time constants, as it does with tracepoint formats.
use std::{collections::HashMap, fs, io, path::Path};

use thiserror::Error;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_PTR: u32 = 2;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// For typedef/const/...: the type referred to; for an array, its
    /// element type; for a struct or union, its size.
    reference: u32,
    /// For struct/union: (name_off, type, offset field) of each member.
    members: Vec<(u32, u32, u32)>,
    /// Members, parameters or values (the info word's vlen).
    vlen: u32,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let u32_at = |at: usize| -> Result<u32, BtfError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfError::Malformed("truncated"))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(header_len + str_off..header_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        // Type ids start at 1: a placeholder for "void".
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            reference: 0,
            members: Vec::new(),
            vlen: 0,
        }];
        let mut at = header_len + type_off;
        let end = at + type_len;
        while at < end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let mut members = Vec::new();
            // For an array, `reference` is its element type (struct btf_array).
            let mut reference = size_or_type;
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                KIND_ARRAY => {
                    reference = u32_at(at)?;
                    12
                }
                KIND_STRUCT | KIND_UNION => {
                    for m in 0..vlen {
                        let base = at + m * 12;
                        members.push((u32_at(base)?, u32_at(base + 4)?, u32_at(base + 8)?));
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // enum, func_proto
                15 | 19 => vlen * 12, // datasec, enum64
                _ => 0,               // ptr, fwd, typedef, modifiers, func, float, type_tag
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                kind_flag: info >> 31 == 1,
                reference,
                members,
                vlen: vlen as u32,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        &tail[..tail.iter().position(|&b| b == 0).unwrap_or(tail.len())]
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.reference
                }
                _ => break,
            }
        }
        id
    }

    fn struct_id(&self, strukt: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == strukt.as_bytes())
            .map(|id| id as u32)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))
    }

    /// The name of the struct that member `path` of `strukt` is, or is an
    /// array of (typedefs and qualifiers followed); None for other types.
    pub fn member_struct_name(
        &self,
        strukt: &str,
        path: &[&str],
    ) -> Result<Option<String>, BtfError> {
        let (_, mut id) = self.member(strukt, path)?;
        if self
            .types
            .get(id as usize)
            .is_some_and(|t| t.kind == KIND_ARRAY)
        {
            id = self.resolve(self.types[id as usize].reference);
        }
        Ok(self
            .types
            .get(id as usize)
            .filter(|t| t.kind == KIND_STRUCT)
            .map(|t| String::from_utf8_lossy(self.name(t.name_off)).into_owned()))
    }

    /// How many arguments the kernel passes to raw tracepoint `name`, from
    /// its `btf_trace_<name>` typedef (a pointer to a function whose first
    /// parameter is the tracepoint's private data, not an argument).
    pub fn tracepoint_args(&self, name: &str) -> Result<u32, BtfError> {
        let typedef = format!("btf_trace_{name}");
        let missing = || BtfError::NoStruct(typedef.clone());
        let t = self
            .types
            .iter()
            .find(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == typedef.as_bytes())
            .ok_or_else(missing)?;
        let pointer = self
            .types
            .get(t.reference as usize)
            .filter(|p| p.kind == KIND_PTR)
            .ok_or_else(missing)?;
        let proto = self
            .types
            .get(pointer.reference as usize)
            .filter(|p| p.kind == KIND_FUNC_PROTO)
            .ok_or_else(missing)?;
        Ok(proto.vlen.saturating_sub(1))
    }

    /// Byte size of struct `strukt`.
    pub fn struct_size(&self, strukt: &str) -> Result<u32, BtfError> {
        Ok(self.types[self.struct_id(strukt)? as usize].reference)
    }

    /// Byte offset of a member path, e.g. `task_struct`, `["se", "sum_exec_runtime"]`.
    /// Members of anonymous structs and unions are found as the C
    /// compiler finds them, as if they were members of the outer struct.
    pub fn member_offset(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        Ok(self.member(strukt, path)?.0 / 8)
    }

    /// (bit offset, resolved type) of a member path of `strukt`.
    fn member(&self, strukt: &str, path: &[&str]) -> Result<(u32, u32), BtfError> {
        let mut id = self.struct_id(strukt)?;
        let mut bits = 0u32;
        for member in path {
            let (offset, member_type) = self
                .find_member(id, member.as_bytes(), 0, &mut HashMap::new())?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.to_string(),
                    member: member.to_string(),
                })?;
            bits = bits.checked_add(offset).ok_or(OFFSET_OVERFLOW)?;
            id = self.resolve(member_type);
        }
        Ok((bits, id))
    }

    /// (bit offset, type) of member `name` of struct or union `id`,
    /// looking into anonymous members (to a depth of 8). `searched` holds
    /// the structs entered so far, each at the least depth: entering one
    /// again from as deep or deeper finds nothing new (had it held `name`,
    /// the search would have ended there), so anonymous members that nest
    /// the same structs over and over (only a corrupt blob has them) cannot
    /// make the search exponential.
    fn find_member(
        &self,
        id: u32,
        name: &[u8],
        depth: u32,
        searched: &mut HashMap<u32, u32>,
    ) -> Result<Option<(u32, u32)>, BtfError> {
        let Some(t) = self.types.get(id as usize) else {
            return Ok(None);
        };
        if searched.get(&id).is_some_and(|&at| at <= depth) {
            return Ok(None);
        }
        searched.insert(id, depth);
        for &(name_off, member_type, offset) in &t.members {
            // With kind_flag the low 24 bits are the bit offset.
            let offset = if t.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            if self.name(name_off) == name {
                return Ok(Some((offset, member_type)));
            }
            if name_off == 0 && depth < 8 {
                let inner = self.resolve(member_type);
                if matches!(self.types.get(inner as usize), Some(i) if matches!(i.kind, KIND_STRUCT | KIND_UNION))
                    && let Some((inner_offset, found)) =
                        self.find_member(inner, name, depth + 1, searched)?
                {
                    let offset = offset.checked_add(inner_offset).ok_or(OFFSET_OVERFLOW)?;
                    return Ok(Some((offset, found)));
                }
            }
        }
        Ok(None)
    }
}

/// Member bit offsets that add up past u32::MAX (512 MiB): only a corrupt
/// blob has them, and wrapping around would hand the programs a wrong offset.
const OFFSET_OVERFLOW: BtfError = BtfError::Malformed("member offsets overflow");

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of these type words and string table.
    fn btf_of(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let types: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut data = Vec::new();
        data.extend(MAGIC.to_le_bytes());
        data.extend([1u8, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend(word.to_le_bytes());
        }
        data.extend(types);
        data.extend(strings);
        data
    }

    /// The offset of `name` in `strings`.
    fn at(strings: &[u8], name: &str) -> u32 {
        let needle = [b"\0".as_slice(), name.as_bytes(), b"\0"].concat();
        strings
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap() as u32
            + 1
    }

    /// A tiny BTF blob: int (id 1); struct inner { u64 a; u64 b; } (id 2);
    /// typedef inner_t (id 3); struct outer { int x; inner_t in; } (id 4).
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0inner_t\0outer\0x\0in\0";
        let s = |name| at(strings, name);
        let mut types = Vec::new();
        types.extend([s("int"), 1 << 24, 4, 64]);
        types.extend([
            s("inner"),
            (KIND_STRUCT << 24) | 2,
            16,
            s("a"),
            1,
            0,
            s("b"),
            1,
            64,
        ]);
        types.extend([s("inner_t"), KIND_TYPEDEF << 24, 2]);
        types.extend([
            s("outer"),
            (KIND_STRUCT << 24) | 2,
            24,
            s("x"),
            1,
            0,
            s("in"),
            3,
            64,
        ]);
        btf_of(&types, strings)
    }

    #[test]
    fn finds_nested_member_offsets_through_typedefs() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("outer", &["in", "b"]).unwrap(), 16);
        assert_eq!(btf.member_offset("inner", &["a"]).unwrap(), 0);
        assert!(matches!(
            btf.member_offset("outer", &["nope"]),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("missing", &["a"]),
            Err(BtfError::NoStruct(_))
        ));
    }

    /// Found by the btf fuzz target: member offsets that add up past
    /// u32::MAX panicked (overflow checks) or wrapped (release builds).
    #[test]
    fn offsets_that_overflow_are_an_error() {
        let strings = b"\0int\0inner\0a\0outer\0in\0anon\0";
        let s = |name| at(strings, name);
        let types = [
            [s("int"), 1 << 24, 4, 32].as_slice(),
            &[
                s("inner"),
                (KIND_STRUCT << 24) | 1,
                4,
                s("a"),
                1,
                0xffff_fff0,
            ],
            &[s("outer"), (KIND_STRUCT << 24) | 1, 4, s("in"), 2, 0x100],
            &[s("anon"), (KIND_STRUCT << 24) | 1, 4, 0, 2, 0x100],
        ]
        .concat();
        let btf = Btf::parse(&btf_of(&types, strings)).unwrap();
        assert_eq!(btf.member_offset("inner", &["a"]).unwrap(), 0x1fff_fffe);
        for (strukt, path) in [("outer", &["in", "a"][..]), ("anon", &["a"])] {
            assert!(matches!(
                btf.member_offset(strukt, path),
                Err(BtfError::Malformed(_))
            ));
        }
    }

    /// Nine structs, each but the last with 100 anonymous members of the
    /// next: searched member by member that was 100^8 paths (found reading
    /// the code the btf fuzz target reaches); each struct is searched once.
    #[test]
    fn anonymous_members_nested_over_and_over_are_searched_once() {
        let strings = b"\0int\0s\0a\0";
        let s = |name| at(strings, name);
        let mut types = vec![s("int"), 1 << 24, 4, 32];
        for id in 2..10 {
            let name = if id == 2 { s("s") } else { 0 };
            types.extend([name, (KIND_STRUCT << 24) | 100, 800]);
            for m in 0..100 {
                types.extend([0, id + 1, m * 64]);
            }
        }
        types.extend([0, (KIND_STRUCT << 24) | 1, 4, s("a"), 1, 32]);
        let btf = Btf::parse(&btf_of(&types, strings)).unwrap();
        assert!(matches!(
            btf.member_offset("s", &["missing"]),
            Err(BtfError::NoMember { .. })
        ));
        assert_eq!(btf.member_offset("s", &["a"]).unwrap(), 4);
    }

    #[test]
    fn refuses_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
    }

    #[test]
    fn reads_this_kernel_when_it_has_btf() {
        // Unprivileged and read-only: checks the parser on a real kernel's BTF.
        let Ok(btf) = Btf::from_file(Path::new(VMLINUX)) else {
            eprintln!("skipped: this kernel has no {VMLINUX}");
            return;
        };
        let offset = btf
            .member_offset("task_struct", &["se", "sum_exec_runtime"])
            .unwrap();
        assert!(offset > 0 && offset < 16384, "{offset}");
    }
}
