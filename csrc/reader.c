/* The reader side of the ring: slots, batch reads, lap checks, resume
 * points and the futex wait.  The ordering argument is the theory-of-
 * operation block at the top of ring.c. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <limits.h>
#include <sys/syscall.h>
#include <linux/futex.h>

#include "ring.h"
#include "crc32c.h"
#include "layout.h"
#include "walk.h"

/* ---- readers ----------------------------------------------------------- */

int ring_reader_claim(uint8_t *base, int slot, const char *name, int tethered, uint32_t pid,
                      uint64_t pos, uint64_t seq, int64_t now_ns)
{
    if (slot < 0 || slot >= RING_MAX_READERS)
        return -1;
    uint8_t *r = RD(base, slot);
    uint32_t expect = RING_SLOT_FREE;
    if (!__atomic_compare_exchange_n(U32(r, R_STATE), &expect, (uint32_t)RING_SLOT_CLAIMING, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return -1;
    memset(r + R_NAME, 0, 48);
    strncpy((char *)(r + R_NAME), name, RING_NAME_MAX);
    STORE_RLX(U64(r, R_FRAMES), 0);
    STORE_RLX(U64(r, R_LAPPED), 0);
    STORE_REL(U64(r, R_POS), pos);
    STORE_REL(U64(r, R_SEQ), seq);
    STORE_REL(U32(r, R_TETHERED), (uint32_t)(tethered ? 1 : 0));
    STORE_REL(U32(r, R_PID), pid);
    STORE_REL(I64(r, R_HB), now_ns);
    /* Active last: from here on the producer honours a tethered cursor. */
    __atomic_store_n(U32(r, R_STATE), (uint32_t)RING_SLOT_ACTIVE, __ATOMIC_SEQ_CST);
    return slot;
}

void ring_reader_release(uint8_t *base, int slot)
{
    __atomic_store_n(U32(RD(base, slot), R_STATE), (uint32_t)RING_SLOT_FREE, __ATOMIC_SEQ_CST);
}

void ring_reader_get(const uint8_t *base, int slot, ring_reader_info_t *o)
{
    const uint8_t *r = RD(base, slot);
    o->state = LOAD_ACQ(U32(r, R_STATE));
    o->tethered = LOAD_ACQ(U32(r, R_TETHERED));
    o->pid = LOAD_ACQ(U32(r, R_PID));
    memcpy(o->name, r + R_NAME, 48);
    o->name[47] = 0;
    o->pos = LOAD_ACQ(U64(r, R_POS));
    o->seq = LOAD_ACQ(U64(r, R_SEQ));
    o->heartbeat_ns = LOAD_ACQ(I64(r, R_HB));
    o->frames_read = LOAD_RLX(U64(r, R_FRAMES));
    o->lapped = LOAD_RLX(U64(r, R_LAPPED));
}

void ring_reader_set_pid(uint8_t *base, int slot, uint32_t pid, int64_t now_ns)
{
    uint8_t *r = RD(base, slot);
    STORE_REL(U32(r, R_PID), pid);
    STORE_REL(I64(r, R_HB), now_ns);
}

void ring_reader_commit(uint8_t *base, int slot, uint64_t pos, uint64_t seq, uint64_t frames,
                        int64_t now_ns)
{
    uint8_t *r = RD(base, slot);
    /* seq first: a concurrent observer pairs (pos, seq) by reading pos last. */
    STORE_REL(U64(r, R_SEQ), seq);
    STORE_REL(U64(r, R_POS), pos);
    STORE_RLX(U64(r, R_FRAMES), LOAD_RLX(U64(r, R_FRAMES)) + frames);
    if (now_ns > 0)
        STORE_REL(I64(r, R_HB), now_ns);
}

void ring_reader_heartbeat(uint8_t *base, int slot, int64_t now_ns)
{
    STORE_REL(I64(RD(base, slot), R_HB), now_ns);
}

void ring_reader_count_lapped(uint8_t *base, int slot)
{
    uint64_t *c = U64(RD(base, slot), R_LAPPED);
    STORE_RLX(c, LOAD_RLX(c) + 1);
}

static inline uint64_t max_frame_span(const uint8_t *base)
{
    /* largest frame, plus the next commit word the producer clears */
    return align8(*U64(base, H_FRAG_LIMIT) + RING_FRAME_HEADER) + 8;
}

int ring_still_valid(const uint8_t *base, uint64_t pos)
{
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint64_t cap = *U64(base, H_CAPACITY);
    uint64_t head = LOAD_ACQ(U64(base, H_HEAD));
    return head + max_frame_span(base) <= pos + cap;
}

int ring_available(const uint8_t *base, uint64_t pos, uint64_t seq)
{
    (void)seq;
    /* Published head, not the commit word at pos: the word at pos shares a
     * cache line with the tail of the frame the producer is writing, and
     * polling it would steal that line from the producer several times per
     * frame.  H_HEAD_PUB has a line of its own.  A lapped reader sees head far
     * ahead too, so a lap is news here, not a reason to sleep. */
    uint64_t cap = *U64(base, H_CAPACITY);
    uint64_t left = cap - (pos & (cap - 1));
    if (left < RING_FRAME_HEADER)
        pos += left;
    return LOAD_ACQ(U64(base, H_HEAD_PUB)) > pos;
}

int ring_read_batch(const uint8_t *base, uint64_t *pos_io, uint64_t *seq_io, ring_batch_t *o,
                    int verify_crc)
{
    if (verify_crc)
        crc32c_setup();
    uint64_t pos = *pos_io, seq = *seq_io, start = pos;
    uint32_t n = 0;
    int status = RING_READ_OK;
    ring_walk_t w;
    walk_init(&w, base, pos);
    o->n = 0;
    while (n < o->max_frames) {
        const uint8_t *h;
        uint32_t size;
        if (!walk_frame(&w, &pos, seq, &h, &size, &o->bad_pos, &o->bad_seq, &status))
            break;
        uint64_t span = align8(size);
        if (n > 0 && pos + span - start > o->max_bytes)
            break;
        if (verify_crc && ring_frame_crc(h, size) != *(const uint32_t *)(h + 28)) {
            status = RING_READ_CORRUPT;
            o->bad_pos = pos;
            o->bad_seq = seq;
            break;
        }
        o->pos[n] = pos;
        o->size[n] = size - RING_FRAME_HEADER;
        o->seq[n] = seq;
        o->ts[n] = *(const int64_t *)(h + 16);
        o->type[n] = h[24];
        o->flags[n] = h[25];
        o->conn[n] = *(const uint16_t *)(h + 26);
        n++;
        pos += walk_take(&w, size);
        seq++;
    }
    o->n = n;
    *pos_io = pos;
    *seq_io = seq;
    return status;
}

int ring_resume_point(const uint8_t *base, uint64_t *pos_out, uint64_t *seq_out)
{
    uint64_t cap = *U64(base, H_CAPACITY);
    uint64_t head = LOAD_ACQ(U64(base, H_HEAD));
    uint64_t span = max_frame_span(base);
    uint64_t best = UINT64_MAX, best_seq = 0;
    for (int k = 0; k < 8; k++) {
        const uint8_t *cp = base + H_CHECKPOINTS + 16 * k;
        uint64_t p = LOAD_ACQ((const uint64_t *)cp);
        uint64_t s = LOAD_ACQ((const uint64_t *)(cp + 8));
        if (p != LOAD_ACQ((const uint64_t *)cp) || p == UINT64_MAX || p > head)
            continue;
        /* Keep a margin of one largest frame plus one eighth, so the
         * producer cannot reach the point before the reader does. */
        if (head + span + (cap >> 3) > p + cap)
            continue;
        if (p < best) {
            best = p;
            best_seq = s;
        }
    }
    if (best == UINT64_MAX) {
        /* Nothing safe recorded (tiny ring or a burst): start at head. */
        *pos_out = head;
        *seq_out = LOAD_ACQ(U64(base, H_NEXT_SEQ));
        return 0;
    }
    *pos_out = best;
    *seq_out = best_seq;
    return 1;
}

uint32_t ring_waiters(const uint8_t *base)
{
    return __atomic_load_n(U32(base, H_WAITERS), __ATOMIC_SEQ_CST);
}

int ring_wait(uint8_t *base, int slot, uint64_t pos, uint64_t seq, uint64_t spin_ns,
              uint64_t timeout_ns)
{
    if (ring_available(base, pos, seq))
        return 1;
    int64_t t0 = mono_ns();
    int64_t spin_end = t0 + (int64_t)spin_ns;
    int64_t deadline = t0 + (int64_t)timeout_ns;
    /* then 50 us of sched_yield; a reader that asked for no spin (a batch
     * drain, which would rather sleep than take the core from the processes
     * it shares it with) goes straight to the futex. */
    int64_t yield_end = spin_ns ? spin_end + 50000 : t0;
    uint32_t bit = 1u << (slot & 31);
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (ring_available(base, pos, seq))
                return 1;
            cpu_relax();
        }
        int64_t now = mono_ns();
        if (now >= deadline)
            return 0;
        if (now < spin_end)
            continue;
        if (now < yield_end) {
            sched_yield();
            continue;
        }
        if (LOAD_ACQ(U32(base, H_PROD_STATE)) == RING_PROD_STOPPED)
            return ring_available(base, pos, seq);
        /* Announce the sleep, then re-check (full fence in between). */
        uint32_t w = __atomic_load_n(U32(base, H_WAKE_SEQ), __ATOMIC_SEQ_CST);
        __atomic_fetch_or(U32(base, H_WAITERS), bit, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (ring_available(base, pos, seq))
            return 1;
        int64_t left = deadline - mono_ns();
        if (left <= 0)
            return 0;
        struct timespec ts = {left / 1000000000LL, left % 1000000000LL};
        syscall(SYS_futex, U32(base, H_WAKE_SEQ), FUTEX_WAIT, w, &ts, NULL, 0);
        if (ring_available(base, pos, seq))
            return 1;
        if (mono_ns() >= deadline)
            return 0;
    }
}

int ring_wait_read(uint8_t *base, int slot, uint64_t *pos_io, uint64_t *seq_io, ring_batch_t *o,
                   int verify_crc, uint64_t spin_ns, uint64_t timeout_ns)
{
    uint64_t pos = *pos_io, seq = *seq_io;
    o->n = 0;
    STORE_REL(I64(RD(base, slot), R_HB), ring_now_ns());
    int untethered = !LOAD_RLX(U32(RD(base, slot), R_TETHERED));
    if (!(untethered && !ring_still_valid(base, pos)) &&
        !ring_wait(base, slot, pos, seq, spin_ns, timeout_ns))
        return RING_READ_TIMEOUT;
    if (untethered && !ring_still_valid(base, pos)) {
        o->bad_pos = pos;
        o->bad_seq = seq;
        return RING_READ_LAPPED;
    }
    int st = ring_read_batch(base, pos_io, seq_io, o, verify_crc);
    if (st == RING_READ_LAPPED) {
        *pos_io = pos;
        *seq_io = seq;
    }
    return st;
}
