//! Exporters against the real components: promtool and a real Prometheus
//! server scraping dropscope, the `--events` stream, and the metrics
//! endpoint under hostile clients.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{KillOnDrop, Lab, have, sockaddr as addr, wait_for};
use serde_json::Value;

const METRICS_PORT: u16 = 9184;

fn drop_rule(lab: &Lab, port: u16) {
    lab.exec(
        &lab.b,
        &[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            &port.to_string(),
            "-j",
            "DROP",
        ],
    );
}

fn rule_packets(lab: &Lab, port: u16) -> u64 {
    let out = lab.exec(&lab.b, &["iptables", "-L", "INPUT", "-v", "-x", "-n"]);
    out.lines()
        .find(|l| l.contains(&format!("dpt:{port}")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// The value of the one sample of `series` in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A lab whose netfilter rule dropped 1000 datagrams, a dropscope serving
/// them, and its endpoint's text once it showed them all: checked exact
/// against the rule counter and valid to promtool.
fn serving_exact_drops() -> (Lab, u64, String, integration_tests::Dropscope) {
    assert!(
        have("prometheus") && have("promtool"),
        "prometheus and promtool are needed: run `cargo xtask setup`"
    );
    let lab = Lab::new();
    drop_rule(&lab, 5001);
    let ds = lab.dropscope(&[
        "run",
        "--iface",
        "vb",
        "--interval",
        "200ms",
        "--prometheus",
        &METRICS_PORT.to_string(),
    ]);
    lab.send_udp(
        &lab.a,
        addr(&lab.v4(1), 0),
        addr(&lab.v4(2), 5001),
        1000,
        64,
    );
    let rule = rule_packets(&lab, 5001);
    assert_eq!(rule, 1000);

    let series =
        "dropscope_drops_total{reason=\"NETFILTER_DROP\",category=\"netfilter\",iface=\"vb\"}";
    let text = wait_for(Duration::from_secs(5), || {
        let (status, body) = lab.get(&lab.b, METRICS_PORT, "/metrics");
        (status == 200 && sample(&body, series) == Some(rule as f64)).then_some(body)
    })
    .unwrap_or_else(|| {
        panic!(
            "metrics never showed {rule}:\n{}",
            lab.get(&lab.b, METRICS_PORT, "/metrics").1
        )
    });
    let dir = lab.temp_dir("metrics");
    let metrics_file = dir.path("metrics.txt");
    std::fs::write(&metrics_file, &text).unwrap();
    let check = Command::new("sh")
        .args(["-c", &format!("promtool check metrics < {metrics_file}")])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for family in [
        "dropscope_build_info",
        "dropscope_iface_rx_dropped_total{iface=\"vb\"}",
        "dropscope_attack_active{class=\"syn-flood\",iface=\"vb\"}",
        "dropscope_xdp_packets_total{iface=\"vb\"}",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    (lab, rule, text, ds)
}

/// dropscope's own endpoint, exact and valid: what depends on the kernel,
/// so the kernel matrix runs this one on every kernel.
#[test]
fn metrics_endpoint_is_exact_and_valid() {
    // The helper's checks are the test: the series equals the rule's
    // counter, and promtool accepts the whole text.
    let (_lab, _rule, _text, ds) = serving_exact_drops();
    drop(ds);
}

/// The endpoint as above, then the shipped rules and dashboard and a real
/// Prometheus server scraping it. Past the endpoint nothing here depends on
/// the kernel, and a Prometheus server's start is most of a VM's minute, so
/// the matrix runs the test above instead.
#[test]
fn real_prometheus_scrapes_the_exact_drop_count() {
    let (lab, rule, text, ds) = serving_exact_drops();
    let dir = lab.temp_dir("prom");

    // The shipped alert rules and dashboard: valid, and every metric they
    // use is one dropscope exports (a few only exist during an attack or
    // with --enforce).
    let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/../drop-user/dist");
    for args in [
        vec!["check", "rules", "dropscope-alerts.yml"],
        vec!["test", "rules", "dropscope-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(dist)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let conditional = [
        "dropscope_attack_pps",
        "dropscope_source_pps",
        "dropscope_blocklist_entries",
    ];
    for file in ["dropscope-alerts.yml", "grafana-dashboard.json"] {
        let body = std::fs::read_to_string(format!("{dist}/{file}")).unwrap();
        if file.ends_with(".json") {
            serde_json::from_str::<Value>(&body).expect("dashboard is JSON");
        }
        let mut rest = body.as_str();
        while let Some(i) = rest.find("dropscope_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            if name == "dropscope_" || conditional.contains(&name.as_str()) {
                continue;
            }
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{file} uses {name}, which dropscope does not export"
            );
        }
    }

    // A real Prometheus server in the same namespace scrapes it.
    let cfg = dir.path("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: dropscope\n    static_configs:\n      - targets: ['127.0.0.1:{METRICS_PORT}']\n"
        ),
    )
    .unwrap();
    let prom_port = 19090;
    let _prom = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &lab.b, "prometheus"])
            .arg(format!("--config.file={cfg}"))
            .arg(format!("--storage.tsdb.path={}", dir.path("data")))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let query = "/api/v1/query?query=dropscope_drops_total%7Breason%3D%22NETFILTER_DROP%22%2Ciface%3D%22vb%22%7D";
    let value = wait_for(Duration::from_secs(60), || {
        let (status, body) = lab.get(&lab.b, prom_port, query);
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(|s| s.to_string())
    })
    .expect("Prometheus never answered the query");
    assert_eq!(
        value,
        rule.to_string(),
        "Prometheus' answer vs the rule counter"
    );
    drop(ds);
}

#[test]
fn events_stream_carries_reports_and_attacks() {
    let lab = Lab::new();
    drop_rule(&lab, 5002);
    let dir = lab.temp_dir("events");
    let file = dir.path("events.jsonl");
    let ds = lab.dropscope(&[
        "run",
        "--iface",
        "vb",
        "--interval",
        "200ms",
        "--events",
        &file,
    ]);
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 5002), 300, 64);
    let rule = rule_packets(&lab, 5002);
    // Until a report shows every drop, and at least three reports.
    wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&file).ok()?;
        let last = dropscope::schema::Line::parse(text.lines().last()?).ok()?;
        (text.lines().count() >= 3
            && integration_tests::drops(last.watch()?, "NETFILTER_DROP", "vb") == rule)
            .then_some(())
    })
    .expect("the stream never showed every drop");
    let lines = ds.stop();
    assert!(lines.lines.is_empty(), "run prints nothing on stdout");
    let text = std::fs::read_to_string(&file).unwrap();
    let events = integration_tests::parse_stdout(&text);
    assert!(events.lines.len() >= 3, "{} lines", events.lines.len());
    assert_eq!(events.reports().count(), events.lines.len(), "only reports");
    let last = events.last().unwrap();
    assert_eq!(rule, 300);
    assert_eq!(integration_tests::drops(last, "NETFILTER_DROP", "vb"), rule);
}

#[test]
fn metrics_endpoint_survives_hostile_clients_and_binds_loopback() {
    let lab = Lab::new();
    let dir = lab.temp_dir("hostile");
    let file = dir.path("events.jsonl");
    let _ds = lab.dropscope(&[
        "run",
        "--iface",
        "vb",
        "--interval",
        "100ms",
        "--prometheus",
        &METRICS_PORT.to_string(),
        "--events",
        &file,
    ]);
    wait_for(Duration::from_secs(5), || {
        (lab.get(&lab.b, METRICS_PORT, "/metrics").0 == 200).then_some(())
    })
    .expect("endpoint up");

    // Slow clients that never finish their request hold no one up.
    let stalled: Vec<_> = (0..8)
        .map(|_| {
            lab.spawn_in_ns(&lab.b, move || {
                let s = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT)).unwrap();
                use std::io::Write;
                let _ = (&s).write_all(b"GET /metr");
                thread::sleep(Duration::from_secs(3));
                drop(s);
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let (status, body) = lab.get(&lab.b, METRICS_PORT, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("dropscope_build_info"));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a stalled client delayed a scrape"
    );

    // Malformed and oversized requests get an error, not a crash.
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"BREW /metrics HTCPCP/1.0\r\n\r\n".to_vec(), 400),
        (b"POST /metrics HTTP/1.1\r\n\r\n".to_vec(), 405),
        (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"\x00\xff\xfe garbage\r\n\r\n".to_vec(), 400),
        (
            {
                let mut v = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
                v.extend(std::iter::repeat_n(b'a', 100_000));
                v
            },
            431,
        ),
    ];
    for (req, want) in cases {
        let (status, _) = lab.http(&lab.b, METRICS_PORT, req.clone());
        assert_eq!(
            status,
            want,
            "request {:?}",
            String::from_utf8_lossy(&req[..req.len().min(40)])
        );
    }
    for h in stalled {
        h.join().unwrap();
    }
    // Still serving, and the sampler never stopped: a report every 100 ms.
    assert_eq!(lab.get(&lab.b, METRICS_PORT, "/metrics").0, 200);
    let reports = std::fs::read_to_string(&file).unwrap().lines().count();
    assert!(reports >= 25, "only {reports} reports in the run");

    // Bound to loopback by default: the veth address refuses.
    let peer = lab.v4(2);
    let refused = lab.in_ns(&lab.a, move || {
        std::net::TcpStream::connect_timeout(
            &format!("{peer}:{METRICS_PORT}").parse().unwrap(),
            Duration::from_secs(2),
        )
        .is_err()
    });
    assert!(refused, "the metrics port answered on the veth address");
}
