//! Observe mode: an interface whose XDP hook is taken (xdp-filter, a libxdp
//! dispatcher, a load balancer) is watched in place with fentry/fexit on
//! the program already there, never by replacing it. The entry program is
//! loaded once per observed interface (loaded, attached, its link kept,
//! then unloaded to load again for the next); each observed program (or
//! dispatcher component) takes one exit program, i.e. one slot.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{
        FEntry, FExit, ProgramFd, ProgramInfo, fentry::FEntryLink, fexit::FExitLink,
        loaded_programs,
    },
};
use drop_common::{MAX_OBSERVED, ObserveConfig, programs};

use crate::sys::{btf::KernelBtf, xdp_link::XdpAttach};

/// libxdp's dispatcher: its components are attached to it with freplace
/// and pinned under bpffs, where xdp-loader finds them too.
const DISPATCHER: &str = "xdp_dispatcher";
const BPFFS_XDP: &str = "/sys/fs/bpf/xdp";

/// One observed program: a whole program, or one dispatcher component.
#[derive(Clone, Debug)]
pub(crate) struct ObservedProg {
    pub(crate) slot: u32,
    /// The interface (or interfaces, comma-separated) it runs on.
    pub(crate) iface: String,
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) mode: XdpAttach,
}

/// Everything observe mode attached; dropping it detaches all of it and
/// nothing else (the observed programs stay as they were).
/// A link on one observed program, shared by every interface that runs
/// it (one program may be attached to several: a second link would count
/// each packet twice).
struct Shared<L> {
    target: u32,
    users: Vec<u32>,
    _link: L,
}

#[derive(Default)]
pub(crate) struct Observer {
    entries: Vec<Shared<FEntryLink>>,
    /// (slot, link) per exit program in use.
    exits: Vec<(u32, Shared<FExitLink>)>,
    pub(crate) progs: Vec<ObservedProg>,
    /// (ifindex, id of the program attached there) for each interface
    /// observed now.
    roots: Vec<(u32, u32)>,
    next_slot: u32,
}

/// The kernel layout the observe programs read, from BTF.
pub(crate) fn config(btf: &KernelBtf, reason_xdp: u32) -> Result<ObserveConfig> {
    let buff_data = btf.member_offset("xdp_buff", &["data"])?;
    let buff_data_end = btf.member_offset("xdp_buff", &["data_end"])?;
    let buff_rxq = btf.member_offset("xdp_buff", &["rxq"])?;
    Ok(ObserveConfig {
        buff_data,
        buff_data_end,
        buff_rxq,
        buff_block: ((buff_data, buff_data_end, buff_rxq) == (0, 8, 32)) as u32,
        rxq_dev: btf.member_offset("xdp_rxq_info", &["dev"])?,
        dev_ifindex: btf.member_offset("net_device", &["ifindex"])?,
        dev_net: btf.member_offset("net_device", &["nd_net", "net"])?,
        net_inum: btf.member_offset("net", &["ns", "inum"])?,
        reason_xdp,
    })
}

fn info_by_id(id: u32) -> Result<ProgramInfo> {
    for p in loaded_programs() {
        let p = p.context("listing loaded BPF programs")?;
        if p.id() == id {
            return Ok(p);
        }
    }
    bail!("BPF program id {id} is gone")
}

fn name_of(info: &ProgramInfo) -> String {
    info.name_as_str().unwrap_or("?").to_string()
}

/// A dispatcher's components in run order (libxdp pins them as
/// `dispatch-<ifindex>-<dispatcher id>/prog<N>-prog`).
fn components(ifindex: u32, root_id: u32) -> Result<Vec<ProgramInfo>> {
    let dir = Path::new(BPFFS_XDP).join(format!("dispatch-{ifindex}-{root_id}"));
    let mut found = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("prog")
            .and_then(|r| r.strip_suffix("-prog"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            let info = ProgramInfo::from_pin(e.path())
                .with_context(|| format!("opening {}", e.path().display()))?;
            found.push((n, info));
        }
    }
    found.sort_by_key(|(n, _)| *n);
    Ok(found.into_iter().map(|(_, i)| i).collect())
}

impl Observer {
    /// Observes the program `root_id` attached to `iface` in `mode`.
    /// Returns what the start line says about it.
    pub(crate) fn observe(
        &mut self,
        ebpf: &mut Ebpf,
        iface: &str,
        ifindex: u32,
        mode: XdpAttach,
        root_id: u32,
        notes: &mut Vec<String>,
    ) -> Result<String> {
        if mode == XdpAttach::Offload {
            bail!(
                "{iface}: its XDP program (id {root_id}) is offloaded to the NIC, where no host program can observe it: pass --xdp-mode none"
            );
        }
        let root = info_by_id(root_id)?;
        let root_name = name_of(&root);
        let root_fd = root
            .fd()
            .with_context(|| format!("opening BPF program {root_id}"))?;
        // Verdicts: a dispatcher's components one by one, else the program.
        let mut targets: Vec<(u32, String, ProgramFd)> = Vec::new();
        if root_name == DISPATCHER {
            match components(ifindex, root_id) {
                Ok(c) if !c.is_empty() => {
                    for info in c {
                        let fd = info.fd()?;
                        targets.push((info.id(), name_of(&info), fd));
                    }
                }
                Ok(_) | Err(_) => notes.push(format!(
                    "{iface}: the libxdp dispatcher's components are not readable under {BPFFS_XDP}: its verdicts are counted as the dispatcher's"
                )),
            }
        }
        if targets.is_empty() {
            targets.push((root_id, root_name.clone(), root_fd.try_clone()?));
        }
        if self.next_slot as usize + targets.len() > MAX_OBSERVED as usize {
            bail!("{iface}: at most {MAX_OBSERVED} XDP programs can be observed at once");
        }
        // The entry goes on the first program that runs: a dispatcher's
        // first component (the kernel refuses a trampoline on the
        // dispatcher itself: EBUSY), else the program.
        let (first_id, first_name, first_fd) = &targets[0];
        match self.entries.iter_mut().find(|e| e.target == *first_id) {
            Some(e) => e.users.push(ifindex),
            None => {
                let link = self.attach_entry(ebpf, first_fd.try_clone()?, first_name)?;
                self.entries.push(Shared {
                    target: *first_id,
                    users: vec![ifindex],
                    _link: link,
                });
            }
        }
        drop(root_fd);
        let mut names = Vec::new();
        for (id, name, fd) in targets {
            // Already observed on another interface: its exit counts this
            // interface's packets too.
            if let Some((slot, x)) = self.exits.iter_mut().find(|(_, x)| x.target == id) {
                x.users.push(ifindex);
                if let Some(p) = self.progs.iter_mut().find(|p| p.slot == *slot) {
                    p.iface = format!("{},{iface}", p.iface);
                    names.push(format!("{name} id {id} (as on {})", p.iface));
                }
                continue;
            }
            let slot = self.next_slot;
            let link = self
                .attach_exit(ebpf, slot, fd, &name)
                .with_context(|| format!("{iface}: observing the verdicts of {name} (id {id})"))?;
            self.exits.push((
                slot,
                Shared {
                    target: id,
                    users: vec![ifindex],
                    _link: link,
                },
            ));
            self.next_slot += 1;
            names.push(format!("{name} id {id}"));
            self.progs.push(ObservedProg {
                slot,
                iface: iface.to_string(),
                id,
                name,
                mode,
            });
        }
        self.roots.push((ifindex, root_id));
        let what = if root_name == DISPATCHER && !names.is_empty() {
            format!("observing {DISPATCHER} id {root_id}: {}", names.join(", "))
        } else {
            format!("observing {}", names.join(", "))
        };
        Ok(format!("{what}; {}", mode.mode()))
    }

    fn attach_entry(
        &mut self,
        ebpf: &mut Ebpf,
        target: ProgramFd,
        name: &str,
    ) -> Result<FEntryLink> {
        let prog: &mut FEntry = ebpf
            .program_mut(programs::XDP_ENTRY)
            .ok_or_else(|| anyhow!("{} missing from the object", programs::XDP_ENTRY))?
            .try_into()?;
        if let Err(e) = prog.load_for_program(target, None) {
            let eperm = matches!(&e, aya::programs::ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::EPERM));
            if eperm {
                bail!(
                    "this kernel refuses tracing programs on other BPF programs (EPERM loading fentry on {name}; kernel policy, e.g. lockdown)"
                );
            }
            return Err(anyhow::Error::new(e).context(format!(
                "loading fentry on {name} (observe mode needs Linux 5.5+ and a program with BTF)"
            )));
        }
        verifier_stats(programs::XDP_ENTRY, prog.info().ok());
        let attached = prog.attach().and_then(|id| prog.take_link(id));
        // Unloaded either way: the link (kept) holds the program, and the
        // next interface loads it again against its own program.
        let _ = prog.unload();
        attached.with_context(|| format!("attaching fentry to {name}"))
    }

    fn attach_exit(
        &mut self,
        ebpf: &mut Ebpf,
        slot: u32,
        target: ProgramFd,
        name: &str,
    ) -> Result<FExitLink> {
        let pname = programs::XDP_EXIT[slot as usize];
        let prog: &mut FExit = ebpf
            .program_mut(pname)
            .ok_or_else(|| anyhow!("{pname} missing from the object"))?
            .try_into()?;
        prog.load_for_program(target, None)
            .with_context(|| format!("loading fexit on {name}"))?;
        let attached = prog.attach().and_then(|id| prog.take_link(id));
        let _ = prog.unload();
        attached.with_context(|| format!("attaching fexit to {name}"))
    }

    /// Detaches everything observing `ifindex` (its program went away or
    /// was replaced); the slots are not reused, so counts never mix.
    pub(crate) fn forget(&mut self, ifindex: u32) {
        // A link another interface still uses stays.
        for e in &mut self.entries {
            e.users.retain(|i| *i != ifindex);
        }
        self.entries.retain(|e| !e.users.is_empty());
        for (_, x) in &mut self.exits {
            x.users.retain(|i| *i != ifindex);
        }
        self.exits.retain(|(_, x)| !x.users.is_empty());
        self.roots.retain(|(i, _)| *i != ifindex);
    }

    /// Remembers that the program `root_id` on `ifindex` could not be
    /// observed: tried again only once another program replaces it.
    pub(crate) fn tried(&mut self, ifindex: u32, root_id: u32) {
        self.roots.push((ifindex, root_id));
    }

    /// The program observed (or last tried) on `ifindex`, if any.
    pub(crate) fn root_on(&self, ifindex: u32) -> Option<u32> {
        self.roots
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, r)| *r)
    }

    /// Slots handed out so far (the verdict rows user space reads).
    pub(crate) fn slots_used(&self) -> u32 {
        self.next_slot
    }
}

fn verifier_stats(name: &str, info: Option<ProgramInfo>) {
    if std::env::var_os("DROPSCOPE_VERIFIER_STATS").is_some()
        && let Some(n) = info.and_then(|i| i.verified_instruction_count())
    {
        eprintln!("debug: {name}: the verifier processed {n} instructions");
    }
}
