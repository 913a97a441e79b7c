#!/usr/bin/env python3
"""Where a JIT'd BPF program spends its samples, per source line.

Usage (as root, while the program is loaded):
  perf record -a -o perf.data -- sleep 20        # during the load
  perf script -i perf.data -F ip,sym,symoff | grep <prog tag>_dropscope_xdp \
    | awk '{print $2}' | sed 's/.*+0x//' | sort | uniq -c | awk '{print $2, $1}' > samples.txt
  bpftool prog dump xlated id <id> linum > xlated.txt
  tests/tools/bpf-lines.py <id> xlated.txt samples.txt

perf here cannot annotate BPF (no libopcode), bpftool cannot dump the JIT
image (no libbfd): this maps each sample's offset to the line record whose
JIT address (BPF_OBJ_GET_INFO_BY_FD's jited_line_info) precedes it, and
names the record from bpftool's xlated listing (same order).
"""
import ctypes, struct, sys, re, collections
libc = ctypes.CDLL(None, use_errno=True)
SYS_bpf = 321
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_bpf, cmd, buf, 128)
    if r < 0: raise OSError(ctypes.get_errno(), "bpf")
    return r
pid = int(sys.argv[1])
fd = bpf(13, struct.pack("I", pid))  # BPF_PROG_GET_FD_BY_ID
def info(buf):
    attr = struct.pack("IIQ", fd, len(buf), ctypes.addressof(buf))
    bpf(15, attr)  # BPF_OBJ_GET_INFO_BY_FD
    return buf
b = info(ctypes.create_string_buffer(256))
raw = bytes(b)
nr_jli = struct.unpack_from("I", raw, 168)[0]
nr_li = struct.unpack_from("I", raw, 148)[0]
li_rec = struct.unpack_from("I", raw, 172)[0]
jli_rec = struct.unpack_from("I", raw, 176)[0]
ksyms_n = struct.unpack_from("I", raw, 104)[0]
print("line infos", nr_li, nr_jli, li_rec, jli_rec, "ksyms", ksyms_n, file=sys.stderr)
jli = ctypes.create_string_buffer(nr_jli * 8)
li = ctypes.create_string_buffer(nr_li * li_rec)
ks = ctypes.create_string_buffer(ksyms_n * 8)
b2 = bytearray(256)
struct.pack_into("I", b2, 104, ksyms_n)
struct.pack_into("Q", b2, 112, ctypes.addressof(ks))
struct.pack_into("I", b2, 148, nr_li)
struct.pack_into("Q", b2, 152, ctypes.addressof(li))
struct.pack_into("Q", b2, 160, ctypes.addressof(jli))
struct.pack_into("I", b2, 168, nr_jli)
struct.pack_into("I", b2, 172, li_rec)
struct.pack_into("I", b2, 176, jli_rec)
bb = ctypes.create_string_buffer(bytes(b2), 256)
info(bb)
addrs = [struct.unpack_from("Q", jli.raw, 8*i)[0] for i in range(nr_jli)]
ksym = [struct.unpack_from("Q", ks.raw, 8*i)[0] for i in range(ksyms_n)]
base = ksym[0]
# Source text per line record, in order, from bpftool's xlated linum.
src = [l for l in open(sys.argv[2]) if l.startswith("; ")]
locs = []
for l in src:
    m = re.search(r"\[file:(\S+) line_num:(\d+)", l)
    code = l[2:l.rfind(" [file:")].strip()
    locs.append((m.group(1).split("/src/")[-1] + ":" + m.group(2), code[:70]))
print("src records", len(locs), file=sys.stderr)
# Samples: "offset count" lines (hex offset from the symbol).
samples = [(int(o, 16), int(c)) for o, c in (l.split() for l in open(sys.argv[3]))]
offs = sorted((a - base, i) for i, a in enumerate(addrs) if a >= base)
import bisect
keys = [o for o, _ in offs]
by_loc = collections.Counter()
total = 0
for off, c in samples:
    j = bisect.bisect_right(keys, off) - 1
    total += c
    if j < 0: by_loc["<prologue>"] += c; continue
    i = offs[j][1]
    by_loc[locs[i] if i < len(locs) else ("?", "")] += c
print("total samples", total)
for k, c in by_loc.most_common():
    print(f"{100*c/total:5.1f}% {c:5d}  {k}")
