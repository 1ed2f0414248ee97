#!/usr/bin/env python3
"""Writes a small valid BTF blob for the btf fuzz target's seed corpus: the
structs the daemon looks up (kernel/offsets.rs) taken from a real kernel's
BTF, pointers cut to `void *`, ids and strings renumbered. The whole vmlinux
BTF (5+ MB) is too big to commit, and a fuzzer mutates a small blob faster.
Of each struct only the members the daemon looks up and anonymous ones
(which may hold them) are kept, at their real offsets; --full keeps all.

    python3 fuzz/seeds/btf_subset.py [--full] [/sys/kernel/btf/vmlinux] OUT
"""
import struct
import sys

ROOTS = [
    "task_struct", "task_io_accounting", "mm_struct", "percpu_counter",
    "css_set", "cgroup", "kernfs_node", "signal_struct", "cgroup_subsys_state",
]
TYPEDEF_ROOTS = ["btf_trace_sched_process_exit"]
# Every member name on a path the daemon looks up.
MEMBERS = {
    "flags", "cgroups", "se", "sum_exec_runtime", "sched_info", "run_delay",
    "nvcsw", "nivcsw", "min_flt", "maj_flt", "ioac", "signal", "thread_node",
    "mm", "dfl_cgrp", "kn", "id", "thread_head", "live", "subsys", "cgroup",
    "rss_stat", "count", "mm_users", "rchar", "wchar", "syscr", "syscw",
    "read_bytes", "write_bytes",
}
# Extra bytes after the 12-byte common header, by kind; vlen-sized ones below.
FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


def parse(data):
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    assert magic == 0xEB9F, "not little-endian BTF"
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    types = [None]  # id 0 is void
    at, end = hdr_len + type_off, hdr_len + type_off + type_len
    while at < end:
        name_off, info, size_or_type = struct.unpack_from("<III", data, at)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        extra = FIXED.get(kind, 0) + PER_VLEN.get(kind, 0) * vlen
        types.append((name_off, info, size_or_type, data[at + 12 : at + 12 + extra]))
        at += 12 + extra
    return types, strings


def name(strings, off):
    return strings[off : strings.index(b"\0", off)].decode()


def prune(types, strings, i):
    """Struct or union `i` with only the members looked up, and anonymous ones."""
    name_off, info, size, extra = types[i]
    members = [extra[12 * m : 12 * m + 12] for m in range(info & 0xFFFF)]
    kept = [m for m in members if struct.unpack_from("<I", m)[0] == 0
            or name(strings, struct.unpack_from("<I", m)[0]) in MEMBERS]
    return (name_off, (info & ~0xFFFF) | len(kept), size, b"".join(kept))


def main():
    args = sys.argv[1:]
    full = "--full" in args
    args = [a for a in args if a != "--full"]
    src, out = (args[0], args[1]) if len(args) > 1 else ("/sys/kernel/btf/vmlinux", args[0])
    types, strings = parse(open(src, "rb").read())
    if not full:
        types = [t if t is None or (t[1] >> 24) & 0x1F not in (4, 5) else prune(types, strings, i)
                 for i, t in enumerate(types)]
    kind = lambda t: (types[t][1] >> 24) & 0x1F if t else 0
    by_name = {}
    for i, t in enumerate(types[1:], 1):
        by_name.setdefault((kind(i), name(strings, t[0])), i)
    keep, todo = [], [by_name[(4, n)] for n in ROOTS] + [by_name[(8, n)] for n in TYPEDEF_ROOTS]
    seen = set()

    def refs(i):
        """Type ids that `i` refers to and that are kept (pointers excepted)."""
        name_off, info, ref, extra = types[i]
        k, vlen = kind(i), info & 0xFFFF
        if k in (8, 9, 10, 11, 18):
            return [ref]
        if k == 2:
            return [ref]
        if k == 3:
            return list(struct.unpack_from("<II", extra, 0))
        if k in (4, 5):
            return [struct.unpack_from("<III", extra, 12 * m)[1] for m in range(vlen)]
        if k == 13:
            return [ref] + [struct.unpack_from("<II", extra, 8 * m)[1] for m in range(vlen)]
        return []

    while todo:
        i = todo.pop()
        # Pointers become the shared `void *`, but for the tracepoint's.
        if i == 0 or i in seen or (kind(i) == 2 and kind(types[i][2]) != 13):
            continue
        seen.add(i)
        keep.append(i)
        todo.extend(refs(i))
    keep.sort()
    # New id 1 is `void *`, for every pointer cut.
    new_id = {old: n + 2 for n, old in enumerate(keep)}
    new_strings, string_at = bytearray(b"\0"), {"": 0}

    def intern(off):
        s = name(strings, off)
        if s not in string_at:
            string_at[s] = len(new_strings)
            new_strings.extend(s.encode() + b"\0")
        return string_at[s]

    def tid(old):
        return 0 if old == 0 else new_id.get(old, 1)

    out_types = bytearray(struct.pack("<III", 0, 2 << 24, 0))
    for i in keep:
        name_off, info, ref, extra = types[i]
        k, vlen = kind(i), info & 0xFFFF
        extra = bytearray(extra)
        if k in (2, 8, 9, 10, 11, 18, 12):
            ref = tid(ref)
        elif k == 13:
            ref = tid(ref)
            for m in range(vlen):
                p_name, p_type = struct.unpack_from("<II", extra, 8 * m)
                struct.pack_into("<II", extra, 8 * m, intern(p_name), tid(p_type))
        elif k == 3:
            elem, index, count = struct.unpack_from("<III", extra, 0)
            struct.pack_into("<III", extra, 0, tid(elem), tid(index), count)
        elif k in (4, 5):
            for m in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", extra, 12 * m)
                struct.pack_into("<III", extra, 12 * m, intern(m_name), tid(m_type), m_off)
        elif k in (6, 19):
            step = PER_VLEN[k]
            for m in range(vlen):
                (e_name,) = struct.unpack_from("<I", extra, step * m)
                struct.pack_into("<I", extra, step * m, intern(e_name))
        out_types += struct.pack("<III", intern(name_off), info, ref) + extra
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(out_types), len(out_types), len(new_strings))
    open(out, "wb").write(header + out_types + new_strings)
    print(f"{out}: {len(keep) + 1} types, {len(header) + len(out_types) + len(new_strings)} bytes")


main()
