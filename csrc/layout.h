/* Private to csrc/: the byte layout of the shared ring header, the atomic
 * helpers, and the small inline functions both the producer side (ring.c)
 * and the reader side (reader.c) need.  Not part of the cffi cdef: Python
 * reaches the header only through the functions in ring.h. */
#ifndef CAPTURE_RING_LAYOUT_H
#define CAPTURE_RING_LAYOUT_H

#include <stdint.h>
#include <stddef.h>
#include <time.h>

/* ring.h must be included first: it is also the cffi cdef, which allows no
 * include guard. */

#define BLOCK 128


/* Shared header layout (byte offsets).  Each cursor and heartbeat has its
 * own 128-byte block so that writers do not share cache lines. */
/* block 0: static, written once at creation */
#define H_MAGIC 0
#define H_VERSION 8
#define H_HEADER_SIZE 12
#define H_CAPACITY 16
#define H_MAX_READERS 24
#define H_FRAME_HEADER 28
#define H_FRAG_LIMIT 32
#define H_MAX_FRAME 40
#define H_RING_ID 48
#define H_CREATED 64
#define H_UID 72
/* block 1: producer cursor */
#define H_HEAD (1 * BLOCK)
#define H_NEXT_SEQ (1 * BLOCK + 8)
#define H_PAIR_GEN (1 * BLOCK + 16) /* seqlock over the (head, next_seq) pair */
/* block 2: producer liveness */
#define H_PROD_PID (2 * BLOCK)
#define H_PROD_EPOCH (2 * BLOCK + 4)
#define H_PROD_STATE (2 * BLOCK + 8)
#define H_PROD_HB (2 * BLOCK + 16)
/* block 3: producer counters */
#define H_C_FRAMES (3 * BLOCK)
#define H_C_BYTES (3 * BLOCK + 8)
#define H_C_DROPS_FULL (3 * BLOCK + 16)
#define H_C_DROPS_TOO_LARGE (3 * BLOCK + 24)
#define H_C_HIGHEST_FILL (3 * BLOCK + 32)
#define H_C_WAKES (3 * BLOCK + 40)
#define H_C_FRAGMENTED (3 * BLOCK + 48)
#define H_C_GAP_RECORDS (3 * BLOCK + 56)
#define H_C_DROPPED_BYTES (3 * BLOCK + 64)
/* Frames of the drop counters above that some producer has written as a
 * record (drop or oversize).  drops_full + drops_too_large - this is the gap
 * still owed to the capture; any producer that opens the ring writes it
 * before anything else, so it survives a crash or a stop without room. */
#define H_C_DROPS_RECORDED (3 * BLOCK + 72)
/* Receive time of the first drop not yet recorded (0: none owed). */
#define H_C_GAP_SINCE (3 * BLOCK + 80)
/* block 4: wake-up */
#define H_WAKE_SEQ (4 * BLOCK)
#define H_WAITERS (4 * BLOCK + 64)
/* block 6: head once more, alone in its line: what readers poll and walk up
 * to.  The block 1 pair takes four stores per frame (the seqlock), and a
 * reader polling between them would pull the line away each time. */
#define H_HEAD_PUB (6 * BLOCK)
/* block 5: resume checkpoints, 8 x {u64 pos, u64 seq} */
#define H_CHECKPOINTS (5 * BLOCK)
/* readers: 2 blocks each from 1024 */
#define H_READERS 1024
#define R_SIZE (2 * BLOCK)
#define R_POS 0
#define R_SEQ 8
#define R_STATE (BLOCK + 0)
#define R_TETHERED (BLOCK + 4)
#define R_PID (BLOCK + 8)
#define R_HB (BLOCK + 16)
#define R_FRAMES (BLOCK + 24)
#define R_LAPPED (BLOCK + 32)
#define R_NAME (BLOCK + 64)

#define U64(b, off) ((uint64_t *)((b) + (off)))
#define U32(b, off) ((uint32_t *)((b) + (off)))
#define I64(b, off) ((int64_t *)((b) + (off)))
#define RD(b, s) ((b) + H_READERS + (size_t)(s) * R_SIZE)

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/* How far ahead of a batch walk the reader prefetches (bytes). */
#define RING_PREFETCH_AHEAD 2048
/* Frames up to this span (bytes) are walked with streaming prefetch. */
#define RING_PREFETCH_SMALL 1024
/* ... and only when at least this much (bytes) is waiting. */
#ifndef RING_PREFETCH_BACKLOG
#define RING_PREFETCH_BACKLOG (64 * 1024)
#endif

/* Seqlock reads: spins before yielding, and how long in all a reader waits
 * for an odd generation to turn even before it calls the ring damaged.  The
 * producer holds it odd for three stores; only a producer stopped or killed
 * inside that window holds it longer. */
#define RING_SEQLOCK_SPINS 1024
#ifndef RING_SEQLOCK_WAIT_NS
#define RING_SEQLOCK_WAIT_NS 1000000000LL
#endif

/* Test builds (a C harness that includes ring.c) define this to stop or
 * kill the producer inside the seqlock window; production compiles it away. */
#ifndef RING_TEST_PAIR_HOOK
#define RING_TEST_PAIR_HOOK() ((void)0)
#endif

static inline uint64_t align8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }
static inline uint8_t *data_at(const uint8_t *base, uint64_t cap, uint64_t pos)
{
    return (uint8_t *)base + RING_HEADER_SIZE + (pos & (cap - 1));
}

static inline int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int committed_frame(const uint8_t *base, uint64_t cap, uint64_t pos, uint64_t seq,
                                  uint32_t *size_out)
{
    const uint8_t *h = data_at(base, cap, pos);
    uint64_t cw = LOAD_ACQ((const uint64_t *)h);
    uint32_t size = (uint32_t)cw, lo = (uint32_t)(cw >> 32);
    if (lo != (uint32_t)seq || size < RING_FRAME_HEADER)
        return 0;
    if (*(const uint64_t *)(h + 8) != seq)
        return 0;
    *size_out = size;
    return 1;
}

#endif
