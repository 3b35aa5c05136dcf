/* Private to csrc/: the frame walk shared by ring_read_batch (reader.c) and
 * ring_drain_to_fd (drain.c).  One copy of the per-frame checks, so a
 * frame the reader refuses is refused by the drain too.
 *
 * A walk goes from a reader's cursor up to the head the producer had
 * published when the walk started (H_HEAD_PUB, acquire-loaded once):
 * everything below it is committed, so a frame there that fails a check is
 * a lap or corruption, never "not yet".  See the theory-of-operation block
 * in ring.c for why the walk stops at that copy of head and does not poll
 * the next commit word. */
#ifndef CAPTURE_RING_WALK_H
#define CAPTURE_RING_WALK_H

#include "layout.h"

typedef struct {
    const uint8_t *base;
    uint64_t cap;
    uint64_t frag_limit;
    uint64_t end;        /* published head when the walk started */
    uint64_t pf;         /* next line to prefetch */
    uint64_t pf_end;     /* prefetch no further than this */
    uint64_t last_span;  /* span of the last frame taken (prefetch only small ones) */
} ring_walk_t;

#define WALK_FRAME 0
#define WALK_END (-1)

static inline void walk_init(ring_walk_t *w, const uint8_t *base, uint64_t pos)
{
    w->base = base;
    w->cap = *U64(base, H_CAPACITY);
    w->frag_limit = *U64(base, H_FRAG_LIMIT);
    w->end = LOAD_ACQ(U64(base, H_HEAD_PUB));
    /* The walk is a chain of dependent loads (each frame's size gives the
     * next header), so through a backlog it waits on memory once per frame;
     * prefetching ahead of the walk breaks the chain.  Only for a backlog,
     * and never near head: a reader that keeps up would pull the lines the
     * producer is writing away from it (measured: a third fewer frames/s). */
    w->pf_end = w->end > pos && w->end - pos >= RING_PREFETCH_BACKLOG
                    ? w->end - RING_PREFETCH_BACKLOG / 2 : pos;
    w->pf = pos & ~(uint64_t)63;
    w->last_span = 0;
}

/* The next frame that is not padding, at or after *pos_io (padding and the
 * ring's unusable tail are stepped over: *pos_io moves past them; padding
 * carries the next frame's sequence and does not consume one).
 *
 * Returns WALK_FRAME with *pos_io at the frame and *h_out / *size_out set;
 * WALK_END at the published head; or RING_READ_LAPPED / RING_READ_CORRUPT
 * with *bad_pos / *bad_seq saying where and what was found.  The caller
 * takes a frame by advancing *pos_io by walk_take(w, size). */
static inline int walk_next(ring_walk_t *w, uint64_t *pos_io, uint64_t seq, const uint8_t **h_out,
                            uint32_t *size_out, uint64_t *bad_pos, uint64_t *bad_seq)
{
    const uint64_t cap = w->cap;
    uint64_t pos = *pos_io;
    for (;;) {
        /* Large frames: the chain is short, and streaming every byte in
         * would cost more bandwidth than it saves latency. */
        if (w->last_span <= RING_PREFETCH_SMALL) {
            uint64_t pf_to = pos + RING_PREFETCH_AHEAD;
            if (pf_to > w->pf_end)
                pf_to = w->pf_end;
            if (w->pf < pos)
                w->pf = pos & ~(uint64_t)63;
            for (; w->pf + 64 <= pf_to; w->pf += 64)
                __builtin_prefetch(data_at(w->base, cap, w->pf), 0, 0);
        }
        uint64_t left = cap - (pos & (cap - 1));
        if (left < RING_FRAME_HEADER) {
            pos += left;
            continue;
        }
        if (pos >= w->end) {
            *pos_io = pos;
            return WALK_END;
        }
        const uint8_t *h = data_at(w->base, cap, pos);
        uint64_t cw = LOAD_ACQ((const uint64_t *)h);
        uint32_t size = (uint32_t)cw, lo = (uint32_t)(cw >> 32);
        *pos_io = pos;
        if (lo != (uint32_t)seq || size == 0) {
            /* Below head every frame is committed, so this is not "not yet":
             * a newer sequence means we were lapped; anything else is either
             * corruption or (untethered readers) a lap that left payload
             * bytes here, which the caller tells apart with ring_still_valid. */
            *bad_pos = pos;
            *bad_seq = lo;
            return size != 0 && (int32_t)(lo - (uint32_t)seq) > 0 ? RING_READ_LAPPED
                                                                   : RING_READ_CORRUPT;
        }
        uint8_t type = h[24];
        uint64_t fseq = *(const uint64_t *)(h + 8);
        int bad = size < RING_FRAME_HEADER || fseq != seq;
        if (type == RING_T_PADDING)
            bad = bad || size != left;
        else
            bad = bad || align8(size) > left || size - RING_FRAME_HEADER > w->frag_limit;
        if (bad) {
            *bad_pos = pos;
            *bad_seq = fseq;
            return RING_READ_CORRUPT;
        }
        if (type == RING_T_PADDING) {
            pos += size;
            continue;
        }
        *h_out = h;
        *size_out = size;
        return WALK_FRAME;
    }
}

/* walk_next for a loop: 1 with a frame; 0 to stop, at head (*status
 * unchanged) or at a bad frame (*status = what walk_next found). */
static inline int walk_frame(ring_walk_t *w, uint64_t *pos_io, uint64_t seq, const uint8_t **h_out,
                             uint32_t *size_out, uint64_t *bad_pos, uint64_t *bad_seq, int *status)
{
    int st = walk_next(w, pos_io, seq, h_out, size_out, bad_pos, bad_seq);
    if (st == WALK_FRAME)
        return 1;
    if (st != WALK_END)
        *status = st;
    return 0;
}

/* Take the frame walk_next returned: its span in the ring (and the file). */
static inline uint64_t walk_take(ring_walk_t *w, uint32_t size)
{
    w->last_span = align8(size);
    return w->last_span;
}

#endif
