// cpu_load.h: how much CPU other processes used while a benchmark ran (shared machines).
// Owns nothing: reads /proc/stat (the whole machine) and /proc/self/stat (this process, all its
// threads) at two moments; the difference is the neighbours' share. Linux only; elsewhere it
// reports -1. Resolution is the kernel's clock tick (USER_HZ, usually 10 ms per core), so keep
// the sampled window well above that (the benches sample a whole case or phase, not a run).
#pragma once
#include <cstdio>

struct CpuSample {
    long long busy = 0;   // ticks, all cores: user+nice+system+irq+softirq+steal
    long long total = 0;  // ticks, all cores, idle and iowait included
    long long ours = 0;   // ticks of this process (utime+stime, all threads)
};

inline CpuSample cpu_sample() {
    CpuSample s;
#ifdef __linux__
    if (FILE* f = std::fopen("/proc/stat", "r")) {
        long long v[8] = {0};  // user nice system idle iowait irq softirq steal
        if (std::fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                        &v[6], &v[7]) == 8) {
            s.busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
            s.total = s.busy + v[3] + v[4];
        }
        std::fclose(f);
    }
    if (FILE* f = std::fopen("/proc/self/stat", "r")) {
        // fields 14 and 15 (utime, stime) after "pid (comm) state"; comm has no ')' for our binaries
        long long ut = 0, st = 0;
        if (std::fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &ut, &st) == 2)
            s.ours = ut + st;
        std::fclose(f);
    }
#endif
    return s;
}

// Percent of the machine's CPU (all cores = 100) that other processes used between a and b;
// -1 when unknown or the window is too short to tell (under 20 ticks over all cores).
inline double cpu_others_pct(const CpuSample& a, const CpuSample& b) {
    const long long total = b.total - a.total;
    if (a.total == 0 || total < 20) return -1;
    const long long others = (b.busy - a.busy) - (b.ours - a.ours);
    return others <= 0 ? 0.0 : 100.0 * others / total;
}
