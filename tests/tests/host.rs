//! The readers of the running kernel and host, on this machine and on
//! every kernel of the matrix: offsets and reason names are found by name
//! in the kernel's own BTF, never assumed; sysctls and interfaces are read
//! as a user's host has them. (The library's unit tests read fixtures
//! only.)

use dropscope::host_readers as h;

#[test]
fn sk_buff_fields_are_found_through_anonymous_unions() {
    let dev = h::btf_member_offset("sk_buff", &["dev"]).unwrap();
    let iif = h::btf_member_offset("sk_buff", &["skb_iif"]).unwrap();
    assert!(dev > 0 && dev < 64, "sk_buff.dev at {dev}");
    assert!(iif > dev, "skb_iif at {iif}");
    h::btf_member_offset("net_device", &["ifindex"]).unwrap();
    h::btf_member_offset("net_device", &["nd_net", "net"]).unwrap();
    h::btf_member_offset("net", &["ns", "inum"]).unwrap();
    h::btf_member_offset("sock", &["__sk_common", "skc_net", "net"]).unwrap();
}

#[test]
fn a_missing_member_or_struct_is_an_error() {
    let e = h::btf_member_offset("sk_buff", &["no_such_field"]).unwrap_err();
    assert!(e.contains("no_such_field"), "{e}");
    assert!(h::btf_member_offset("no_such_struct_xyz", &["dev"]).is_err());
}

/// The memory-copy path (kernels that refuse to mmap sysfs BTF) reads the
/// same offsets and enum as the mapping.
#[test]
fn btf_read_through_a_copy_agrees_with_the_mapping() {
    let (iif, reasons) = h::btf_through_a_copy("/sys/kernel/btf/vmlinux").unwrap();
    assert_eq!(iif, h::btf_member_offset("sk_buff", &["skb_iif"]).unwrap());
    assert_eq!(reasons, h::btf_enum("skb_drop_reason").unwrap());
}

/// Drop reasons exist from 5.17; before that the kernel has no such enum
/// and dropscope counts by location (tests/reduced.rs, tests/kernels.rs).
#[test]
fn drop_reasons_are_named_from_the_kernels_enum() {
    let Some(members) = h::btf_enum("skb_drop_reason").unwrap() else {
        assert!(
            h::kernel_reasons().is_err(),
            "no enum, yet reasons were named"
        );
        return;
    };
    assert!(
        members
            .iter()
            .any(|(n, _)| n == "SKB_DROP_REASON_NO_SOCKET")
    );
    let (names, (not_dropped_yet, consumed)) = h::kernel_reasons().unwrap();
    // The not-a-drop values are known exactly where the enum has them
    // (SKB_NOT_DROPPED_YET since 5.19, SKB_CONSUMED since 6.2): never
    // counted as drops, never assumed.
    let has = |name: &str| members.iter().any(|(n, _)| n == name);
    assert_eq!(not_dropped_yet, has("SKB_NOT_DROPPED_YET"), "{members:?}");
    assert_eq!(consumed, has("SKB_CONSUMED"), "{members:?}");
    for want in [
        "NO_SOCKET",
        "NETFILTER_DROP",
        "SOCKET_RCVBUFF",
        "NOT_SPECIFIED",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    // Each name's value is the kernel's own.
    let no_socket = members
        .iter()
        .find(|(n, _)| n == "SKB_DROP_REASON_NO_SOCKET")
        .unwrap()
        .1;
    assert_ne!(no_socket, 0);
}

#[test]
fn sysctls_are_read_and_missing_ones_are_none() {
    let v: u64 = h::sysctl("net.core.rmem_max").unwrap().parse().unwrap();
    assert!(v > 0);
    assert!(h::sysctl("net.no.such").is_none());
}

#[test]
fn an_unknown_interface_is_named_with_the_ones_there_are() {
    let e = h::resolve_ifaces(&["nope-xyz0"]).unwrap_err();
    assert!(e.contains("unknown interface 'nope-xyz0'"), "{e}");
    assert!(e.contains("lo"), "{e}");
    assert_eq!(
        h::resolve_ifaces(&["lo"]).unwrap(),
        vec![("lo".to_string(), 1)]
    );
}

#[test]
fn live_udp_sockets_are_listed() {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let socks = h::udp_sockets();
    assert!(
        socks.iter().any(|(a, p)| *p == port && a.is_loopback()),
        "{port} not in {socks:?}"
    );
}
