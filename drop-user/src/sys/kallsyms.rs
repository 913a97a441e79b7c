//! Kernel addresses to `function+0xoffset`, from /proc/kallsyms, the way
//! dropwatch names the places that drop packets without a reason.

use anyhow::{Context, Result, bail};

pub(crate) struct Symbols {
    /// Sorted by address.
    syms: Vec<(u64, String)>,
}

impl Symbols {
    pub(crate) fn load() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        Self::parse(&text)
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut syms = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "T" | "t" | "W" | "w") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let name = match it.next() {
                Some(m) if m.starts_with('[') => format!("{name} {m}"),
                _ => name.to_string(),
            };
            syms.push((addr, name));
        }
        if syms.is_empty() {
            bail!("/proc/kallsyms shows no addresses (kernel.kptr_restrict; run as root)");
        }
        syms.sort_by_key(|(a, _)| *a);
        Ok(Self { syms })
    }

    /// `name+0xoff` of the function containing `addr`.
    pub(crate) fn resolve(&self, addr: u64) -> Option<String> {
        let i = match self.syms.binary_search_by_key(&addr, |(a, _)| *a) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let (base, name) = &self.syms[i];
        let off = addr - base;
        // Past 1 MiB from the nearest symbol is not a function we know.
        if off > 1 << 20 {
            return None;
        }
        Some(match name.split_once(' ') {
            Some((f, m)) => format!("{f}+{off:#x} {m}"),
            None => format!("{name}+{off:#x}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ffffffff81000000 T _stext
ffffffff81a00000 T tcp_v4_rcv
ffffffff81a00800 t tcp_v4_fill_cb
ffffffff81b00000 D some_data
ffffffffc0001000 t veth_xmit\t[veth]
";

    #[test]
    fn resolves_function_and_offset() {
        let s = Symbols::parse(TEXT).unwrap();
        assert_eq!(s.resolve(0xffffffff81a001a4).unwrap(), "tcp_v4_rcv+0x1a4");
        assert_eq!(s.resolve(0xffffffff81a00800).unwrap(), "tcp_v4_fill_cb+0x0");
        assert_eq!(
            s.resolve(0xffffffffc0001010).unwrap(),
            "veth_xmit+0x10 [veth]"
        );
        assert_eq!(s.resolve(0x1000), None);
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        assert!(Symbols::parse("0000000000000000 T tcp_v4_rcv\n").is_err());
    }

    /// A real kallsyms excerpt (captured from a 6.18 host).
    #[test]
    fn captured_kallsyms_resolves_its_functions() {
        let text = include_str!("../../../tests/fixtures/text/kallsyms");
        let s = Symbols::parse(text).unwrap();
        let line = text.lines().nth(100).unwrap();
        let addr = u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap();
        // Aliases may share the address: the offset is what must match.
        assert!(s.resolve(addr + 4).unwrap().ends_with("+0x4"));
    }
}
