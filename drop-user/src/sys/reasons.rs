//! Drop reason names (from the running kernel, never a built-in table) and
//! the categories dropscope groups them into.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::sys::btf::{KernelBtf, SUBSYS_SHIFT};

const PREFIX: &str = "SKB_DROP_REASON_";

/// The value the kfree_skb program counts reasonless drops under when the
/// kernel has no `enum skb_drop_reason` at all.
const LOCATION_ONLY_REASON: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// NIC ring or per-CPU backlog overflow: the host can't keep up.
    RingBacklog,
    Netfilter,
    /// IP layer: checksums, routing, martians/rp_filter, header errors, fragments.
    Ip,
    /// Socket receive buffer or protocol memory full: the application is slow.
    SocketBuffer,
    /// Nobody listens on the destination port.
    NoSocket,
    Tcp,
    QdiscTx,
    Xdp,
    Other,
    /// dropscope's own `--enforce` blocklist (not a kernel reason).
    Blocklist,
}

impl PartialEq<&str> for Category {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::RingBacklog => "ring-backlog",
            Category::Netfilter => "netfilter",
            Category::Ip => "ip",
            Category::SocketBuffer => "socket-buffer",
            Category::NoSocket => "no-socket",
            Category::Tcp => "tcp",
            Category::QdiscTx => "qdisc-tx",
            Category::Xdp => "xdp",
            Category::Other => "other",
            Category::Blocklist => "blocklist",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Groups a reason by its kernel name (with or without the SKB_DROP_REASON_ prefix).
pub(crate) fn category(name: &str) -> Category {
    let n = name.strip_prefix(PREFIX).unwrap_or(name);
    let has = |s: &str| n.contains(s);
    let starts = |s: &str| n.starts_with(s);
    if matches!(n, "CPU_BACKLOG" | "FULL_RING") || has("BACKLOG") && !has("SOCKET") {
        Category::RingBacklog
    } else if starts("NETFILTER") || starts("NF_") {
        Category::Netfilter
    } else if matches!(
        n,
        "SOCKET_RCVBUFF" | "PROTO_MEM" | "SOCKET_BACKLOG" | "TCP_LISTEN_OVERFLOW"
    ) || has("RCVBUFF")
        || has("RMEM")
    {
        Category::SocketBuffer
    } else if n == "NO_SOCKET" {
        Category::NoSocket
    } else if has("CSUM")
        || starts("IP_")
        || starts("IPV6")
        || starts("FRAG")
        || starts("ICMP")
        || starts("NEIGH")
        || starts("ARP")
        || starts("XFRM")
        || starts("IPSEC")
        || starts("PKT_TOO")
        || matches!(
            n,
            "OTHERHOST" | "INVALID_PROTO" | "UNHANDLED_PROTO" | "HDR_TRUNC" | "DUP_FRAG"
        )
    {
        Category::Ip
    } else if starts("TCP") {
        Category::Tcp
    } else if starts("QDISC")
        || starts("TC_")
        || starts("DEV_")
        || starts("TAP_")
        || starts("FQ_")
        || starts("CAKE")
        || starts("DUALPI2")
        || has("TXQ")
        || n == "NO_TX_TARGET"
    {
        Category::QdiscTx
    } else if starts("XDP") {
        Category::Xdp
    } else {
        Category::Other
    }
}

/// Value -> name for every reason the running kernel defines.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReasonTable {
    names: HashMap<u32, String>,
    subsystems: HashMap<u32, String>,
    pub not_dropped_yet: Option<u32>,
    pub consumed: Option<u32>,
    pub not_specified: Option<u32>,
    /// Observed XDP programs by slot: their drops' reasons name them.
    observed: HashMap<u32, String>,
}

impl ReasonTable {
    /// From `enum skb_drop_reason` (and `enum skb_drop_reason_subsys`) in BTF.
    /// None when the kernel has no drop reasons at all (before 5.17).
    pub(crate) fn from_btf(btf: &KernelBtf) -> anyhow::Result<Option<Self>> {
        let Some(members) = btf.enum_members("skb_drop_reason")? else {
            return Ok(None);
        };
        let mut t = Self::from_pairs(members);
        if let Some(subs) = btf.enum_members("skb_drop_reason_subsys")? {
            for (name, v) in subs {
                let short = name
                    .strip_prefix("SKB_DROP_REASON_SUBSYS_")
                    .unwrap_or(&name)
                    .to_string();
                if short != "NUM" && v != 0 {
                    t.subsystems.insert(v, short);
                }
            }
        }
        Ok(Some(t))
    }

    /// From (name, value) pairs, e.g. the tracepoint's `__print_symbolic` list.
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut t = Self::default();
        for (name, v) in pairs {
            let short = name.strip_prefix(PREFIX).unwrap_or(&name).to_string();
            match short.as_str() {
                "SKB_NOT_DROPPED_YET" | "NOT_DROPPED_YET" => t.not_dropped_yet = Some(v),
                "SKB_CONSUMED" | "CONSUMED" => t.consumed = Some(v),
                "NOT_SPECIFIED" => t.not_specified = Some(v),
                "MAX" | "SKB_DROP_REASON_MAX" => continue,
                s if s.starts_with("SUBSYS_") => continue,
                _ => {}
            }
            let short = short.strip_prefix("SKB_").unwrap_or(&short).to_string();
            t.names.entry(v).or_insert(short);
        }
        t
    }

    /// For kernels whose kfree_skb has no reason (before 5.17): one name,
    /// NOT_SPECIFIED, under a value of dropscope's own choosing (there is
    /// no kernel enum to take it from).
    pub(crate) fn location_only() -> Self {
        Self::from_pairs([("NOT_SPECIFIED".to_string(), LOCATION_ONLY_REASON)])
    }

    /// Whether the kernel names its drops (false for `location_only`).
    pub(crate) fn names_reasons(&self) -> bool {
        self.names.len() > 1
    }

    pub(crate) fn is_drop(&self, v: u32) -> bool {
        Some(v) != self.not_dropped_yet && Some(v) != self.consumed
    }

    /// The kernel's name without the SKB_DROP_REASON_ prefix. Reasons from a
    /// subsystem (high bits set) are named SUBSYS:code, never folded together.
    pub(crate) fn name(&self, v: u32) -> String {
        if let Some(n) = self.names.get(&v) {
            return n.clone();
        }
        if let Some((_, aborted)) = drop_common::xdp_reason_parts(v) {
            return if aborted { "XDP_ABORTED" } else { "XDP_DROP" }.into();
        }
        let subsys = v >> SUBSYS_SHIFT;
        if subsys != 0 {
            let s = self
                .subsystems
                .get(&subsys)
                .cloned()
                .unwrap_or_else(|| format!("SUBSYS_{subsys}"));
            return format!("{s}:{}", v & ((1 << SUBSYS_SHIFT) - 1));
        }
        format!("REASON_{v}")
    }

    /// Names the observed XDP program in `slot` (its drops' rows).
    pub(crate) fn observe(&mut self, slot: u32, program: &str) {
        self.observed.insert(slot, program.to_string());
    }

    /// The observed XDP program that dropped under reason `v`, if any.
    pub(crate) fn program(&self, v: u32) -> Option<String> {
        let (slot, _) = drop_common::xdp_reason_parts(v)?;
        self.observed.get(&slot).cloned()
    }

    pub(crate) fn category(&self, v: u32) -> Category {
        if drop_common::xdp_reason_parts(v).is_some() {
            return Category::Xdp;
        }
        if v >> SUBSYS_SHIFT != 0 && !self.names.contains_key(&v) {
            return Category::Other;
        }
        category(&self.name(v))
    }

    /// The value of a reason by its short name (e.g. "NO_SOCKET").
    pub(crate) fn value_of(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }

    /// Every known reason, sorted by value.
    pub(crate) fn all(&self) -> Vec<(u32, String)> {
        let mut v: Vec<_> = self.names.iter().map(|(k, n)| (*k, n.clone())).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_by_name() {
        use Category::*;
        for (name, want) in [
            ("CPU_BACKLOG", RingBacklog),
            ("FULL_RING", RingBacklog),
            ("SKB_DROP_REASON_NETFILTER_DROP", Netfilter),
            ("IP_CSUM", Ip),
            ("TCP_CSUM", Ip),
            ("IP_INNOROUTES", Ip),
            ("IP_RPFILTER", Ip),
            ("IP_INVALID_SOURCE", Ip),
            ("IP_INHDR", Ip),
            ("FRAG_REASM_TIMEOUT", Ip),
            ("PKT_TOO_SMALL", Ip),
            ("OTHERHOST", Ip),
            ("SOCKET_RCVBUFF", SocketBuffer),
            ("PROTO_MEM", SocketBuffer),
            ("SOCKET_BACKLOG", SocketBuffer),
            ("TCP_LISTEN_OVERFLOW", SocketBuffer),
            ("NO_SOCKET", NoSocket),
            ("TCP_OLD_DATA", Tcp),
            ("TCP_RESET", Tcp),
            ("QDISC_DROP", QdiscTx),
            ("FQ_FLOW_LIMIT", QdiscTx),
            ("CAKE_FLOOD", QdiscTx),
            ("TC_EGRESS", QdiscTx),
            ("DEV_READY", QdiscTx),
            ("XDP", Xdp),
            ("NOT_SPECIFIED", Other),
            ("NOMEM", Other),
        ] {
            assert_eq!(category(name), want, "{name}");
        }
    }

    #[test]
    fn table_names_skips_non_drops_and_keeps_subsystems_apart() {
        let t = ReasonTable::from_pairs([
            ("SKB_NOT_DROPPED_YET".to_string(), 0),
            ("SKB_CONSUMED".to_string(), 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED".to_string(), 2),
            ("SKB_DROP_REASON_NO_SOCKET".to_string(), 3),
            ("SKB_DROP_REASON_MAX".to_string(), 120),
        ]);
        assert!(!t.is_drop(0) && !t.is_drop(1) && t.is_drop(2));
        assert_eq!(t.name(3), "NO_SOCKET");
        assert_eq!(t.category(3), Category::NoSocket);
        assert_eq!(t.name(120), "REASON_120");
        // Two reasons of one subsystem stay two rows.
        let a = (1 << SUBSYS_SHIFT) | 3;
        let b = (1 << SUBSYS_SHIFT) | 4;
        assert_ne!(t.name(a), t.name(b));
        assert_eq!(t.category(a), Category::Other);
    }
}
