//! Loads the eBPF object with the running kernel's layout and attaches it:
//! kfree_skb (tp_btf, else the classic tracepoint) and XDP on each watched
//! interface (native, else generic).

use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, IterableMap, MapData},
    programs::{BtfTracePoint, TracePoint, Xdp, XdpMode},
};
use drop_common::{
    KFREE_FLAG_PKT_OFFSETS, KFREE_FLAG_SKB_OFFSETS, KfreeConfig, MAX_IFACES, ObserveConfig,
    UDP_EXTRA_PORTS, XdpConfig, globals, maps, programs,
};

use crate::{
    kernel::{Maps, observe::Observer},
    sys::{btf::KernelBtf, reasons::ReasonTable, tracefs, xdp_link},
    taxonomy::XdpMode as Hook,
};

/// The production object: the kfree_skb and XDP programs dropscope loads.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drop-ebpf"));

/// The test-only object (traffic generator, empty XDP floor) for the
/// integration tests and benchmarks; the dropscope binary never loads it,
/// so the linker leaves it out.
#[doc(hidden)]
pub static TEST_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drop-ebpf-test"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpChoice {
    /// dropscope's own program where the hook is free (native mode where
    /// the driver supports it, generic otherwise); where a program is
    /// already attached, observe it in place (fentry/fexit).
    Auto,
    /// Own program, native (driver) mode only.
    Native,
    /// Own program, generic (skb) mode only.
    Generic,
    /// Only observe the XDP programs already attached; never take a hook.
    Observe,
    /// No XDP program: drop reasons and NIC counters only.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KfreeChoice {
    /// tp_btf/kfree_skb, else the classic tracepoint.
    Auto,
    /// Only tp_btf/kfree_skb (typed arguments, cheapest per event).
    Btf,
    /// Only the classic skb:kfree_skb tracepoint (layout read from tracefs).
    Tracepoint,
    /// No kfree_skb program: XDP only (packet shapes, sources, floods).
    None,
}

pub struct LoadOptions {
    pub ifaces: Vec<(String, u32)>,
    pub xdp: XdpChoice,
    pub kfree: KfreeChoice,
    /// Count only drops in dropscope's own network namespace.
    pub own_netns_only: bool,
    /// Budgets and in-kernel trigger counts for the XDP program.
    pub xdp_config: XdpConfig,
}

/// Per CPU, the first this many packets a second feed the per-source and
/// per-port path one by one (exact counts for ordinary traffic); past it,
/// about 1 in [`FLOOD_SAMPLE_EVERY`] does, weighted by its gap.
pub(crate) const EXACT_PPS: u32 = 20_000;
pub(crate) const FLOOD_SAMPLE_EVERY: u32 = 32;

/// Budgets that keep per-source counts exact in normal traffic: 4096 new
/// sources per CPU per interval are tracked exactly; past that (a spoofed
/// flood) only sources the sketch shows at 32+ packets are.
pub fn default_xdp_config() -> XdpConfig {
    XdpConfig {
        source_budget: 4096,
        promote_packets: 32,
        port_budget: 256,
        promote_port_packets: 16,
        exact_packets: EXACT_PPS,
        flood_sample_every: FLOOD_SAMPLE_EVERY,
        ..Default::default()
    }
}

/// How drop events reach us on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DropHook {
    BtfTracepoint,
    Tracepoint,
    /// The classic tracepoint on a kernel whose kfree_skb has no reason
    /// (before 5.17): drops are counted by kernel location.
    TracepointByLocation,
    /// No kfree_skb counting; the string says why.
    Unavailable(String),
}

pub struct Probes {
    /// Owns programs and links: dropping it detaches everything.
    pub ebpf: Ebpf,
    pub(crate) maps: Maps,
    /// The programs' aya-log records, for `flush_log`.
    pub(crate) logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub(crate) reasons: ReasonTable,
    pub(crate) hook: DropHook,
    /// (interface, "native" | "generic" | "observe" | "taken": held by a
    /// program that could not be observed) for each XDP attachment.
    pub(crate) xdp_modes: Vec<(String, Hook)>,
    /// What observe mode attached, and the programs it observes.
    pub(crate) observer: Observer,
    /// Per interface, what the start line says about its XDP program.
    pub(crate) xdp_lines: Vec<(String, String)>,
    /// What runs reduced on this kernel, in plain words.
    pub(crate) notes: Vec<String>,
    pub(crate) netns: u32,
}

impl Probes {
    /// Prints what the programs logged since the last call.
    pub(crate) fn flush_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// The XDP counters of the interface in `slot`, summed over CPUs: what
    /// the tests compare with the packets they sent.
    pub fn iface_stats(&mut self, slot: usize) -> Result<drop_common::IfaceStats> {
        let snap = self.maps.read(slot + 1, false)?;
        Ok(snap.ifaces.get(slot).copied().unwrap_or_default())
    }
}

pub(crate) fn own_netns() -> Result<u32> {
    Ok(std::fs::metadata("/proc/self/ns/net")
        .context("reading /proc/self/ns/net")?
        .ino() as u32)
}

/// Fails early, in one line, when we can't load BPF programs.
pub(crate) fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    const PERFMON: u64 = 1 << 38;
    const BPF: u64 = 1 << 39;
    let ok =
        eff & NET_ADMIN != 0 && (eff & SYS_ADMIN != 0 || eff & (BPF | PERFMON) == BPF | PERFMON);
    if !ok {
        bail!(
            "dropscope needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN to load its eBPF programs: run it with sudo"
        );
    }
    Ok(())
}

/// Whether XDP programs may call bpf_xdp_load_bytes (PCAP samples), probed
/// by loading a two-instruction program that calls it.
pub(crate) fn xdp_can_copy_packets() -> bool {
    use aya::{
        programs::ProgramType,
        sys::{BpfHelper, is_helper_supported},
    };
    raise_memlock();
    is_helper_supported(ProgramType::Xdp, BpfHelper::BPF_FUNC_xdp_load_bytes).unwrap_or(false)
}

fn raise_memlock() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// sk_buff/net_device/net/sock offsets for the kfree_skb program.
fn skb_offsets(btf: &KernelBtf, cfg: &mut KfreeConfig) -> Result<()> {
    cfg.skb_dev = btf.member_offset("sk_buff", &["dev"])?;
    cfg.skb_iif = btf.member_offset("sk_buff", &["skb_iif"])?;
    cfg.skb_sk = btf.member_offset("sk_buff", &["sk"])?;
    cfg.dev_ifindex = btf.member_offset("net_device", &["ifindex"])?;
    cfg.dev_net = btf.member_offset("net_device", &["nd_net", "net"])?;
    cfg.sk_net = btf.member_offset("sock", &["__sk_common", "skc_net", "net"])?;
    cfg.net_inum = btf.member_offset("net", &["ns", "inum"])?;
    cfg.flags |= KFREE_FLAG_SKB_OFFSETS;
    // Where the dropped packet's headers are (attribution). Header fields
    // are u16 offsets from `head` on 64-bit kernels; anything else, skip.
    let sized = |field: &str, want: usize| -> Result<u32> {
        let size = btf.member_size("sk_buff", &[field])?;
        if size != want {
            bail!("sk_buff.{field} is {size} bytes, not {want}");
        }
        btf.member_offset("sk_buff", &[field])
    };
    let pkt = (|| -> Result<[u32; 4]> {
        Ok([
            sized("head", 8)?,
            sized("network_header", 2)?,
            sized("transport_header", 2)?,
            sized("protocol", 2)?,
        ])
    })();
    if let Ok([head, nh, th, proto]) = pkt {
        cfg.skb_head = head;
        cfg.skb_network_header = nh;
        cfg.skb_transport_header = th;
        cfg.skb_protocol = proto;
        cfg.flags |= KFREE_FLAG_PKT_OFFSETS;
    }
    Ok(())
}

fn load_object(
    kernel_btf: Option<&aya::Btf>,
    cfg: &KfreeConfig,
    xdp: &XdpConfig,
    observe: &ObserveConfig,
) -> Result<Ebpf> {
    // The kernel side logs only at the levels user space would print: a
    // disabled level costs it a comparison with this constant.
    let level: u8 = match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => aya_log::Level::Error as u8,
        log::LevelFilter::Warn => aya_log::Level::Warn as u8,
        log::LevelFilter::Info => aya_log::Level::Info as u8,
        log::LevelFilter::Debug => aya_log::Level::Debug as u8,
        log::LevelFilter::Trace => aya_log::Level::Trace as u8,
    };
    let mut loader = EbpfLoader::with_btf(kernel_btf);
    loader
        .override_global(globals::KFREE_CONFIG, cfg, true)
        .override_global(globals::XDP_CONFIG, xdp, true)
        .override_global(globals::OBSERVE_CONFIG, observe, true)
        .override_global(aya_log::LEVEL, &level, true);
    // Simulates a small host's full drop table (the tests' only way to
    // fill one): rows beyond this many are counted per reason only.
    if let Some(rows) = std::env::var("DROPSCOPE_DROP_ROWS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| (1..=drop_common::MAX_DROP_ROWS).contains(n))
    {
        loader.map_max_entries(maps::DROPS_BY_IFACE, rows);
    }
    loader.load(EBPF_OBJECT).context("loading the eBPF object")
}

/// Forwards the programs' aya-log records to the `log` facade (stderr).
/// The programs log only rare conditions (a table found full), never per
/// packet; without the log ring dropscope runs on and says why.
fn kernel_logger(
    ebpf: &mut Ebpf,
    notes: &mut Vec<String>,
) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            notes.push(format!(
                "the eBPF programs' log is not readable ({e}): their warnings are not shown"
            ));
            None
        }
    }
}

fn attach_btf_tracepoint(ebpf: &mut Ebpf, btf: Option<&aya::Btf>) -> Result<()> {
    let btf = btf.ok_or_else(|| {
        anyhow!(
            "reading kernel BTF: {} not readable",
            crate::sys::btf::VMLINUX_BTF
        )
    })?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(programs::KFREE_SKB_BTF)
        .ok_or_else(|| anyhow!("kfree_skb_btf missing from the object"))?
        .try_into()?;
    prog.load("kfree_skb", btf)
        .context("loading tp_btf/kfree_skb")?;
    prog.attach().context("attaching tp_btf/kfree_skb")?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(programs::KFREE_SKB_TP)
        .ok_or_else(|| anyhow!("kfree_skb_tp missing from the object"))?
        .try_into()?;
    prog.load().context("loading tracepoint skb:kfree_skb")?;
    tracefs::system()?;
    prog.attach("skb", "kfree_skb")
        .context("attaching tracepoint skb:kfree_skb")?;
    Ok(())
}

/// Classic tracepoint layout, and reason names when BTF had none. False
/// when the record has no reason: every event is then a drop counted as
/// NOT_SPECIFIED at its location.
fn tracepoint_layout(cfg: &mut KfreeConfig, reasons: &mut Option<ReasonTable>) -> Result<bool> {
    let tfs = tracefs::find_or_mount()?;
    let fmt = tracefs::read_format(&tfs, "skb", "kfree_skb")?;
    let skb = fmt
        .field("skbaddr")
        .ok_or_else(|| anyhow!("skb:kfree_skb has no skbaddr field"))?;
    cfg.tp_skbaddr = skb.offset;
    if let Some(loc) = fmt.field("location") {
        cfg.tp_location = loc.offset;
    }
    let Some(reason) = fmt.field("reason") else {
        if fmt.field("location").is_none() {
            bail!("skb:kfree_skb has neither a reason nor a location field");
        }
        cfg.tp_reason_size = 0;
        *reasons = Some(ReasonTable::location_only());
        return Ok(false);
    };
    cfg.tp_reason = reason.offset;
    cfg.tp_reason_size = reason.size;
    if reasons.is_none() {
        let syms = fmt.symbols("reason");
        if !syms.is_empty() {
            *reasons = Some(ReasonTable::from_pairs(syms));
        }
    }
    Ok(true)
}

pub fn load(opts: &LoadOptions) -> Result<Probes> {
    check_privileges()?;
    raise_memlock();
    if opts.ifaces.len() > MAX_IFACES as usize {
        bail!("at most {MAX_IFACES} interfaces can be watched at once");
    }
    let netns = own_netns()?;
    let mut notes = Vec::new();
    // Attribution samples like the XDP path, on the same per-epoch scale
    // (exact for the first tenth as many drops: an exact row costs two
    // hash lookups); new rows per epoch are a fraction of the source budget.
    let x = &opts.xdp_config;
    let mut cfg = KfreeConfig {
        netns_filter: if opts.own_netns_only { netns } else { 0 },
        attr_exact: (x.exact_packets / 10).max(2000),
        attr_every: x.flood_sample_every,
        attr_source_budget: (x.source_budget / 8).max(64),
        attr_port_budget: x.port_budget.max(64),
        // Off only where a test shrinks the hash to fill it (see
        // DROPSCOPE_DROP_ROWS): the slots would hold its rows.
        drop_slots: std::env::var_os("DROPSCOPE_DROP_ROWS").is_none() as u32,
        ..Default::default()
    };

    let btf = match KernelBtf::load() {
        Ok(b) => Some(b),
        Err(e) => {
            notes.push(format!("{e}: drops are counted without interfaces"));
            None
        }
    };
    let mut reasons = match &btf {
        Some(b) => ReasonTable::from_btf(b)?,
        None => None,
    };
    if let Some(b) = &btf
        && let Err(e) = skb_offsets(b, &mut cfg)
    {
        notes.push(format!(
            "sk_buff layout not found in BTF ({e:#}): drops are counted without interfaces"
        ));
    }
    let has_ifindex = cfg.flags & KFREE_FLAG_SKB_OFFSETS != 0;
    if !has_ifindex {
        cfg.netns_filter = 0;
    }

    let set_reasons = |cfg: &mut KfreeConfig, r: &ReasonTable| {
        // Sentinels no real reason uses, when the kernel lacks these names.
        cfg.reason_not_dropped_yet = r.not_dropped_yet.unwrap_or(u32::MAX);
        cfg.reason_consumed = r.consumed.unwrap_or(u32::MAX);
        cfg.reason_not_specified = r.not_specified.unwrap_or(u32::MAX);
    };

    // Which interfaces already run an XDP program, before anything loads:
    // the choice of own program or observe mode is made per interface.
    let plan = plan_xdp(opts)?;
    let observe_cfg = if plan.iter().any(|p| p.is_some()) {
        let b = btf.as_ref().ok_or_else(|| {
            anyhow!("observing an attached XDP program needs kernel BTF (/sys/kernel/btf/vmlinux): pass --xdp-mode none")
        })?;
        // A generic-mode XDP drop is freed with this reason: counted once,
        // as the XDP drop (NOT_SPECIFIED before the XDP reason existed).
        let reason_xdp = reasons
            .as_ref()
            .and_then(|r| r.value_of("XDP").or(r.not_specified))
            .unwrap_or(2);
        super::observe::config(b, reason_xdp).context("xdp_buff layout not found in BTF")?
    } else {
        ObserveConfig::default()
    };

    // aya's parse of the kernel's BTF, once for every load below (its
    // loader would parse it again on its own).
    let kernel_btf = aya::Btf::from_sys_fs().ok();
    let mut hook = DropHook::Unavailable(String::new());
    let mut ebpf = None;
    if opts.kfree == KfreeChoice::None {
        hook = DropHook::Unavailable(
            "--kfree-hook none: drops per reason are not counted (XDP only)".into(),
        );
    } else if let Some(r) = &reasons
        && opts.kfree != KfreeChoice::Tracepoint
    {
        set_reasons(&mut cfg, r);
        let mut e = load_object(kernel_btf.as_ref(), &cfg, &opts.xdp_config, &observe_cfg)?;
        match attach_btf_tracepoint(&mut e, kernel_btf.as_ref()) {
            Ok(()) => {
                hook = DropHook::BtfTracepoint;
                ebpf = Some(e);
            }
            Err(err) if opts.kfree == KfreeChoice::Btf => return Err(err),
            Err(err) => notes.push(format!(
                "tp_btf/kfree_skb unavailable ({err:#}); using the classic tracepoint"
            )),
        }
    } else if opts.kfree == KfreeChoice::Btf {
        bail!("--kfree-hook btf needs kernel BTF with enum skb_drop_reason");
    }
    if ebpf.is_none() && opts.kfree != KfreeChoice::Btf && opts.kfree != KfreeChoice::None {
        match tracepoint_layout(&mut cfg, &mut reasons) {
            Ok(with_reason) => {
                let r = reasons.get_or_insert_with(ReasonTable::default);
                set_reasons(&mut cfg, r);
                let mut e = load_object(kernel_btf.as_ref(), &cfg, &opts.xdp_config, &observe_cfg)?;
                match attach_tracepoint(&mut e) {
                    Ok(()) if with_reason => hook = DropHook::Tracepoint,
                    Ok(()) => {
                        hook = DropHook::TracepointByLocation;
                        notes.push(
                            "this kernel's kfree_skb carries no drop reason (reasons need Linux 5.17+): drops are counted by kernel location".into(),
                        );
                    }
                    Err(err) if opts.kfree == KfreeChoice::Tracepoint => return Err(err),
                    Err(err) => hook = DropHook::Unavailable(format!("{err:#}")),
                }
                ebpf = Some(e);
            }
            Err(err) if opts.kfree == KfreeChoice::Tracepoint => return Err(err),
            Err(err) => hook = DropHook::Unavailable(format!("{err:#}: running XDP-only")),
        }
    }
    if let DropHook::Unavailable(why) = &hook {
        notes.push(why.clone());
    }
    let mut ebpf = match ebpf {
        Some(e) => e,
        None => load_object(kernel_btf.as_ref(), &cfg, &opts.xdp_config, &observe_cfg)?,
    };
    // Only loading needs it (relocations, tp_btf): its memory goes now.
    drop(kernel_btf);

    let mut observer = Observer::default();
    let (xdp_modes, xdp_lines) = attach_xdp(&mut ebpf, opts, &plan, &mut observer, &mut notes)?;
    let mut maps = Maps::take(&mut ebpf)?;
    maps.observed = observer.slots_used();
    let logger = kernel_logger(&mut ebpf, &mut notes);
    let mut reasons = reasons.unwrap_or_default();
    for p in &observer.progs {
        reasons.observe(p.slot, &p.name);
    }
    Ok(Probes {
        ebpf,
        maps,
        logger,
        reasons,
        hook,
        xdp_modes,
        observer,
        xdp_lines,
        notes,
        netns,
    })
}

/// Per watched interface, the program already attached to it as (mode,
/// id), or None where dropscope takes the hook itself.
type XdpPlan = Vec<Option<(xdp_link::XdpAttach, u32)>>;

fn plan_xdp(opts: &LoadOptions) -> Result<XdpPlan> {
    if opts.xdp == XdpChoice::None {
        return Ok(Vec::new());
    }
    let mut plan = Vec::new();
    for (name, ifindex) in &opts.ifaces {
        let taken = xdp_link::attached(*ifindex)
            .with_context(|| format!("reading {name}'s XDP program"))?
            .into_iter()
            .next();
        match (taken, opts.xdp) {
            (None, XdpChoice::Observe) => bail!(
                "--xdp-mode observe: {name} has no XDP program to observe (use --xdp-mode auto to attach dropscope's own)"
            ),
            (Some((_, id)), XdpChoice::Native | XdpChoice::Generic) => bail!(
                "interface {name} already has an XDP program attached (id {id}): pass --xdp-mode auto or observe to observe it in place, or none"
            ),
            (Some((_, id)), _) if opts.xdp_config.enforce != 0 => bail!(
                "--enforce needs dropscope's own XDP program on {name}, whose hook holds program id {id}: drop --enforce to observe it, or unload that program"
            ),
            _ => {}
        }
        plan.push(taken);
    }
    Ok(plan)
}

/// (interface, native | generic | observe | taken) per XDP attachment.
type XdpModes = Vec<(String, Hook)>;

fn attach_xdp(
    ebpf: &mut Ebpf,
    opts: &LoadOptions,
    plan: &XdpPlan,
    observer: &mut Observer,
    notes: &mut Vec<String>,
) -> Result<(XdpModes, Vec<(String, String)>)> {
    if opts.xdp == XdpChoice::None || opts.ifaces.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    register_ifaces(ebpf, &opts.ifaces)?;
    let mut modes = Vec::new();
    let mut lines = Vec::new();
    // An interface's slot is its place in `opts.ifaces` (register_ifaces).
    for (slot, ((name, ifindex), taken)) in opts.ifaces.iter().zip(plan).enumerate() {
        match taken {
            Some((mode, id)) => match observer.observe(ebpf, name, *ifindex, *mode, *id, notes) {
                Ok(line) => {
                    modes.push((name.clone(), Hook::Observe));
                    lines.push((name.clone(), line));
                }
                // Auto never fails for want of observe mode: that interface
                // runs reduced (drops by reason only), said in one note.
                Err(e) if opts.xdp == XdpChoice::Auto => {
                    observer.forget(*ifindex);
                    observer.tried(*ifindex, *id);
                    notes.push(format!(
                        "{name}: its XDP program (id {id}) cannot be observed ({}): no packet shapes, sources or XDP verdicts there; drops by reason are still counted",
                        one_line(&e)
                    ));
                    modes.push((name.clone(), Hook::Taken));
                    lines.push((
                        name.clone(),
                        format!("hook held by program id {id}, not observed"),
                    ));
                }
                Err(e) => return Err(e),
            },
            None => {
                let prog = load_xdp(ebpf, programs::xdp_for_slot(slot))?;
                let (mode, native_err) = attach_one(prog, name, *ifindex, opts.xdp)?;
                if let Some(e) = native_err {
                    notes.push(format!(
                        "{name}: no native XDP ({e}); attached in generic (skb) mode, which costs more per packet"
                    ));
                }
                modes.push((name.clone(), mode));
                lines.push((name.clone(), mode.to_string()));
            }
        }
    }
    Ok((modes, lines))
}

/// An error and its causes on one line, without aya's empty verifier log.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .replace("Verifier output: : ", "")
        .replace('\n', " ")
}

/// Registers the interfaces' slots and the UDP port buckets, then loads the
/// XDP program (not attached: benchmarks run it through BPF_PROG_TEST_RUN).
pub fn prepare_xdp(ebpf: &mut Ebpf, ifaces: &[(String, u32)]) -> Result<()> {
    register_ifaces(ebpf, ifaces)?;
    load_xdp(ebpf, programs::XDP).map(|_| ())
}

/// Registers the interfaces' slots and the UDP port buckets, which both
/// dropscope's XDP program and observe mode's entry program read.
fn register_ifaces(ebpf: &mut Ebpf, ifaces: &[(String, u32)]) -> Result<()> {
    {
        let mut arr: Array<&mut MapData, u32> = Array::try_from(
            ebpf.map_mut(maps::IFACE_SLOT_ARRAY)
                .ok_or_else(|| anyhow!("map {} missing", maps::IFACE_SLOT_ARRAY))?,
        )?;
        for (slot, (_, ifindex)) in ifaces.iter().enumerate() {
            if *ifindex < drop_common::SLOT_ARRAY_IFINDEXES {
                arr.set(*ifindex, slot as u32 + 1, 0)?;
            }
        }
    }
    {
        let mut slots: BpfHashMap<&mut MapData, u32, u32> = BpfHashMap::try_from(
            ebpf.map_mut(maps::IFACE_SLOTS)
                .ok_or_else(|| anyhow!("map {} missing", maps::IFACE_SLOTS))?,
        )?;
        for (slot, (_, ifindex)) in ifaces.iter().enumerate() {
            slots.insert(ifindex, slot as u32, 0)?;
        }
    }
    {
        let buckets: Array<&MapData, u32> = Array::try_from(
            ebpf.map(maps::PORT_BUCKETS)
                .ok_or_else(|| anyhow!("map {} missing", maps::PORT_BUCKETS))?,
        )?;
        let mut entries: Vec<(u32, u32)> = (0..1024u32).map(|port| (port, port + 1)).collect();
        entries.extend(
            crate::ports::REFLECTOR_PORTS_HIGH
                .iter()
                .enumerate()
                .take(UDP_EXTRA_PORTS as usize)
                .map(|(i, port)| (*port as u32, 1024 + i as u32 + 1)),
        );
        super::batch::update(buckets.map(), &entries)
            .with_context(|| format!("filling {}", maps::PORT_BUCKETS))?;
    }
    Ok(())
}

/// The XDP program `name` (one of `programs::XDP*`), loaded once.
fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("{name} missing from the object"))?
        .try_into()?;
    if prog.fd().is_ok() {
        return Ok(prog);
    }
    prog.load().context("loading the XDP program")?;
    // How close the program is to the verifier's limit (1M) on this
    // kernel; the kernel matrix tests print it (Linux 5.16+ reports it).
    if std::env::var_os("DROPSCOPE_VERIFIER_STATS").is_some()
        && let Ok(info) = prog.info()
        && let Some(n) = info.verified_instruction_count()
    {
        eprintln!("debug: {name}: the verifier processed {n} instructions");
    }
    Ok(prog)
}

/// Attaches in the first mode that works; with `auto` falling back to
/// generic, also says why native failed.
fn attach_one(
    prog: &mut Xdp,
    name: &str,
    ifindex: u32,
    choice: XdpChoice,
) -> Result<(Hook, Option<String>)> {
    let tries: &[(XdpMode, Hook)] = match choice {
        XdpChoice::Auto => &[
            (XdpMode::Driver, Hook::Native),
            (XdpMode::Skb, Hook::Generic),
        ],
        XdpChoice::Native => &[(XdpMode::Driver, Hook::Native)],
        XdpChoice::Generic => &[(XdpMode::Skb, Hook::Generic)],
        XdpChoice::None | XdpChoice::Observe => &[],
    };
    let mut last_err = None;
    let mut native_err = None;
    for (mode, label) in tries {
        match prog.attach_to_if_index(ifindex, *mode) {
            Ok(_) => return Ok((*label, native_err)),
            Err(e) => {
                if *mode == XdpMode::Driver {
                    // The error and its causes, on one line.
                    let mut why = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        why = format!("{why}: {c}");
                        cause = c.source();
                    }
                    native_err = Some(why.replace('\n', " "));
                }
                last_err = Some(e)
            }
        }
    }
    match last_err {
        Some(e) => {
            let msg = format!("{e:?} {e}");
            let busy = ["EBUSY", "EEXIST", "Device or resource busy", "File exists"]
                .iter()
                .any(|k| msg.contains(k));
            if busy {
                bail!(
                    "interface {name} already has an XDP program attached: pass --xdp-mode auto or observe to observe it in place, or none"
                );
            }
            Err(anyhow::Error::new(e).context(format!(
                "attaching XDP to {name} (try --xdp-mode generic, or none)"
            )))
        }
        None => bail!("no XDP mode to attach {name} with"),
    }
}

/// Follows the XDP hook of an observed interface: a replaced program is
/// observed in its place; a removed one leaves the hook free, which
/// dropscope's own program takes (unless `--xdp-mode observe`, which waits
/// for the next program). Returns what changed, for a `note:` line, or
/// None when nothing did.
pub(crate) fn follow_observed(
    probes: &mut Probes,
    name: &str,
    ifindex: u32,
    choice: XdpChoice,
) -> Option<String> {
    let mode = probes.xdp_modes.iter().position(|(n, _)| n == name)?;
    let observed = probes.observer.root_on(ifindex);
    // Only hooks held by another program: dropscope's own is never displaced.
    if !matches!(probes.xdp_modes[mode].1, Hook::Observe | Hook::Taken) {
        return None;
    }
    let now = xdp_link::attached(ifindex).ok()?.into_iter().next();
    if now.map(|(_, id)| id) == observed {
        return None;
    }
    probes.observer.forget(ifindex);
    let was = observed.map_or("none".to_string(), |id| format!("id {id}"));
    let note = match now {
        Some((attach, id)) => {
            let mut notes = Vec::new();
            match probes
                .observer
                .observe(&mut probes.ebpf, name, ifindex, attach, id, &mut notes)
            {
                Ok(line) => {
                    probes.xdp_modes[mode].1 = Hook::Observe;
                    format!("{name}: its XDP program changed ({was} -> id {id}): {line}")
                }
                Err(e) => {
                    probes.xdp_modes[mode].1 = Hook::Taken;
                    probes.observer.forget(ifindex);
                    probes.observer.tried(ifindex, id);
                    format!(
                        "{name}: its XDP program changed ({was} -> id {id}) and cannot be observed: {}",
                        one_line(&e)
                    )
                }
            }
        }
        None if choice == XdpChoice::Observe => format!(
            "{name}: the observed XDP program ({was}) is gone: --xdp-mode observe waits for the next one"
        ),
        None => {
            // xdp_modes holds one entry per watched interface, in slot order.
            let took = load_xdp(&mut probes.ebpf, programs::xdp_for_slot(mode))
                .and_then(|prog| attach_one(prog, name, ifindex, XdpChoice::Auto).map(|(m, _)| m));
            match took {
                Ok(m) => {
                    probes.xdp_modes[mode].1 = m;
                    format!(
                        "{name}: the observed XDP program ({was}) is gone: dropscope's own program took the free hook ({m})"
                    )
                }
                Err(e) => format!(
                    "{name}: the observed XDP program ({was}) is gone and the hook could not be taken: {}",
                    one_line(&e)
                ),
            }
        }
    };
    for p in &probes.observer.progs {
        probes.reasons.observe(p.slot, &p.name);
    }
    probes.maps.observed = probes.observer.slots_used();
    Some(note)
}

/// A watched interface came back with a new ifindex (deleted and
/// recreated): point its slot at the new index and attach XDP again.
pub(crate) fn reattach(
    ebpf: &mut Ebpf,
    slot: usize,
    name: &str,
    old: u32,
    new: u32,
    choice: XdpChoice,
) -> Result<Hook> {
    {
        let mut arr: Array<&mut MapData, u32> = Array::try_from(
            ebpf.map_mut(maps::IFACE_SLOT_ARRAY)
                .ok_or_else(|| anyhow!("map {} missing", maps::IFACE_SLOT_ARRAY))?,
        )?;
        if old < drop_common::SLOT_ARRAY_IFINDEXES {
            arr.set(old, 0, 0)?;
        }
        if new < drop_common::SLOT_ARRAY_IFINDEXES {
            arr.set(new, slot as u32 + 1, 0)?;
        }
    }
    {
        let mut slots: BpfHashMap<&mut MapData, u32, u32> = BpfHashMap::try_from(
            ebpf.map_mut(maps::IFACE_SLOTS)
                .ok_or_else(|| anyhow!("map {} missing", maps::IFACE_SLOTS))?,
        )?;
        let _ = slots.remove(&old);
        slots.insert(new, slot as u32, 0)?;
    }
    let prog = load_xdp(ebpf, programs::xdp_for_slot(slot))?;
    attach_one(prog, name, new, choice).map(|(mode, _)| mode)
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSymbol};

    use super::{EBPF_OBJECT, TEST_OBJECT};

    fn symbols(elf: &[u8]) -> Vec<String> {
        let f = object::File::parse(elf).expect("the built eBPF object parses as ELF");
        f.symbols()
            .filter_map(|s| s.name().ok().map(str::to_string))
            .collect()
    }

    /// Every map, program and global the user side looks up by name is in
    /// the object it loads (no root needed: the ELF is only parsed), and
    /// the test-only programs are not in the production object.
    #[test]
    fn every_name_user_space_looks_up_is_in_the_object() {
        use drop_common::{flood_maps, globals, maps, programs};
        let prod = symbols(EBPF_OBJECT);
        for name in maps::ALL
            .iter()
            .chain(&flood_maps::ALL)
            .chain(&globals::ALL)
            .chain(&programs::ALL)
            .chain(&programs::XDP_EXIT)
            .chain(&programs::XDP_SLOT)
        {
            assert!(
                prod.iter().any(|s| s == name),
                "{name} missing from drop-ebpf"
            );
        }
        for name in [
            programs::GENERATOR,
            programs::PASS,
            programs::TOUCH,
            programs::KFREE_EMPTY,
            globals::GEN_CONFIG,
        ] {
            assert!(!prod.iter().any(|s| s == name), "{name} ships in drop-ebpf");
            assert!(
                symbols(TEST_OBJECT).iter().any(|s| s == name),
                "{name} missing from drop-ebpf-test"
            );
        }
    }
}
