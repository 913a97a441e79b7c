//! The command line: clap types, validated into each stage's options.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use crate::{
    act::blocklist::{self, Blocklist, Prefix},
    analysis::doctor::{self, DoctorFormat, DoctorOptions},
    config::Config,
    export::{prometheus, terminal::Format},
    kernel::{KfreeChoice, XdpChoice},
    sys::{btf::KernelBtf, reasons::ReasonTable},
    units::parse_duration,
    watch::{self, Mode, WatchOptions},
};

mod generate;

/// `dropscope --version`: the release, the commit it was built from, the
/// target (a static musl build or not) and the embedded eBPF object's
/// digest, so a bug report names exactly what ran.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DROPSCOPE_COMMIT"),
    ", ",
    env!("DROPSCOPE_TARGET"),
    "; eBPF object sha256:",
    env!("DROPSCOPE_EBPF_SHA256"),
    ", ",
    env!("DROPSCOPE_EBPF_BYTES"),
    " bytes)"
);

/// Every packet the kernel drops, and why: live, per reason, per interface.
#[derive(Parser)]
#[command(name = "dropscope", version = VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// What dropscope and its eBPF programs log on stderr: off, error,
    /// warn, info, debug or trace (default: RUST_LOG, else warn).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_level)]
    log_level: Option<log::LevelFilter>,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a log level (off, error, warn, info, debug, trace)"))
}

/// Log records as one line each, "warn: drop_ebpf::kfree: ...", beside
/// dropscope's own "note:" lines.
fn init_logging(level: Option<log::LevelFilter>) {
    use std::io::Write;
    let mut b = env_logger::Builder::new();
    match level {
        Some(l) => {
            b.filter_level(l);
        }
        None => match std::env::var("RUST_LOG") {
            Ok(spec) => {
                b.parse_filters(&spec);
            }
            Err(_) => {
                b.filter_level(log::LevelFilter::Warn);
            }
        },
    }
    b.format(|buf, r| {
        writeln!(
            buf,
            "{}: {}: {}",
            r.level().as_str().to_lowercase(),
            r.target(),
            r.args()
        )
    });
    let _ = b.try_init();
}

#[derive(Subcommand)]
enum Command {
    /// Live table of drops by reason and interface, NIC counters and top sources.
    Watch {
        #[command(flatten)]
        live: Live,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Full-screen live view (keys: q quit, p pause, s sort, c category, i
    /// interface). Prints the plain table when stdout is not a terminal.
    Top {
        #[command(flatten)]
        live: Live,
    },
    /// Headless: detection, hooks, --events, --prometheus, --enforce; for
    /// systemd. Attack events are logged on stderr.
    Run {
        #[command(flatten)]
        live: Live,
    },
    /// Watch for a short window, then name the causes of loss and the fixes.
    Doctor {
        #[command(flatten)]
        probe: Probe,
        /// How long to watch.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, value_enum, default_value = "text")]
        format: DoctorFormat,
        /// Also count drops in other network namespaces (the evidence -
        /// sockets, sysctls, firewall - is read in dropscope's own).
        #[arg(long)]
        all_netns: bool,
    },
    /// List the running kernel's drop reasons and their categories.
    Reasons,
    /// Drop a source prefix in XDP (needs a running `dropscope run|watch|top --enforce`).
    Block {
        /// Address or prefix: 203.0.113.7, 198.51.100.0/24, 2001:db8::/32.
        prefix: Prefix,
        /// Remove it after this long (e.g. 10m); default: until unblocked.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[arg(long, default_value = blocklist::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Remove a prefix from the blocklist.
    Unblock {
        prefix: Prefix,
        #[arg(long, default_value = blocklist::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// List the blocklist: prefix, time left, packets dropped.
    Blocks {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[arg(long, default_value = blocklist::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: generate::Shell,
    },
    /// What packages ship, generated from this binary: man pages, completions
    /// and the commented default config.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: generate::What,
    },
}

/// Where and how the programs attach: shared by watch, top, run and doctor.
#[derive(clap::Args)]
struct Probe {
    /// Interface to observe (repeatable). Default: the default-route interface(s).
    #[arg(short, long = "iface")]
    iface: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpChoice,
    /// How drop events are read from the kernel.
    #[arg(long, value_enum, default_value = "auto")]
    kfree_hook: KfreeChoice,
}

/// Options of the live commands (watch, top, run).
#[derive(clap::Args)]
struct Live {
    #[command(flatten)]
    probe: Probe,
    /// Time between reports, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this long (exit 0 after the last report). Default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Count only drops in dropscope's own network namespace (default: every
    /// namespace; other namespaces' interfaces show as IFACE@NETNS).
    #[arg(long)]
    own_netns: bool,
    /// Rows in the top-sources and top-ports lists (and Prometheus' per-source series).
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u16).range(1..=1000))]
    top: u16,
    /// TOML file with [thresholds], [detection], [[hooks]] and [pcap] (see README).
    #[arg(long)]
    config: Option<PathBuf>,
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
    /// Serve Prometheus metrics on ADDR (PORT alone binds 127.0.0.1).
    #[arg(long, value_parser = prometheus::parse_addr, value_name = "ADDR")]
    prometheus: Option<SocketAddr>,
    /// Append reports and attack events as JSON lines to FILE ("-": stdout).
    #[arg(long, value_name = "FILE|-")]
    events: Option<String>,
    /// Log what the hooks would run instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// Drop sources in the blocklist in XDP (edit it with block/unblock).
    #[arg(long)]
    enforce: bool,
    /// bpffs directory for the blocklist pins.
    #[arg(long, default_value = blocklist::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Sample packets in XDP and write a PCAP file per attack here.
    #[arg(long)]
    pcap_dir: Option<PathBuf>,
}

impl Live {
    fn options(self, mode: Mode, format: Format) -> Result<WatchOptions> {
        let config = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let detect = config.detect_with([
            self.source_pps,
            self.source_bps,
            self.port_pps,
            self.iface_pps,
            self.iface_bps,
            self.syn_pps,
        ])?;
        Ok(WatchOptions {
            mode,
            ifaces: self.probe.iface,
            interval: self.interval,
            duration: self.duration,
            format,
            xdp: self.probe.xdp_mode,
            kfree: self.probe.kfree_hook,
            own_netns_only: self.own_netns,
            top: self.top as usize,
            detect,
            prometheus: self.prometheus,
            events: self.events,
            hooks: config.hooks,
            dry_run: self.dry_run,
            enforce: self.enforce,
            pin_dir: self.pin_dir,
            pcap_dir: self.pcap_dir,
            pcap: config.pcap,
        })
    }
}

fn reasons() -> Result<()> {
    let btf = KernelBtf::load()?;
    let Some(t) = ReasonTable::from_btf(&btf)? else {
        // Not an error: watch counts this kernel's drops by location.
        eprintln!(
            "note: this kernel has no enum skb_drop_reason (reasons need Linux 5.17+): dropscope counts its drops by kernel location"
        );
        return Ok(());
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (v, name) in t.all() {
        if t.is_drop(v) {
            let r = writeln!(out, "{v:>6}  {name:<32} {}", t.category(v).as_str());
            // `dropscope reasons | head` closes the pipe early: not an error.
            if let Err(e) = r {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}

fn block(prefix: Prefix, ttl: Option<Duration>, pin_dir: &std::path::Path) -> Result<()> {
    let mut bl = Blocklist::open(pin_dir)?;
    bl.add(prefix, ttl)?;
    match ttl {
        Some(t) => println!("blocked {prefix} for {}s", t.as_secs_f64()),
        None => println!("blocked {prefix} until unblocked"),
    }
    Ok(())
}

fn unblock(prefix: Prefix, pin_dir: &std::path::Path) -> Result<()> {
    let mut bl = Blocklist::open(pin_dir)?;
    if !bl.remove(prefix)? {
        bail!("{prefix} is not in the blocklist (see `dropscope blocks`)");
    }
    println!("unblocked {prefix}");
    Ok(())
}

fn blocks(format: Format, pin_dir: &std::path::Path) -> Result<()> {
    let bl = Blocklist::open(pin_dir)?;
    let rows = bl.rows();
    match format {
        Format::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Format::Table => {
            println!(
                "{:<44} {:>10} {:>12} {:>14}",
                "PREFIX", "EXPIRES", "PACKETS", "BYTES"
            );
            for r in &rows {
                let exp = match r.expires_in_s {
                    None => "never".to_string(),
                    Some(_) if r.expired => "expired".to_string(),
                    Some(s) => format!("{s:.0}s"),
                };
                println!(
                    "{:<44} {:>10} {:>12} {:>14}",
                    r.prefix, exp, r.packets, r.bytes
                );
            }
        }
    }
    Ok(())
}

/// The `dropscope` command: parse the flags, run the subcommand, and turn an
/// error into one line on stderr and exit status 1.
#[tokio::main(flavor = "current_thread")]
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level);
    let r = match cli.command {
        Command::Watch { live, format } => match live.options(Mode::Watch, format) {
            Ok(o) => watch::run(o).await,
            Err(e) => Err(e),
        },
        Command::Top { live } => match live.options(Mode::Top, Format::Table) {
            Ok(o) => watch::run(o).await,
            Err(e) => Err(e),
        },
        Command::Run { live } => match live.options(Mode::Run, Format::Json) {
            Ok(o) => watch::run(o).await,
            Err(e) => Err(e),
        },
        Command::Doctor {
            probe,
            duration,
            format,
            all_netns,
        } => {
            doctor::run(DoctorOptions {
                ifaces: probe.iface,
                duration,
                format,
                xdp: probe.xdp_mode,
                kfree: probe.kfree_hook,
                own_netns_only: !all_netns,
            })
            .await
        }
        Command::Reasons => reasons(),
        Command::Completions { shell } => generate::completions(shell, &mut std::io::stdout()),
        Command::Generate { what } => generate::run(what),
        Command::Block {
            prefix,
            ttl,
            pin_dir,
        } => block(prefix, ttl, &pin_dir),
        Command::Unblock { prefix, pin_dir } => unblock(prefix, &pin_dir),
        Command::Blocks { format, pin_dir } => blocks(format, &pin_dir),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
