//! Kernel addresses to `function+0xoffset`, from /proc/kallsyms, the way
//! dropwatch names the places that drop packets without a reason.

use anyhow::{Context, Result, bail};

pub(crate) struct Symbols {
    /// (address, name start, name length) sorted by address; the names
    /// live in one string (122 000 functions: 5 MiB as one String each,
    /// under 5 MiB in all like this).
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

impl Symbols {
    /// Reads /proc/kallsyms line by line (it is 5 MiB of text).
    pub(crate) fn load() -> Result<Self> {
        use std::io::BufRead;
        let f = std::fs::File::open("/proc/kallsyms").context("reading /proc/kallsyms")?;
        let mut r = std::io::BufReader::with_capacity(1 << 16, f);
        let mut b = Builder::default();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).context("reading /proc/kallsyms")? == 0 {
                break;
            }
            b.line(&line);
        }
        b.finish()
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut b = Builder::default();
        for line in text.lines() {
            b.line(line);
        }
        b.finish()
    }

    /// Starts [`Symbols::load`] on a thread of its own: reading and sorting
    /// takes tens of milliseconds the sampling loop must not stall for.
    pub(crate) fn load_in_background() -> Pending {
        Pending::Loading(std::thread::spawn(|| Symbols::load().ok()))
    }

    /// `name+0xoff` of the function containing `addr`.
    pub(crate) fn resolve(&self, addr: u64) -> Option<String> {
        let i = match self.syms.binary_search_by_key(&addr, |(a, _, _)| *a) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let (base, at, len) = self.syms[i];
        let name = &self.names[at as usize..(at + len) as usize];
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

/// A symbol table being loaded, or loaded (None inside: unreadable).
pub(crate) enum Pending {
    Loading(std::thread::JoinHandle<Option<Symbols>>),
    Ready(Option<Symbols>),
}

impl Pending {
    /// The table, waiting for the load if it is still running.
    pub(crate) fn get(&mut self) -> Option<&Symbols> {
        if let Pending::Loading(_) = self
            && let Pending::Loading(h) = std::mem::replace(self, Pending::Ready(None))
        {
            *self = Pending::Ready(h.join().ok().flatten());
        }
        match self {
            Pending::Ready(s) => s.as_ref(),
            Pending::Loading(_) => None,
        }
    }
}

#[derive(Default)]
struct Builder {
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

impl Builder {
    fn line(&mut self, line: &str) {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            return;
        };
        if !matches!(kind, "T" | "t" | "W" | "w") {
            return;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if addr == 0 {
            return;
        }
        let at = self.names.len() as u32;
        self.names.push_str(name);
        if let Some(m) = it.next().filter(|m| m.starts_with('[')) {
            self.names.push(' ');
            self.names.push_str(m);
        }
        self.syms.push((addr, at, self.names.len() as u32 - at));
    }

    fn finish(mut self) -> Result<Symbols> {
        if self.syms.is_empty() {
            bail!("/proc/kallsyms shows no addresses (kernel.kptr_restrict; run as root)");
        }
        self.syms.sort_by_key(|(a, _, _)| *a);
        self.syms.shrink_to_fit();
        self.names.shrink_to_fit();
        Ok(Symbols {
            syms: self.syms,
            names: self.names,
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
