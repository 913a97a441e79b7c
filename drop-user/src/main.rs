use std::{process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use dropscope::{
    btf::KernelBtf,
    detect::DetectConfig,
    doctor::{self, DoctorFormat, DoctorOptions},
    loader::{KfreeChoice, XdpChoice},
    output::Format,
    reasons::ReasonTable,
    watch::{self, WatchOptions},
};

/// Every packet the kernel drops, and why: live, per reason, per interface.
#[derive(Parser)]
#[command(name = "dropscope", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live table of drops by reason and interface, NIC counters and top sources.
    Watch {
        /// Interface to watch (repeatable). Default: the default-route interface(s).
        #[arg(short, long = "iface")]
        iface: Vec<String>,
        /// Time between reports, e.g. 1s, 500ms.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Stop after this long (exit 0 after the last report). Default: until Ctrl-C.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpChoice,
        /// How drop events are read from the kernel.
        #[arg(long, value_enum, default_value = "auto")]
        kfree_hook: KfreeChoice,
        /// Count only drops in dropscope's own network namespace (default: every
        /// namespace; other namespaces' interfaces show as IFACE@NETNS).
        #[arg(long)]
        own_netns: bool,
        /// Rows in the top-sources and top-ports lists.
        #[arg(long, default_value = "10")]
        top: usize,
        /// TOML file with [thresholds] and [detection] (see README).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Attack threshold: packets/s from one source (0: off).
        #[arg(long)]
        source_pps: Option<f64>,
        /// Attack threshold: bits/s from one source.
        #[arg(long)]
        source_bps: Option<f64>,
        /// Attack threshold: packets/s to one destination port.
        #[arg(long)]
        port_pps: Option<f64>,
        /// Attack threshold: packets/s on an interface.
        #[arg(long)]
        iface_pps: Option<f64>,
        /// Attack threshold: bits/s on an interface.
        #[arg(long)]
        iface_bps: Option<f64>,
        /// Attack threshold: TCP SYNs/s on an interface.
        #[arg(long)]
        syn_pps: Option<f64>,
    },
    /// Watch for a short window, then name the causes of loss and the fixes.
    Doctor {
        /// Interface to examine (repeatable). Default: the default-route interface(s).
        #[arg(short, long = "iface")]
        iface: Vec<String>,
        /// How long to watch.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, value_enum, default_value = "text")]
        format: DoctorFormat,
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpChoice,
        #[arg(long, value_enum, default_value = "auto")]
        kfree_hook: KfreeChoice,
        /// Also count drops in other network namespaces (the evidence -
        /// sockets, sysctls, firewall - is read in dropscope's own).
        #[arg(long)]
        all_netns: bool,
    },
    /// List the running kernel's drop reasons and their categories.
    Reasons,
}

/// "1s", "250ms", "2m", "1h", or plain seconds ("1.5").
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 1s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown unit in '{s}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("'{s}' must be more than zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn reasons() -> Result<()> {
    let btf = KernelBtf::load()?;
    let Some(t) = ReasonTable::from_btf(&btf)? else {
        bail!("this kernel has no enum skb_drop_reason (needs Linux 5.17+)");
    };
    for (v, name) in t.all() {
        if t.is_drop(v) {
            println!("{v:>6}  {name:<32} {}", t.category(v).as_str());
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Watch {
            iface,
            interval,
            duration,
            format,
            xdp_mode,
            kfree_hook,
            own_netns,
            top,
            config,
            source_pps,
            source_bps,
            port_pps,
            iface_pps,
            iface_bps,
            syn_pps,
        } => {
            let mut detect = match &config {
                Some(p) => match DetectConfig::load(p) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return ExitCode::FAILURE;
                    }
                },
                None => DetectConfig::default(),
            };
            let t = &mut detect.thresholds;
            for (flag, slot) in [
                (source_pps, &mut t.source_pps),
                (source_bps, &mut t.source_bps),
                (port_pps, &mut t.port_pps),
                (iface_pps, &mut t.iface_pps),
                (iface_bps, &mut t.iface_bps),
                (syn_pps, &mut t.syn_pps),
            ] {
                if let Some(v) = flag {
                    *slot = v;
                }
            }
            watch::run(WatchOptions {
                ifaces: iface,
                interval,
                duration,
                format,
                xdp: xdp_mode,
                kfree: kfree_hook,
                own_netns_only: own_netns,
                top,
                detect,
            })
            .await
        }
        Command::Doctor {
            iface,
            duration,
            format,
            xdp_mode,
            kfree_hook,
            all_netns,
        } => {
            doctor::run(DoctorOptions {
                ifaces: iface,
                duration,
                format,
                xdp: xdp_mode,
                kfree: kfree_hook,
                own_netns_only: !all_netns,
            })
            .await
        }
        Command::Reasons => reasons(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
