/* Plain-C reference for the ring benchmark (bench/test_ring_bench.py).
 *
 * The same ring logic as csrc/ring.c with everything that is not the ring
 * itself left out: one producer thread and one consumer thread share an SPSC
 * byte ring (shared anonymous mapping, like a tmpfs file) of 32-byte frame
 * headers + payloads, 8-byte aligned, a padding frame at the end of the data
 * area (or a skipped tail shorter than a header), positions as 64-bit byte
 * counters that only grow.  Publication is the textbook one: the producer
 * fills the frame with plain stores and release-stores `head` after every
 * frame; the consumer acquire-loads `head`, walks the frames (checking size
 * and sequence, reading the metadata a batch read returns) and
 * release-stores `tail` once per batch of up to 4096 frames.  The producer
 * caches `tail + capacity` and re-reads `tail` only when a frame would pass
 * it.  Both sides spin (pause) when they must wait.
 *
 * Left out on purpose (the ring pays for them; see RING_RESULTS.md):
 * CRC32C, the receive timestamp, shared counters, heartbeats, resume
 * checkpoints, the per-frame commit word, the wake-up protocol.  `-c` adds
 * CRC32C (hardware, one stream) and `-t` adds a CLOCK_REALTIME stamp per
 * frame, to show what those two cost.
 *
 * Usage: ref_ring -s FRAME_BYTES -n FRAMES [-C CAPACITY] [-p CPU] [-r CPU] [-c] [-t]
 * Prints one JSON line: frames, frame_bytes, seconds, frames_per_s, gb_per_s
 * (payload bytes, 1e9 B/s).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#define HDR 32
#define T_DATA 1
#define T_PADDING 3
#define BATCH 4096

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

struct ctl {
    _Alignas(128) uint64_t head;  /* producer: next write position */
    _Alignas(128) uint64_t tail;  /* consumer: everything before is consumed */
    _Alignas(128) int ready;
    _Alignas(128) char end;
};

static struct ctl *ctl;
static uint8_t *data;
static uint64_t cap = 4u << 20;
static uint32_t plen = 256;
static uint64_t nframes = 1000000;
static int opt_crc, opt_stamp;
static int cpu_prod = -1, cpu_cons = -1;
static int64_t t_start, t_end;
static uint64_t sink, full_spins;

static inline uint64_t align8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t r = ~c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        r = __builtin_ia32_crc32di(r, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        r = __builtin_ia32_crc32qi((uint32_t)r, *p++);
    return ~(uint32_t)r;
}
#else
static uint32_t crc32c(uint32_t c, const uint8_t *p, size_t n)
{
    c = ~c;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    }
    return ~c;
}
#endif

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *producer(void *arg)
{
    (void)arg;
    pin(cpu_prod);
    uint8_t *payload = malloc(plen ? plen : 1);
    for (uint32_t i = 0; i < plen; i++)
        payload[i] = (uint8_t)(i * 131 + 7);
    const uint64_t size = HDR + (uint64_t)plen, need = align8(size);
    uint64_t head = 0, limit = cap, seq = 0;
    while (!LOAD_ACQ(&ctl->ready))
        relax();
    t_start = now_ns(CLOCK_MONOTONIC);
    for (uint64_t i = 0; i < nframes; i++) {
        uint64_t left = cap - (head & (cap - 1));
        uint64_t skip = (left < HDR || left < need) ? left : 0;
        uint64_t end = head + skip + need;
        while (end > limit) {
            limit = LOAD_ACQ(&ctl->tail) + cap;
            if (end > limit) {
                full_spins++;
                relax();
            }
        }
        if (skip) {
            if (skip >= HDR) {
                uint8_t *ph = data + (head & (cap - 1));
                *(uint64_t *)(ph + 8) = seq;
                ph[24] = T_PADDING;
                *(uint64_t *)ph = skip | ((uint64_t)(uint32_t)seq << 32);
            }
            head += skip;
        }
        uint8_t *h = data + (head & (cap - 1));
        *(uint64_t *)(h + 8) = seq;
        *(int64_t *)(h + 16) = opt_stamp ? now_ns(CLOCK_REALTIME) : 0;
        h[24] = T_DATA;
        h[25] = 0;
        *(uint16_t *)(h + 26) = 0;
        *(uint64_t *)h = size | ((uint64_t)(uint32_t)seq << 32);
        memcpy(h + HDR, payload, plen);
        *(uint32_t *)(h + 28) = opt_crc ? crc32c(crc32c(0, h, 28), payload, plen) : 0;
        head += need;
        seq++;
        STORE_REL(&ctl->head, head);
    }
    free(payload);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    pin(cpu_cons);
    uint64_t pos = 0, seq = 0, avail = 0, got = 0, acc = 0;
    STORE_REL(&ctl->ready, 1);
    while (got < nframes) {
        avail = LOAD_ACQ(&ctl->head);
        if (avail == pos) {
            relax();
            continue;
        }
        uint32_t k = 0;
        while (pos < avail && k < BATCH) {
            uint64_t left = cap - (pos & (cap - 1));
            if (left < HDR) {
                pos += left;
                continue;
            }
            const uint8_t *h = data + (pos & (cap - 1));
            uint64_t cw = *(const uint64_t *)h;
            uint32_t size = (uint32_t)cw;
            if ((uint32_t)(cw >> 32) != (uint32_t)seq || *(const uint64_t *)(h + 8) != seq) {
                fprintf(stderr, "ref_ring: bad frame at %llu\n", (unsigned long long)pos);
                exit(2);
            }
            if (h[24] == T_PADDING) {
                pos += size;
                continue;
            }
            /* what a batch read hands out: position, length, seq, ts, type */
            acc += pos ^ size ^ *(const uint64_t *)(h + 16) ^ h[24];
            pos += align8(size);
            seq++;
            k++;
        }
        got += k;
        STORE_REL(&ctl->tail, pos);
    }
    t_end = now_ns(CLOCK_MONOTONIC);
    sink = acc;
    return NULL;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "s:n:C:p:r:ct")) != -1) {
        switch (opt) {
        case 's': plen = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'n': nframes = strtoull(optarg, NULL, 0); break;
        case 'C': cap = strtoull(optarg, NULL, 0); break;
        case 'p': cpu_prod = atoi(optarg); break;
        case 'r': cpu_cons = atoi(optarg); break;
        case 'c': opt_crc = 1; break;
        case 't': opt_stamp = 1; break;
        default:
            fprintf(stderr, "usage: %s -s FRAME_BYTES -n FRAMES [-C CAP] [-p CPU] [-r CPU] [-c] [-t]\n", argv[0]);
            return 1;
        }
    }
    if (cap & (cap - 1) || align8(HDR + (uint64_t)plen) > cap / 8) {
        fprintf(stderr, "ref_ring: capacity must be a power of two above 8 frames\n");
        return 1;
    }
    ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    data = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (ctl == MAP_FAILED || data == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    pthread_t tp, tc;
    pthread_create(&tc, NULL, consumer, NULL);
    pthread_create(&tp, NULL, producer, NULL);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    double secs = (double)(t_end - t_start) / 1e9;
    printf("{\"frames\": %llu, \"frame_bytes\": %u, \"seconds\": %.6f, \"frames_per_s\": %.1f, "
           "\"gb_per_s\": %.4f, \"full_spins\": %llu, \"crc\": %d, \"stamp\": %d, \"sink\": %llu}\n",
           (unsigned long long)nframes, plen, secs, nframes / secs, nframes * (double)plen / secs / 1e9,
           (unsigned long long)full_spins, opt_crc, opt_stamp, (unsigned long long)(sink & 0xffff));
    return 0;
}
