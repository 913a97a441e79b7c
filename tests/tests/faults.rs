//! Faults: the watched interface is deleted and comes back; dropscope keeps
//! running, says so, re-attaches, and counts on.

use std::{thread, time::Duration};

use integration_tests::{Lab, iface, sockaddr as addr, source_packets};

#[test]
fn deleted_interface_is_followed_when_it_returns() {
    let lab = Lab::new();
    let ds = lab.dropscope(&[
        "watch",
        "--iface",
        "vb",
        "--interval",
        "200ms",
        "--format",
        "json",
    ]);
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 9), 100, 32);
    thread::sleep(Duration::from_millis(300));
    // Deleting one end deletes the pair.
    lab.ip(&lab.b, &["link", "del", "vb"]);
    thread::sleep(Duration::from_millis(700));
    lab.wire();
    thread::sleep(Duration::from_millis(700));
    assert!(
        lab.ip(&lab.b, &["-d", "link", "show", "vb"])
            .contains("xdp"),
        "XDP re-attached to the new vb:\n{}",
        ds.stderr()
    );
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 9), 77, 32);
    thread::sleep(Duration::from_millis(400));
    let err = ds.stderr();
    let reports = ds.stop();
    assert!(err.contains("interface vb is gone"), "{err}");
    assert!(err.contains("interface vb is back"), "{err}");
    assert!(
        reports
            .iter()
            .any(|r| r["interfaces"][0]["present"] == false),
        "a report showed vb missing"
    );
    let last = reports.last().unwrap();
    assert_eq!(iface(last, "vb")["present"], true);
    assert_eq!(
        source_packets(last, &lab.v4(1)),
        177,
        "{}",
        last["top_sources"]
    );
}
