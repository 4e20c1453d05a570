#!/usr/bin/env python3
"""Write the probe's test initramfs (gzip'd newc cpio) with a /init and, for a modular
kernel, the modules it needs in dependency order.

  mkinitramfs.py OUT.cpio.gz INIT [--moddir DIR/lib/modules/REL --modules virtio_mmio ...]

--print-order only prints the dependency-ordered module list (from modules.dep).
"""
import argparse
import gzip
import os
import stat
import sys


def modules_in_order(moddir, wanted):
    """Dependency-ordered .ko paths (relative to moddir) for the named modules."""
    deps, byname = {}, {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            name = os.path.basename(path).split(".ko")[0].replace("-", "_")
            byname[name] = path
    builtin = set()
    try:
        with open(os.path.join(moddir, "modules.builtin")) as f:
            builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_") for l in f}
    except FileNotFoundError:
        pass
    order, seen = [], set()

    def visit(path):
        if path in seen:
            return
        seen.add(path)
        for d in deps[path]:
            visit(d)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in byname:
            visit(byname[key])
        elif key in builtin:
            print(f"{name}: built in", file=sys.stderr)
        else:
            sys.exit(f"module {name} not found in {moddir}")
    return order


class Cpio:
    def __init__(self):
        self.out, self.ino = bytearray(), 1

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.out += hdr.encode() + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def finish(self):
        self.ino = 0
        self.add("TRAILER!!!", 0)
        return bytes(self.out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?")
    ap.add_argument("init", nargs="?")
    ap.add_argument("--moddir")
    ap.add_argument("--modules", nargs="*", default=[])
    ap.add_argument("--print-order", action="store_true")
    a = ap.parse_args()
    mods = modules_in_order(a.moddir, a.modules) if a.modules else []
    if a.print_order:
        for m in mods:
            size = os.path.getsize(os.path.join(a.moddir, m))
            print(f"{m}  ({size} bytes)")
        return
    c = Cpio()
    for d in ("dev", "proc", "sys", "mnt"):
        c.add(d, stat.S_IFDIR | 0o755)
    c.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    with open(a.init, "rb") as f:
        c.add("init", stat.S_IFREG | 0o755, f.read())
    if mods:
        c.add("modules", stat.S_IFDIR | 0o755)
        for i, m in enumerate(mods):
            with open(os.path.join(a.moddir, m), "rb") as f:
                c.add(f"modules/{i:02d}-{os.path.basename(m)}", stat.S_IFREG | 0o644, f.read())
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(c.finish(), 6, mtime=0))
    os.rename(tmp, a.out)


if __name__ == "__main__":
    main()
