//! The report's closed vocabularies as enums. Each serializes (and
//! displays) as the word the JSON schemas and Prometheus labels have
//! always used, so the output is unchanged.

use std::{borrow::Cow, fmt};

use serde::{Deserialize, Serialize};

macro_rules! taxonomy {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$m])*
        #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code, reason = "not every taxonomy is enumerated")]
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The word used in JSON, Prometheus labels and hook variables.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

taxonomy! {
    /// Where an attack event stands in its attack's life.
    Phase {
        Start => "start",
        Update => "update",
        End => "end",
    }
}

taxonomy! {
    /// What an attack vector looks like.
    AttackClass {
        SynFlood => "syn-flood",
        AckRstFlood => "ack-rst-flood",
        UdpFlood => "udp-flood",
        UdpReflection => "udp-reflection",
        IcmpFlood => "icmp-flood",
        FragmentFlood => "fragment-flood",
        /// Nothing more specific fits.
        Volumetric => "volumetric",
    }
}

taxonomy! {
    /// Whether an attack comes from a few sources or many.
    SourceSpread {
        Few => "few",
        Many => "many",
    }
}

taxonomy! {
    /// Whether an attack's sources look spoofed (TTLs, packets per source).
    SpoofVerdict {
        Spoofed => "spoofed",
        Real => "real",
        Unclear => "unclear",
    }
}

taxonomy! {
    /// How dropscope sees an interface's XDP hook: its own program
    /// (native or generic), observing the program already there, a taken
    /// hook it may not observe, or no XDP at all. An observed program's
    /// own attachment is native or generic.
    XdpMode {
        Native => "native",
        Generic => "generic",
        /// An observed program offloaded to the NIC.
        Offload => "offload",
        Observe => "observe",
        Taken => "taken",
        Off => "off",
    }
}

taxonomy! {
    /// Whether an interval's loss looks like an attack's or congestion.
    LossKind {
        Ddos => "ddos",
        Congestion => "congestion",
        None => "none",
    }
}

taxonomy! {
    /// How urgent a doctor finding is (declared most urgent first: the
    /// findings are ranked by it).
    Severity {
        /// Over 1000 drops a second.
        Critical => "critical",
        Warning => "warning",
        Info => "info",
    }
}

taxonomy! {
    /// The cause a live hint or a doctor finding names.
    Cause {
        XdpProgram => "xdp-program",
        Xdp => "xdp",
        NicRing => "nic-ring",
        Backlog => "backlog",
        SocketBuffer => "socket-buffer",
        Netfilter => "netfilter",
        IpRpfilter => "ip-rpfilter",
        IpMartian => "ip-martian",
        IpNoRoute => "ip-no-route",
        IpChecksum => "ip-checksum",
        IpHeader => "ip-header",
        IpFragments => "ip-fragments",
        Physical => "physical",
        Qdisc => "qdisc",
        NoSocket => "no-socket",
        Tcp => "tcp",
        UpstreamFlood => "upstream-flood",
        OtherNamespace => "other-namespace",
        Unspecified => "unspecified",
    }
}

taxonomy! {
    /// Where a queue discipline drops: at arrival or from the head.
    QueueDrop {
        TailDrop => "tail-drop",
        HeadDrop => "head-drop",
    }
}

taxonomy! {
    /// How a reason's drops are spread in time over a doctor window.
    PatternVerdict {
        TooFew => "too-few",
        Bursty => "bursty",
        Random => "random",
        Mixed => "mixed",
    }
}

taxonomy! {
    /// The transport protocol of a port row.
    L4 {
        Tcp => "tcp",
        Udp => "udp",
    }
}

impl L4 {
    /// From an IP protocol number (attribution keys hold 6 or 17).
    pub(crate) fn of(proto: u16) -> L4 {
        if proto == 6 { L4::Tcp } else { L4::Udp }
    }
}

taxonomy! {
    /// An attack-shaped rate the adaptive detector keeps a baseline of.
    Metric {
        Syn => "syn",
        AckRst => "ack_rst",
        Udp => "udp",
        ReflectorUdp => "reflector_udp",
        Icmp => "icmp",
        Fragments => "fragments",
    }
}

taxonomy! {
    /// A configured absolute threshold (`[thresholds]`).
    Threshold {
        IfacePps => "iface_pps",
        IfaceBps => "iface_bps",
        SynPps => "syn_pps",
        SourcePps => "source_pps",
        SourceBps => "source_bps",
        PortPps => "port_pps",
    }
}

taxonomy! {
    /// What an in-kernel trigger crossed (`drop_common::trigger_kind`).
    KernelTrigger {
        Source => "source",
        Port => "port",
        Packets => "packets",
        Syn => "syn",
    }
}

impl KernelTrigger {
    /// From the trigger ring's kind; None for a kind this build does not
    /// know (the kernel side is built from the same source, so none).
    pub(crate) fn of(kind: u32) -> Option<KernelTrigger> {
        use drop_common::trigger_kind as k;
        Some(match kind {
            k::SOURCE => KernelTrigger::Source,
            k::PORT => KernelTrigger::Port,
            k::PACKETS => KernelTrigger::Packets,
            k::SYN => KernelTrigger::Syn,
            _ => return None,
        })
    }
}

/// What started an attack. Written `threshold:<name>`, `spike:<metric>`
/// or `kernel:<kind>` in JSON and hook variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    Threshold(Threshold),
    /// An adaptive spike over the metric's baseline.
    Spike(Metric),
    Kernel(KernelTrigger),
}

impl Trigger {
    /// True for thresholds on bytes: hooks are told `bps`, else `pps`.
    pub(crate) fn counts_bytes(self) -> bool {
        matches!(
            self,
            Trigger::Threshold(Threshold::IfaceBps | Threshold::SourceBps)
        )
    }

    /// An adaptive spike alone needs the kernel's word that the traffic
    /// was unwanted; the other triggers are the operator's call.
    pub(crate) fn is_spike(self) -> bool {
        matches!(self, Trigger::Spike(_))
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Threshold(t) => write!(f, "threshold:{t}"),
            Trigger::Spike(m) => write!(f, "spike:{m}"),
            Trigger::Kernel(k) => write!(f, "kernel:{k}"),
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = String;

    fn from_str(s: &str) -> Result<Trigger, String> {
        fn find<T: Copy + fmt::Display>(all: &[T], w: &str) -> Option<T> {
            all.iter().copied().find(|x| x.to_string() == w)
        }
        let (kind, word) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "threshold" => find(Threshold::ALL, word).map(Trigger::Threshold),
            "spike" => find(Metric::ALL, word).map(Trigger::Spike),
            "kernel" => find(KernelTrigger::ALL, word).map(Trigger::Kernel),
            _ => None,
        }
        .ok_or_else(|| format!("{s:?} is not a trigger"))
    }
}

impl Serialize for Trigger {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Trigger {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Trigger, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_keep_their_json_spelling() {
        let all = Threshold::ALL
            .iter()
            .map(|&t| Trigger::Threshold(t))
            .chain(Metric::ALL.iter().map(|&m| Trigger::Spike(m)))
            .chain(KernelTrigger::ALL.iter().map(|&k| Trigger::Kernel(k)));
        for t in all {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{t}\""));
            assert_eq!(serde_json::from_str::<Trigger>(&json).unwrap(), t);
        }
        assert_eq!(
            Trigger::Threshold(Threshold::IfacePps).to_string(),
            "threshold:iface_pps"
        );
        assert_eq!(Trigger::Spike(Metric::AckRst).to_string(), "spike:ack_rst");
        assert_eq!(
            Trigger::Kernel(KernelTrigger::Source).to_string(),
            "kernel:source"
        );
        assert!("spike:nothing".parse::<Trigger>().is_err());
        assert!("kernel".parse::<Trigger>().is_err());
    }
}
