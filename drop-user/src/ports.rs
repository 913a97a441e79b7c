//! Well-known reflection/amplification source ports, listed once: the XDP
//! program gives each its own UDP source-port counter, the report labels
//! them, and detection names the reflected protocol. A leaf module.

/// (port, protocol), ascending.
const REFLECTORS: [(u16, &str); 24] = [
    (17, "QOTD"),
    (19, "CharGEN"),
    (53, "DNS"),
    (69, "TFTP"),
    (111, "Portmap"),
    (123, "NTP"),
    (137, "NetBIOS"),
    (161, "SNMP"),
    (389, "CLDAP"),
    (427, "SLP"),
    (443, "QUIC"),
    (520, "RIP"),
    (1434, "MSSQL"),
    (1900, "SSDP"),
    (3283, "ARD"),
    (3478, "STUN"),
    (3702, "WS-Discovery"),
    (5353, "mDNS"),
    (5683, "CoAP"),
    (10001, "Ubiquiti"),
    (11211, "memcached"),
    (27015, "Steam"),
    (33848, "Jenkins"),
    (37810, "DVR"),
];

/// The reflected protocol of a UDP source port, if it is a known reflector.
pub(crate) fn reflector_protocol(port: u16) -> Option<&'static str> {
    REFLECTORS
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, name)| *name)
}

/// Reflector ports above 1023, which get a counter of their own (bucket
/// 1024 + index); ports 0-1023 always do.
pub(crate) const REFLECTOR_PORTS_HIGH: [u16; 12] = high_ports();

const fn high_ports() -> [u16; 12] {
    let mut out = [0u16; 12];
    let (mut i, mut n) = (0, 0);
    while i < REFLECTORS.len() {
        if REFLECTORS[i].0 >= 1024 {
            out[n] = REFLECTORS[i].0;
            n += 1;
        }
        i += 1;
    }
    assert!(
        n == out.len(),
        "REFLECTOR_PORTS_HIGH's length is the count of ports >= 1024"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table() {
        assert_eq!(reflector_protocol(11211), Some("memcached"));
        assert_eq!(reflector_protocol(40000), None);
        assert!(REFLECTOR_PORTS_HIGH.contains(&1434) && REFLECTOR_PORTS_HIGH.contains(&37810));
        assert!(REFLECTORS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
