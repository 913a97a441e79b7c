//! `dropscope top` as a person sees it: run in a tmux pane of 80x24, read
//! back with capture-pane, driven with keys.

use std::{process::Command, thread, time::Duration};

use integration_tests::{Lab, dropscope_bin, have, sh, sockaddr as addr, wait_for};

struct Tmux(String);

impl Tmux {
    fn start(name: &str, cmd: &str) -> Tmux {
        Self::start_sized(name, cmd, 80, 24)
    }

    /// `-u`: UTF-8 in and out, so the sparklines and the chart read back.
    fn start_sized(name: &str, cmd: &str, width: u16, height: u16) -> Tmux {
        sh(&[
            "tmux",
            "-u",
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            cmd,
        ]);
        Tmux(name.to_string())
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, k: &str) {
        sh(&["tmux", "send-keys", "-t", &self.0, k]);
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn wait_screen(&self, what: &str) -> String {
        wait_for(Duration::from_secs(15), || {
            let s = self.screen();
            s.contains(what).then_some(s)
        })
        .unwrap_or_else(|| panic!("'{what}' never appeared:\n{}", self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn top_fits_80x24_and_answers_keys() {
    assert!(have("tmux"), "tmux is needed: run `cargo xtask setup`");
    let lab = Lab::new();
    lab.exec(
        &lab.b,
        &[
            "iptables", "-A", "INPUT", "-p", "udp", "--dport", "5005", "-j", "DROP",
        ],
    );
    let session = format!("ds-{}", lab.a);
    let tmux = Tmux::start(
        &session,
        &format!(
            "ip netns exec {} {} top --iface vb --interval 200ms 2>/dev/null",
            lab.b,
            dropscope_bin()
        ),
    );
    tmux.wait_screen("Drops by reason");
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 5005), 400, 64);
    let screen = wait_for(Duration::from_secs(10), || {
        let s = tmux.screen();
        s.lines()
            .any(|l| l.contains("NETFILTER_DROP") && l.contains(" 400 "))
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("no NETFILTER_DROP row with 400:\n{}", tmux.screen()));
    eprintln!("{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines.len() <= 24);
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
    for pane in [
        "dropscope top",
        "Drops by reason",
        "NIC counters",
        "Attacks",
        "Top sources",
        "Top destination ports",
        "q quit",
    ] {
        assert!(screen.contains(pane), "no '{pane}' pane:\n{screen}");
    }
    let row = lines.iter().find(|l| l.contains("NETFILTER_DROP")).unwrap();
    assert!(
        row.contains("vb") && row.contains("400") && row.contains("netfilter"),
        "{row}"
    );
    tmux.wait_screen(&lab.v4(1));

    // Pause freezes the screen: new drops do not show until resumed.
    tmux.keys("p");
    tmux.wait_screen("[PAUSED]");
    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 5005), 100, 64);
    thread::sleep(Duration::from_millis(700));
    assert!(!tmux.screen().contains(" 500 "), "{}", tmux.screen());
    tmux.keys("p");
    let screen = tmux.wait_screen(" 500 ");
    assert!(!screen.contains("[PAUSED]"));

    // Category filter: the first category present (netfilter), shown in
    // the key line; sort cycles.
    tmux.keys("c");
    tmux.wait_screen("category:netfilter");
    tmux.keys("s");
    tmux.wait_screen("sort:Total");
    tmux.keys("i");
    tmux.wait_screen("iface:vb");

    tmux.keys("q");
    assert!(
        wait_for(Duration::from_secs(5), || (!tmux.alive()).then_some(())).is_some(),
        "top did not quit on q"
    );
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The chart's legend value for the row `name` (its newest point) and the
/// row's RATE/s cell in the table, when both are on the screen.
fn legend_and_table_rate(screen: &str, name: &str) -> Option<(String, String, String)> {
    let legend = screen
        .lines()
        .find(|l| l.contains(&format!("■ {name} vb ")))?;
    let after = legend.split(&format!("■ {name} vb ")).nth(1)?;
    let chart_rate = after.split("/s").next()?.trim().to_string();
    let row = screen
        .lines()
        .find(|l| l.trim_start().starts_with(name) && !l.contains('■'))?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    (cells.get(1) == Some(&"vb")).then(|| (chart_rate, cells[2].to_string(), row.to_string()))
}

/// History on the screen, at 80x24 and at 200x60: the drops/s chart's
/// newest point equals the rate in the table, each row has a sparkline,
/// and the attack panel shows the attack's pps over time.
#[test]
fn top_charts_the_last_minutes() {
    assert!(have("tmux"), "tmux is needed: run `cargo xtask setup`");
    for (width, height) in [(80u16, 24u16), (200, 60)] {
        let lab = Lab::new();
        lab.exec(
            &lab.b,
            &[
                "iptables", "-A", "INPUT", "-p", "udp", "--dport", "5006", "-j", "DROP",
            ],
        );
        let session = format!("ds-hist-{}", lab.a);
        let tmux = Tmux::start_sized(
            &session,
            &format!(
                "ip netns exec {} {} top --iface vb --interval 200ms --port-pps 50 2>/dev/null",
                lab.b,
                dropscope_bin()
            ),
            width,
            height,
        );
        tmux.wait_screen("Drops/s, last");
        // A steady ~200 datagrams/s for at most 8 s, stopped as soon as
        // the screen has shown what the test reads.
        let done = std::sync::atomic::AtomicBool::new(false);
        let screen = thread::scope(|sc| {
            sc.spawn(|| {
                for _ in 0..80 {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    lab.send_udp(&lab.a, addr(&lab.v4(1), 0), addr(&lab.v4(2), 5006), 20, 64);
                    thread::sleep(Duration::from_millis(100));
                }
            });
            let screen = wait_for(Duration::from_secs(8), || {
                let s = tmux.screen();
                let (chart, table, row) = legend_and_table_rate(&s, "NETFILTER_DROP")?;
                let attack = s
                    .lines()
                    .any(|l| l.contains("#1 ") && l.chars().any(|c| BARS.contains(&c)));
                (chart == table && table != "0" && row.chars().any(|c| BARS.contains(&c)) && attack)
                    .then_some(s)
            });
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            screen
        });
        let screen = screen.unwrap_or_else(|| {
            let s = tmux.screen();
            panic!(
                "at {width}x{height}: chart and table never agreed on a nonzero rate, or no sparkline/attack history ({:?}):\n{s}",
                legend_and_table_rate(&s, "NETFILTER_DROP")
            )
        });
        eprintln!("{screen}");
        let lines: Vec<&str> = screen.lines().collect();
        assert!(lines.len() <= height as usize);
        assert!(lines.iter().all(|l| l.chars().count() <= width as usize));
        // The chart itself: Braille dots plotted.
        assert!(
            screen
                .chars()
                .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
            "no plotted points:\n{screen}"
        );
        for pane in [
            "Drops by reason",
            "NIC counters",
            "Attacks",
            "Top sources",
            "q quit",
        ] {
            assert!(
                screen.contains(pane),
                "at {width}x{height} no '{pane}':\n{screen}"
            );
        }
        tmux.keys("q");
    }
}

#[test]
fn top_without_a_terminal_prints_the_plain_table() {
    let lab = Lab::new();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.b, &dropscope_bin()])
        .args([
            "top",
            "--iface",
            "vb",
            "--interval",
            "200ms",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("dropscope  elapsed"), "{text}");
    assert!(
        !text.contains("\x1b[?1049h"),
        "switched to the alternate screen"
    );
}
