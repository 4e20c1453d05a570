#!/usr/bin/env python3
"""Host TSC frequency in kHz, for the guest's `tsc_early_khz=` under TCG.

Under TCG a guest's RDTSC returns the host's TSC (QEMU's cpu_get_host_ticks), so the
guest must be told the host's TSC rate or it calibrates against the emulated PIT and
can hang ("Marking TSC unstable"). Method, no dmesg and no privileges needed:
  1. measure: execute RDTSC (10 bytes of machine code in an executable mmap, called
     through ctypes) bracketing CLOCK_MONOTONIC_RAW reads, 3 x 100 ms, take the median
     (~0.3 s; agrees with the host kernel's "tsc: Detected ... MHz" within ~20 ppm);
  2. fall back to /proc/cpuinfo "cpu MHz" x 1000 (that is cpu_khz, equal to tsc_khz in
     VMs without a cpufreq driver, but the current clock on hosts that have one).
"""
import ctypes
import mmap
import platform
import statistics
import time

# rdtsc; shl rdx,32; or rax,rdx; ret
_RDTSC = b"\x0f\x31\x48\xc1\xe2\x20\x48\x09\xd0\xc3"


def _rdtsc_func():
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(_RDTSC)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
    fn._keep = buf  # keep the mapping alive as long as the function
    return fn


def _stamp(rdtsc, clock, tries=20):
    """(tsc, ns) read back to back; keeps the pair whose TSC bracket is narrowest."""
    best = None
    for _ in range(tries):
        a = rdtsc()
        t = time.clock_gettime_ns(clock)
        b = rdtsc()
        if best is None or b - a < best[0]:
            best = (b - a, (a + b) // 2, t)
    return best[1], best[2]


def measured_khz(interval=0.1, samples=3):
    rdtsc = _rdtsc_func()
    rdtsc()  # first call through ctypes is slow
    clock = time.CLOCK_MONOTONIC_RAW
    rates = []
    for _ in range(samples):
        c0, t0 = _stamp(rdtsc, clock)
        time.sleep(interval)
        c1, t1 = _stamp(rdtsc, clock)
        rates.append((c1 - c0) * 1_000_000 / (t1 - t0))  # ticks per ns * 1e6 = kHz
    return round(statistics.median(rates))


def cpuinfo_khz():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return round(float(line.split(":")[1]) * 1000)
    return None


def tsc_khz():
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            return measured_khz()
        except (OSError, ValueError, AttributeError):
            pass
    return cpuinfo_khz()


if __name__ == "__main__":
    m = measured_khz()
    print(f"measured {m} kHz; /proc/cpuinfo cpu MHz -> {cpuinfo_khz()} kHz; "
          f"diff {abs(m - cpuinfo_khz()) / cpuinfo_khz() * 1e6:.0f} ppm")
