//! What a hook's process is told in `DROPSCOPE_*` variables. Values that
//! came from the network pass only if made of plain characters.

use crate::{report::AttackEvent, sys::iface::first_address};

/// Values from the network (interface names seen in events, addresses)
/// pass only if made of plain characters; anything else becomes empty.
pub(super) fn safe(v: &str) -> String {
    if v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._:/-".contains(c))
    {
        v.to_string()
    } else {
        String::new()
    }
}

pub(super) fn attack_env(kind: &'static str, e: &AttackEvent) -> Vec<(&'static str, String)> {
    let trigger = if e.trigger.counts_bytes() {
        "bps"
    } else {
        "pps"
    };
    let top = e.top_sources.first();
    vec![
        ("DROPSCOPE_EVENT", kind.to_string()),
        ("DROPSCOPE_ATTACK_ID", e.id.to_string()),
        ("DROPSCOPE_CLASS", safe(e.class.as_str())),
        ("DROPSCOPE_CONFIDENCE", e.confidence.to_string()),
        ("DROPSCOPE_IFACE", safe(&e.iface)),
        ("DROPSCOPE_TARGET", safe(&first_address(&e.iface))),
        (
            "DROPSCOPE_TOP_SOURCE",
            top.map(|s| safe(&s.address)).unwrap_or_default(),
        ),
        ("DROPSCOPE_PPS", format!("{:.0}", e.pps)),
        ("DROPSCOPE_BPS", format!("{:.0}", e.bps)),
        ("DROPSCOPE_TRIGGER", trigger.to_string()),
        ("DROPSCOPE_TRIGGER_DETAIL", e.trigger.to_string()),
        ("DROPSCOPE_SOURCES", e.sources.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_values_are_emptied() {
        assert_eq!(safe("eth0"), "eth0");
        assert_eq!(safe("203.0.113.7"), "203.0.113.7");
        assert_eq!(safe("2001:db8::1"), "2001:db8::1");
        assert_eq!(safe("veth0@ns1"), "veth0@ns1");
        assert_eq!(safe("$(reboot)"), "");
        assert_eq!(safe("a b"), "");
        assert_eq!(safe(&"x".repeat(500)), "");
    }
}
