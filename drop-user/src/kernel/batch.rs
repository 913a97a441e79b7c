//! BPF_MAP_LOOKUP_BATCH: a whole map in a few syscalls instead of two per
//! entry. Reading 65 536 tracked sources each interval one entry at a time
//! cost half a CPU core; batched it is a handful of calls.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
};

use aya::{Pod, maps::MapData};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// The kernel's internal "operation not supported" (not in libc).
const ENOTSUPP: i32 = 524;

/// `DROPSCOPE_NO_BATCH` set: behave as a kernel without batch lookups
/// (tests prove the per-key path on kernels that have them).
fn no_batch_simulated() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("DROPSCOPE_NO_BATCH").is_some())
}

/// Whether a batch call failed because this kernel has no batch lookup for
/// the map's type (rather than for a real error).
fn batch_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(ENOTSUPP) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// The map element commands on the map and buffers `attr` names.
fn bpf_elem(cmd: libc::c_long, attr: &mut ElemAttr) -> io::Result<()> {
    // SAFETY: attr is a valid bpf_attr prefix for the map element commands;
    // the pointers in it point at buffers sized for the map's key and value.
    unsafe { sys_bpf(cmd, attr) }
}

/// bpf(2) with `attr` as its attribute block.
///
/// # Safety
/// `attr` must be a valid `bpf_attr` prefix for `cmd`, and every pointer
/// in it must point at buffers the command may read and write.
unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: the caller's contract above.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One entry's per-CPU values (`ncpu` slots of `stride` bytes), summed.
fn sum_cpus<V: Pod + Default>(
    vals: &[u8],
    ncpu: usize,
    stride: usize,
    add: impl Fn(&mut V, &V),
) -> V {
    let mut total = V::default();
    for c in 0..ncpu {
        assert!((c + 1) * stride <= vals.len() && size_of::<V>() <= stride);
        // SAFETY: V is plain old data; the kernel filled these bytes and
        // the slot is in bounds (checked above).
        let v = unsafe { std::ptr::read_unaligned(vals.as_ptr().add(c * stride) as *const V) };
        add(&mut total, &v);
    }
    total
}

/// [`lookup_percpu`] one key at a time (BPF_MAP_GET_NEXT_KEY and
/// BPF_MAP_LOOKUP_ELEM), for kernels without batch lookups.
fn lookup_percpu_by_key<K: Pod, V: Pod + Default>(
    map: &MapData,
    limit: usize,
    add: impl Fn(&mut V, &V),
) -> io::Result<Vec<(K, V)>> {
    let ncpu = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let stride = size_of::<V>().div_ceil(8) * 8;
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut key = vec![0u8; size_of::<K>().max(1)];
    let mut next = vec![0u8; size_of::<K>().max(1)];
    let mut vals = vec![0u8; stride * ncpu];
    let mut out = Vec::new();
    let mut first = true;
    while out.len() < limit {
        let mut attr = ElemAttr {
            map_fd: fd,
            key: if first { 0 } else { key.as_ptr() as u64 },
            value_or_next_key: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        match bpf_elem(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_GET_NEXT_KEY: {e}"),
                ));
            }
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        let mut attr = ElemAttr {
            map_fd: fd,
            key: key.as_ptr() as u64,
            value_or_next_key: vals.as_mut_ptr() as u64,
            ..Default::default()
        };
        match bpf_elem(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => {}
            // Deleted (LRU eviction) between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_LOOKUP_ELEM: {e}"),
                ));
            }
        }
        // SAFETY: K is plain old data; the kernel filled these bytes.
        let k = unsafe { std::ptr::read_unaligned(key.as_ptr() as *const K) };
        out.push((k, sum_cpus(&vals, ncpu, stride, &add)));
    }
    Ok(out)
}

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One batch command (lookup or delete) on the map and buffers `attr`
/// names; the kernel writes back `count` (entries done) either way.
fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: attr is a valid bpf_attr for the batch commands; its keys
    // and values point at buffers holding `count` entries of the map's
    // key and (per-CPU) value sizes, as both callers size them.
    unsafe { sys_bpf(cmd, attr) }
}

/// A per-CPU map of u64 counters, summed over CPUs, as a map.
pub(super) fn counters<K: Pod + Eq + std::hash::Hash>(
    map: &MapData,
    limit: usize,
) -> io::Result<super::Table<K, u64>> {
    Ok(lookup_percpu::<K, u64>(map, limit, add_u64)?
        .into_iter()
        .collect())
}

/// Adds per-CPU u64 counters.
pub(super) fn add_u64(total: &mut u64, v: &u64) {
    *total += *v;
}

/// Every (key, value summed over CPUs with `add`) of a per-CPU hash or
/// array map, at most `limit` entries. Summed as read: no per-entry
/// allocation (a flood fills these tables every interval).
pub(super) fn lookup_percpu<K: Pod, V: Pod + Default>(
    map: &MapData,
    limit: usize,
    add: impl Fn(&mut V, &V),
) -> io::Result<Vec<(K, V)>> {
    let ncpu = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let stride = size_of::<V>().div_ceil(8) * 8;
    let chunk = 4096usize.min(limit.max(1));
    let mut keys = vec![0u8; chunk * size_of::<K>()];
    let mut vals = vec![0u8; chunk * stride * ncpu];
    // Opaque batch cursors: hash maps use a bucket index, arrays a key.
    let mut cur_in = [0u8; 64];
    let mut cur_out = [0u8; 64];
    let fd = map.fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let want = chunk.min(limit - out.len());
        if want == 0 {
            break;
        }
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cur_in.as_ptr() as u64 },
            out_batch: cur_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: want as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        let err = bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr).err();
        if first && (no_batch_simulated() || err.as_ref().is_some_and(batch_unsupported)) {
            // Older kernels lack batch lookups for some map types.
            return lookup_percpu_by_key(map, limit, add);
        }
        if let Some(e) = &err
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            return Err(io::Error::new(
                e.kind(),
                format!("BPF_MAP_LOOKUP_BATCH: {e}"),
            ));
        }
        for i in 0..attr.count as usize {
            // SAFETY: K is plain old data; the kernel filled these bytes.
            let k = unsafe {
                std::ptr::read_unaligned(keys.as_ptr().add(i * size_of::<K>()) as *const K)
            };
            let per_cpu = &vals[i * ncpu * stride..(i + 1) * ncpu * stride];
            out.push((k, sum_cpus(per_cpu, ncpu, stride, &add)));
        }
        if err.is_some() {
            break; // ENOENT: that was the last chunk.
        }
        cur_in = cur_out;
        first = false;
    }
    Ok(out)
}

/// Deletes `keys` from a hash map: one BPF_MAP_DELETE_BATCH call, or one
/// call per key on kernels without it. Keys already gone are no error.
pub(super) fn delete<K: Pod>(map: &MapData, keys: &[K]) -> io::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    if !no_batch_simulated() {
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd,
            ..Default::default()
        };
        let Err(e) = bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr) else {
            return Ok(());
        };
        if !batch_unsupported(&e) && e.raw_os_error() != Some(libc::ENOENT) {
            return Err(io::Error::new(
                e.kind(),
                format!("BPF_MAP_DELETE_BATCH: {e}"),
            ));
        }
        // ENOENT stops the batch at a key already gone (evicted since the
        // read): the rest, one by one.
        let done = attr.count as usize;
        return delete_by_key(fd, &keys[done.min(keys.len())..]);
    }
    delete_by_key(fd, keys)
}

fn delete_by_key<K: Pod>(fd: u32, keys: &[K]) -> io::Result<()> {
    for k in keys {
        let mut attr = ElemAttr {
            map_fd: fd,
            key: k as *const K as u64,
            ..Default::default()
        };
        match bpf_elem(BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_DELETE_ELEM: {e}"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes `entries` into a map (not per-CPU): one BPF_MAP_UPDATE_BATCH
/// call, or one call per entry on kernels without it. Filling the port
/// table at load was a thousand syscalls, a quarter second under
/// emulation.
pub(super) fn update<K: Pod, V: Pod>(map: &MapData, entries: &[(K, V)]) -> io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let vals: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let mut done = 0;
    if !no_batch_simulated() {
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: vals.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd,
            ..Default::default()
        };
        // SAFETY: keys and values hold `count` keys and values of the
        // map's sizes (K and V are the map's key and value types), as the
        // update batch command reads them.
        match unsafe { sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr) } {
            Ok(()) => return Ok(()),
            Err(e) if !batch_unsupported(&e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("BPF_MAP_UPDATE_BATCH: {e}"),
                ));
            }
            // The kernel reports how many it wrote before it gave up.
            Err(_) => done = (attr.count as usize).min(keys.len()),
        }
    }
    for (k, v) in keys[done..].iter().zip(&vals[done..]) {
        let mut attr = ElemAttr {
            map_fd: fd,
            key: k as *const K as u64,
            value_or_next_key: v as *const V as u64,
            ..Default::default()
        };
        bpf_elem(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map_err(|e| io::Error::new(e.kind(), format!("BPF_MAP_UPDATE_ELEM: {e}")))?;
    }
    Ok(())
}
