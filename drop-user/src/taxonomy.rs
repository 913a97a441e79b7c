//! The report's closed vocabularies as enums. Each serializes (and
//! displays) as the word the JSON schemas and Prometheus labels have
//! always used, so the output is unchanged.

use std::fmt;

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
