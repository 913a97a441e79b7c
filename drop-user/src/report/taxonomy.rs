//! The report's closed vocabularies as enums. Each serializes (and
//! displays) as the word the JSON schemas and Prometheus labels have
//! always used, so the output is unchanged.

use std::fmt;

use serde::Serialize;

macro_rules! taxonomy {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$m])*
        #[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum $name {
            $($(#[$vm])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code, reason = "not every taxonomy is enumerated")]
            pub(crate) const ALL: &[$name] = &[$($name::$variant,)+];

            /// The word used in JSON, Prometheus labels and hook variables.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
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
