/* The ring's C core driven from C (bench/test_ring_bench.py, case "c-core").
 *
 * Links csrc/ring.c unchanged and runs the real protocol over a real ring
 * file (created by the benchmark with ring.create): a tethered reader slot is
 * claimed, then the process forks; the parent is the producer (ring_write per
 * frame, ts = 0 so the core stamps CLOCK_REALTIME itself, CRC32C as always),
 * the child the reader (ring_read_batch up to 4096 frames, ring_reader_commit
 * once per batch, ring_wait with a long spin when it has caught up).  Set
 * against ref_ring.c this isolates what the core costs over the textbook
 * ring; set against the Python case it isolates the cost of the Python call.
 *
 * Usage: ring_core_bench -f RING_FILE -s FRAME_BYTES -n FRAMES [-p CPU] [-r CPU] [-v]
 *                        [-L INTERVAL_NS -w SPIN_NS]
 *   -v: the reader verifies every frame's CRC32C.
 *   -L: latency mode: one frame every INTERVAL_NS (the core stamps it); the
 *       reader waits with ring_wait(spin = SPIN_NS; 0 = yield 50 us, then
 *       futex) and records ring_now_ns() - ts after ring_read_batch returns.
 * Prints one JSON line (throughput: payload GB/s, 1e9 B/s; latency: ns).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ring.h"

#define BATCH 4096

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static void xwrite(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n) {
        perror("write");
        _exit(1);
    }
}

static void xread(int fd, void *p, size_t n)
{
    if (read(fd, p, n) != (ssize_t)n) {
        perror("read");
        _exit(1);
    }
}

struct result {
    int64_t t_end;
    uint64_t frames;
    uint64_t batches;
    uint64_t waits;
    int status;
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void pace(int64_t deadline)
{
    int64_t left = deadline - mono_ns();
    if (left > 150000) {
        struct timespec ts = {0, left - 100000};
        nanosleep(&ts, NULL);
    }
    while (mono_ns() < deadline)
        ;
}

/* Latency mode, reader side: one sample per frame, percentiles to res_fd. */
static void lat_reader(uint8_t *base, int slot, uint64_t pos, uint64_t seq, uint64_t nframes,
                       uint64_t spin_ns, int ready_fd, int res_fd)
{
    static uint64_t a_pos[BATCH], a_seq[BATCH];
    static uint32_t a_size[BATCH];
    static int64_t a_ts[BATCH];
    static uint8_t a_type[BATCH], a_flags[BATCH];
    static uint16_t a_conn[BATCH];
    ring_batch_t b = {a_pos, a_size, a_seq, a_ts, a_type, a_flags, a_conn, BATCH, UINT64_MAX, 0, 0, 0};
    int64_t *lat = malloc(nframes * sizeof *lat);
    uint64_t got = 0;
    int64_t out[6] = {0, 0, 0, 0, 0, 0};
    char c = 'r';
    xwrite(ready_fd, &c, 1);
    while (got < nframes) {
        if (ring_read_batch(base, &pos, &seq, &b, 0) != RING_READ_OK)
            break;
        if (b.n == 0) {
            if (!ring_wait(base, slot, pos, seq, spin_ns, 5000000000ull))
                break;
            continue;
        }
        int64_t now = ring_now_ns();
        for (uint32_t i = 0; i < b.n && got < nframes; i++)
            lat[got++] = now - a_ts[i];
        ring_reader_commit(base, slot, pos, seq, b.n, 0);
    }
    uint64_t warm = got / 20;
    if (got > warm + 10) {
        int64_t *v = lat + warm;
        uint64_t m = got - warm;
        qsort(v, m, sizeof *v, cmp_i64);
        out[0] = (int64_t)m;
        out[1] = v[m / 2];
        out[2] = v[(uint64_t)(m * 0.99)];
        out[3] = v[(uint64_t)(m * 0.999)];
        out[4] = v[m - 1];
    }
    out[5] = (int64_t)got;
    xwrite(res_fd, out, sizeof out);
}

static void reader(uint8_t *base, int slot, uint64_t pos, uint64_t seq, uint64_t nframes, int verify,
                   int ready_fd, int res_fd)
{
    static uint64_t a_pos[BATCH], a_seq[BATCH];
    static uint32_t a_size[BATCH];
    static int64_t a_ts[BATCH];
    static uint8_t a_type[BATCH], a_flags[BATCH];
    static uint16_t a_conn[BATCH];
    ring_batch_t b = {a_pos, a_size, a_seq, a_ts, a_type, a_flags, a_conn, BATCH, UINT64_MAX, 0, 0, 0};
    struct result r = {0, 0, 0, 0, 0};
    char c = 'r';
    xwrite(ready_fd, &c, 1);
    while (r.frames < nframes) {
        int st = ring_read_batch(base, &pos, &seq, &b, verify);
        if (st != RING_READ_OK) {
            r.status = st;
            break;
        }
        if (b.n == 0) {
            r.waits++;
            if (!ring_wait(base, slot, pos, seq, 1000000000ull, 5000000000ull)) {
                r.status = -1;
                break;
            }
            continue;
        }
        for (uint32_t i = 0; i < b.n; i++)
            r.frames += a_type[i] == RING_T_DATA;
        r.batches++;
        ring_reader_commit(base, slot, pos, seq, b.n, 0);
    }
    r.t_end = mono_ns();
    xwrite(res_fd, &r, sizeof r);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    uint32_t plen = 256;
    uint64_t nframes = 1000000;
    int cpu_prod = -1, cpu_cons = -1, verify = 0, opt;
    int64_t interval = 0;
    uint64_t spin_ns = 0;
    while ((opt = getopt(argc, argv, "f:s:n:p:r:vL:w:")) != -1) {
        switch (opt) {
        case 'f': path = optarg; break;
        case 's': plen = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'n': nframes = strtoull(optarg, NULL, 0); break;
        case 'p': cpu_prod = atoi(optarg); break;
        case 'r': cpu_cons = atoi(optarg); break;
        case 'v': verify = 1; break;
        case 'L': interval = strtoll(optarg, NULL, 0); break;
        case 'w': spin_ns = strtoull(optarg, NULL, 0); break;
        default:
            fprintf(stderr, "usage: %s -f RING -s FRAME_BYTES -n FRAMES [-p CPU] [-r CPU] [-v]\n", argv[0]);
            return 1;
        }
    }
    if (!path)
        return 1;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(path);
        return 1;
    }
    uint8_t *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    if (ring_version(base) != RING_VERSION) {
        fprintf(stderr, "%s: not a ring file of this version\n", path);
        return 1;
    }
    uint64_t pos, seq;
    ring_head(base, &pos, &seq);
    int slot = -1;
    for (int s = 0; s < RING_MAX_READERS && slot < 0; s++)
        slot = ring_reader_claim(base, s, "bench-c-core", 1, (uint32_t)getpid(), pos, seq, ring_now_ns());
    if (slot < 0) {
        fprintf(stderr, "no free reader slot\n");
        return 1;
    }
    int ready[2], res[2];
    if (pipe(ready) || pipe(res))
        return 1;
    pid_t child = fork();
    if (child == 0) {
        pin(cpu_cons);
        if (interval > 0)
            lat_reader(base, slot, pos, seq, nframes, spin_ns, ready[1], res[1]);
        else
            reader(base, slot, pos, seq, nframes, verify, ready[1], res[1]);
        _exit(0);
    }
    pin(cpu_prod);
    ring_producer_t p;
    ring_producer_open(&p, base, (uint32_t)getpid(), ring_now_ns());
    uint8_t *payload = malloc(plen ? plen : 1);
    for (uint32_t i = 0; i < plen; i++)
        payload[i] = (uint8_t)(i * 131 + 7);
    char c;
    xread(ready[0], &c, 1);
    uint64_t full = 0;
    if (interval > 0) {
        uint64_t w0 = 0;
        ring_stats_t s0;
        ring_get_stats(base, &s0);
        w0 = s0.wakes;
        int64_t next = mono_ns();
        for (uint64_t i = 0; i < nframes; i++) {
            next += interval;
            pace(next);
            while (ring_write(&p, payload, plen, RING_T_DATA, 0, 0, 0) < 0)
                full++;
        }
        int64_t out[6];
        xread(res[0], out, sizeof out);
        int wst;
        waitpid(child, &wst, 0);
        ring_get_stats(base, &s0);
        ring_producer_close(&p, ring_now_ns());
        ring_reader_release(base, slot);
        printf("{\"n\": %lld, \"p50_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, \"max_us\": %.3f, "
               "\"frames\": %lld, \"futex_wakes_per_frame\": %.3f}\n", (long long)out[0], out[1] / 1e3,
               out[2] / 1e3, out[3] / 1e3, out[4] / 1e3, (long long)out[5],
               (double)(s0.wakes - w0) / (double)(out[5] ? out[5] : 1));
        return out[5] == (int64_t)nframes ? 0 : 3;
    }
    int64_t t0 = mono_ns();
    for (uint64_t i = 0; i < nframes; i++) {
        while (ring_write(&p, payload, plen, RING_T_DATA, 0, 0, 0) < 0)
            full++;
    }
    int64_t t_written = mono_ns();
    struct result r;
    xread(res[0], &r, sizeof r);
    int wst;
    waitpid(child, &wst, 0);
    ring_stats_t s;
    ring_get_stats(base, &s);
    ring_producer_close(&p, ring_now_ns());
    ring_reader_release(base, slot);
    double secs = (double)(r.t_end - t0) / 1e9;
    printf("{\"frames\": %llu, \"frame_bytes\": %u, \"seconds\": %.6f, \"write_seconds\": %.6f, "
           "\"frames_per_s\": %.1f, \"gb_per_s\": %.4f, \"full_retries\": %llu, \"reader_status\": %d, "
           "\"batches\": %llu, \"reader_waits\": %llu, \"wakes\": %llu, \"crc_hw\": %d}\n",
           (unsigned long long)r.frames, plen, secs, (double)(t_written - t0) / 1e9,
           r.frames / secs, r.frames * (double)plen / secs / 1e9, (unsigned long long)full, r.status,
           (unsigned long long)r.batches, (unsigned long long)r.waits, (unsigned long long)s.wakes,
           ring_crc32c_hw());
    return r.status == 0 && r.frames == nframes ? 0 : 3;
}
