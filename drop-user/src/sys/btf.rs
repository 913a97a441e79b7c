//! What the running kernel's BTF tells us: the names of drop reasons and the
//! offsets of the struct fields the kfree_skb program reads.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};

pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Subsystem id sits in the high 16 bits of a reason (SKB_DROP_REASON_SUBSYS_SHIFT).
pub(crate) const SUBSYS_SHIFT: u32 = 16;

pub(crate) struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// The running kernel's BTF. `DROPSCOPE_VMLINUX_BTF` names another file,
    /// so that a kernel without BTF can be simulated in tests.
    pub(crate) fn load() -> Result<Self> {
        match std::env::var_os("DROPSCOPE_VMLINUX_BTF") {
            Some(p) => Self::from_file(Path::new(&p)),
            None => Self::from_file(Path::new(VMLINUX_BTF)),
        }
    }

    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!(
                "kernel has no BTF ({} missing; needs CONFIG_DEBUG_INFO_BTF=y)",
                path.display()
            );
        }
        // Mmap: vmlinux BTF is read on demand, not parsed whole into memory.
        // Only recent kernels let sysfs BTF be mmapped (ENODEV before 6.x):
        // there, a private in-memory copy is mapped instead (a few MiB, freed
        // with this value), so memory stays what it is on new kernels.
        let btf = match Btf::from_file_with_backend(path, btf_rs::Backend::Mmap) {
            Ok(b) => b,
            Err(_) => Self::mapped_copy(path)?,
        };
        Ok(Self { btf })
    }

    /// Always through a memory copy (what kernels that refuse to mmap
    /// sysfs BTF get), so the tests can compare it with the mapping.
    pub(crate) fn from_copy(path: &Path) -> Result<Self> {
        Ok(Self {
            btf: Self::mapped_copy(path)?,
        })
    }

    /// Copies `path` into an anonymous memory file and maps that. Streamed,
    /// never held on the heap: a freed multi-MiB buffer would raise glibc's
    /// mmap threshold and leave later large allocations (aya parses BTF
    /// too) on a heap that does not shrink back.
    fn mapped_copy(path: &Path) -> Result<Btf> {
        use std::os::fd::FromRawFd;
        let mut src =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"dropscope-btf".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            return Btf::from_bytes(&data).with_context(|| format!("parsing {}", path.display()));
        }
        // SAFETY: fd was just created and nothing else owns it.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        std::io::copy(&mut src, &mut file)
            .with_context(|| format!("copying {}", path.display()))?;
        let copy = format!("/proc/self/fd/{fd}");
        let btf = Btf::from_file_with_backend(&copy, btf_rs::Backend::Mmap)
            .with_context(|| format!("reading {}", path.display()))?;
        // The mapping keeps the memory file alive once the fd is closed.
        drop(file);
        Ok(btf)
    }

    /// Members of an enum as (name, value), or None if the kernel has no such enum.
    pub(crate) fn enum_members(&self, enum_name: &str) -> Result<Option<Vec<(String, u32)>>> {
        let types = match self.btf.resolve_types_by_name(enum_name) {
            Ok(t) => t,
            Err(_) => return Ok(None),
        };
        for t in types {
            if let Type::Enum(e) = t {
                let mut out = Vec::with_capacity(e.members.len());
                for m in &e.members {
                    out.push((self.btf.resolve_name(m)?, m.val()));
                }
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// Byte offset of `path` (e.g. `["nd_net", "net"]`) inside `struct name`,
    /// looking through anonymous structs and unions as C does.
    pub(crate) fn member_offset(&self, struct_name: &str, path: &[&str]) -> Result<u32> {
        let mut ty = self.struct_by_name(struct_name)?;
        let mut bits = 0u32;
        for (i, field) in path.iter().enumerate() {
            let (off, member_ty) = self.find_member(&ty, field)?.ok_or_else(|| {
                anyhow!(
                    "struct {struct_name} has no member {}",
                    path[..=i].join(".")
                )
            })?;
            bits += off;
            ty = self.strip(member_ty)?;
        }
        if !bits.is_multiple_of(8) {
            bail!("{struct_name}.{} is a bitfield", path.join("."));
        }
        Ok(bits / 8)
    }

    /// Size in bytes of an integer member (`path` as in [`Self::member_offset`]),
    /// or 8 for a pointer; an error for anything else.
    pub(crate) fn member_size(&self, struct_name: &str, path: &[&str]) -> Result<usize> {
        let mut ty = self.struct_by_name(struct_name)?;
        for field in path {
            let (_, t) = self
                .find_member(&ty, field)?
                .ok_or_else(|| anyhow!("struct {struct_name} has no member {field}"))?;
            ty = self.strip(t)?;
        }
        match ty {
            Type::Int(i) => Ok(i.size()),
            Type::Ptr(_) => Ok(8),
            _ => bail!("{struct_name}.{} is not an integer", path.join(".")),
        }
    }

    fn struct_by_name(&self, name: &str) -> Result<Type> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .with_context(|| format!("kernel BTF has no type {name}"))?;
        types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| anyhow!("kernel BTF has no struct {name}"))
    }

    /// Follows typedefs and qualifiers down to the real type.
    fn strip(&self, mut ty: Type) -> Result<Type> {
        for _ in 0..16 {
            ty = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t)?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)?
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(t)?,
                _ => return Ok(ty),
            };
        }
        Ok(ty)
    }

    /// (bit offset, type) of a named member, searching anonymous members too.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
        let s = match ty {
            Type::Struct(s) | Type::Union(s) => s,
            _ => return Ok(None),
        };
        for m in &s.members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let mty = self.btf.resolve_chained_type(m)?;
            if mname == name {
                return Ok(Some((m.bit_offset(), mty)));
            }
            if mname.is_empty() {
                let inner = self.strip(mty)?;
                if let Some((off, t)) = self.find_member(&inner, name)? {
                    return Ok(Some((m.bit_offset() + off, t)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_btf_file_says_what_to_do() {
        let err = KernelBtf::from_file(Path::new("/nonexistent/vmlinux"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
