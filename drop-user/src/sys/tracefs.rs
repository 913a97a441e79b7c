//! tracefs: where the classic skb:kfree_skb tracepoint describes its record
//! layout. Only needed when tp_btf is unavailable.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds a mounted tracefs, mounting it at /sys/kernel/tracing if none is.
/// `DROPSCOPE_TRACEFS` names the directory instead (no mounting): tests use
/// it to stand in for kernels without tracefs or without the reason field.
pub(crate) fn find_or_mount() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DROPSCOPE_TRACEFS") {
        let dir = PathBuf::from(dir);
        if dir.join("events").is_dir() {
            return Ok(dir);
        }
        bail!("no tracefs at {} (DROPSCOPE_TRACEFS)", dir.display());
    }
    system()
}

/// The kernel's own tracefs, mounted if it is not: attaching a tracepoint
/// reads its id there, whatever `DROPSCOPE_TRACEFS` says of its format.
pub(crate) fn system() -> Result<PathBuf> {
    for c in CANDIDATES {
        if Path::new(c).join("events").is_dir() {
            return Ok(PathBuf::from(c));
        }
    }
    let target = CANDIDATES[0];
    let ok = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs", target])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok && Path::new(target).join("events").is_dir() {
        return Ok(PathBuf::from(target));
    }
    bail!(
        "tracefs is not mounted and could not be mounted: run `mount -t tracefs tracefs {target}`"
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Format {
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl Format {
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// `{ value, "NAME" }` pairs of the first `__print_symbolic` over `field`.
    pub(crate) fn symbols(&self, field: &str) -> Vec<(String, u32)> {
        let needle = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&needle) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut rest = &self.print_fmt[start + needle.len()..];
        while let Some(open) = rest.find('{') {
            // Stop at the end of this __print_symbolic call.
            if rest[..open].contains(')') {
                break;
            }
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let item = &rest[open + 1..open + close];
            if let Some((num, name)) = item.split_once(',') {
                let num = num.trim();
                let parsed = match num.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => num.parse().ok(),
                };
                let name = name.trim().trim_matches('"');
                if let Some(v) = parsed
                    && !name.is_empty()
                {
                    out.push((name.to_string(), v));
                }
            }
            rest = &rest[open + close + 1..];
        }
        out
    }
}

/// Parses a tracefs `format` file.
pub(crate) fn parse_format(text: &str) -> Result<Format> {
    let mut f = Format::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(p) = line.strip_prefix("print fmt:") {
            f.print_fmt = p.trim().to_string();
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let (mut offset, mut size, mut signed) = (None, None, false);
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse().ok();
            } else if let Some(v) = part.strip_prefix("signed:") {
                signed = v.trim() == "1";
            } else if decl.is_none() && !part.is_empty() {
                decl = Some(part.to_string());
            }
        }
        let decl = decl.ok_or_else(|| anyhow!("field without declaration: {line}"))?;
        // "unsigned char data[16]" -> "data"; "void * skbaddr" -> "skbaddr".
        let name = decl
            .split(|c: char| c.is_whitespace() || c == '*')
            .rfind(|s| !s.is_empty())
            .unwrap_or("")
            .split('[')
            .next()
            .unwrap_or("")
            .to_string();
        match (offset, size) {
            (Some(offset), Some(size)) if !name.is_empty() => f.fields.push(Field {
                name,
                offset,
                size,
                signed,
            }),
            _ => bail!("malformed field line: {line}"),
        }
    }
    if f.fields.is_empty() {
        bail!("no fields in tracepoint format");
    }
    Ok(f)
}

pub(crate) fn read_format(tracefs: &Path, category: &str, event: &str) -> Result<Format> {
    let p = tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    parse_format(&text).with_context(|| format!("parsing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // As printed by a 6.18 kernel (reason list shortened).
    const KFREE_618: &str = r#"name: kfree_skb
ID: 1544
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:void * rx_sk;	offset:24;	size:8;	signed:0;
	field:unsigned short protocol;	offset:32;	size:2;	signed:0;
	field:enum skb_drop_reason reason;	offset:36;	size:4;	signed:0;

print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 0, "NOT_DROPPED_YET" }, { 1, "CONSUMED" }, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 0x4, "SOCKET_CLOSE" })
"#;

    // A 5.4-era kernel: no reason field at all.
    const KFREE_54: &str = r#"name: kfree_skb
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:void * skbaddr;	offset:8;	size:8;	signed:0;
	field:void * location;	offset:16;	size:8;	signed:0;
	field:unsigned short protocol;	offset:24;	size:2;	signed:0;

print fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location
"#;

    #[test]
    fn reads_offsets_not_assumed() {
        let f = parse_format(KFREE_618).unwrap();
        assert_eq!(f.field("skbaddr").unwrap().offset, 8);
        assert_eq!(f.field("rx_sk").unwrap().offset, 24);
        let r = f.field("reason").unwrap();
        assert_eq!((r.offset, r.size), (36, 4));
        let old = parse_format(KFREE_54).unwrap();
        assert!(old.field("reason").is_none());
        assert_eq!(old.field("protocol").unwrap().offset, 24);
    }

    #[test]
    fn reads_reason_symbols() {
        let f = parse_format(KFREE_618).unwrap();
        let s = f.symbols("reason");
        assert_eq!(s.len(), 5);
        assert_eq!(s[3], ("NO_SOCKET".to_string(), 3));
        assert_eq!(s[4], ("SOCKET_CLOSE".to_string(), 4));
        assert!(parse_format(KFREE_54).unwrap().symbols("reason").is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_format("").is_err());
        assert!(parse_format("field:int x;\toffset:zz;\tsize:4;").is_err());
        assert!(parse_format("field:;").is_err());
    }
}
