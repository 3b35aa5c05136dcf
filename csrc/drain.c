/* The tethered reader's drain to a file: ring bytes to a file descriptor in
 * one call per batch, every frame checked.
 *
 * Theory of operation
 * -------------------
 * A segment record is a ring frame byte for byte, padding left out, so a
 * batch is a few contiguous runs of ring bytes.  What the caller gets back
 * is what its segment writer and index need, not per-frame arrays: counts,
 * first/last sequence, the receive-time range and whether it never went
 * backwards, every Nth record's (seq, ts, offset), and a sampled
 * receive-to-write latency histogram.  Every frame passes the checks of
 * walk.h (those of ring_read_batch) before the call reports it written.
 *
 * Write first, then check.  A backlog is cold: the receiver wrote it, on
 * another core, and it is larger than L2.  A walk through it is a chain of
 * dependent loads (each header gives the next), and walking a 3 MiB
 * backlog of 256 B frames before writing it cost about a third of the
 * write.  The kernel's copy reads the same bytes with full memory
 * parallelism.  So when a batch ends at a frame boundary known without a
 * walk, its bytes are written first, a piece at a time, and each piece is
 * walked right after, while the copy has left it in cache.  The boundaries:
 * the published head; the ring's end (a multiple of the capacity: any
 * padding before it is the batch's last frame); and the producer's resume
 * checkpoints (ring.c: the first frame of each eighth of the ring), which
 * cut a backlog into batches of at most max_bytes.
 *
 * What the walk finds decides what stays in the file, which is truncated
 * to the end of the last good frame: the padding or the few bytes skipped
 * before the ring's end are cut off; so is a frame that fails a check, with
 * everything after it (the call reports the frames before it, and the
 * status); so is a frame that runs past a checkpoint, which was then not a
 * frame start: the batch just ends before it.  The cut happens before the
 * call returns and before anything is committed.  A crash in between
 * leaves those bytes as the tail of the open segment; recovery checks every
 * record and cuts such a tail like any torn one.
 *
 * Walk first, then write: everything else (less than 64 KiB, which one walk
 * reads quickly; a batch that must stop at the segment's room or skip
 * frames already on disk; no checkpoint in reach; the short tail before
 * the ring's end, after which the same call goes on writing first).  The
 * frames are walked, then written in chunks of up to DRAIN_CHUNK: every
 * write costs a fixed amount on top of the copy (inode lock, time stamps,
 * journal), and 256 KiB chunks drained a 3 MiB backlog about 15% slower
 * than 1 MiB ones.
 *
 * Failure.  A write or truncate that fails (ENOSPC, EIO, ...) leaves *pos /
 * *seq where they were and returns RING_DRAIN_IO_ERROR with errno in
 * d->err; bytes already written by this call are the caller's to cut off
 * (it truncates the file to the size it had), so a retry writes the same
 * frames again at the same offsets.  Nothing here commits: the caller
 * does, after the write (and its fsync policy). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>

#include "ring.h"
#include "layout.h"
#include "walk.h"

/* Walk-first chunks. */
#define DRAIN_CHUNK (1024 * 1024)
/* Write-first pieces.  Small frames: small enough that the piece is still
 * in cache for the walk that follows its copy (source and page cache both
 * pass through L2): per 3 MiB of 256 B frames, 1 MiB pieces walked in
 * 260 us, 512 KiB ones in 100 us, at 25 us more in syscalls.  Large frames
 * (a header every DRAIN_LARGE_FRAME bytes or more): the walk touches few
 * lines, so fewer, larger writes win. */
#define DRAIN_PIECE_SMALL (512 * 1024)
#define DRAIN_PIECE_LARGE (1024 * 1024)
#define DRAIN_LARGE_FRAME 1024
/* Write-first needs at least this much; below it one walk is cheap. */
#define DRAIN_WRITE_FIRST_MIN (64 * 1024)
#define DRAIN_IOV 8
/* Latency samples: the first DRAIN_SAMPLE_ALL frames of a call, then every
 * DRAIN_SAMPLE_EVERY-th. */
#define DRAIN_SAMPLE_ALL 64
#define DRAIN_SAMPLE_EVERY 16
#define DRAIN_MAX_SAMPLES (DRAIN_CHUNK / RING_FRAME_HEADER / DRAIN_SAMPLE_EVERY + 2)

static int write_all(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pwritev(fd, iov, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (k == 0)
            return EIO;
        off += (uint64_t)k;
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0 && k > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

static inline void add_latency(uint64_t *hist, int64_t ns)
{
    /* Same buckets as common/histogram.py: i counts values < 2**i us. */
    int b = 0;
    if (ns > 0) {
        uint64_t us = (uint64_t)ns / 1000;
        if (us == 0)
            us = 1;
        b = 64 - __builtin_clzll(us);
        if (b > RING_DRAIN_HIST - 1)
            b = RING_DRAIN_HIST - 1;
    }
    hist[b]++;
}

static inline int sampled(uint32_t k)
{
    return k < DRAIN_SAMPLE_ALL || k % DRAIN_SAMPLE_EVERY == 0;
}

/* Per-frame bookkeeping common to both paths: the summary and the index. */
typedef struct {
    ring_drain_t *d;
    uint64_t every;
    uint64_t phase;            /* records_before + frames, mod every */
} tally_t;

/* Returns 0 if the index has no room for this frame (not reached: the
 * caller sizes it for max_bytes of the smallest frames). */
static inline int tally(tally_t *t, uint64_t seq, int64_t ts, uint64_t file_pos)
{
    ring_drain_t *d = t->d;
    if (t->phase == 0) {
        if (d->index_n >= d->index_cap)
            return 0;
        d->index_seq[d->index_n] = seq;
        d->index_ts[d->index_n] = ts;
        d->index_off[d->index_n] = file_pos;
        d->index_n++;
    }
    if (++t->phase == t->every)
        t->phase = 0;
    if (d->frames == 0) {
        d->first_seq = seq;
        d->first_ts = d->min_ts = d->max_ts = ts;
    } else {
        if (ts < d->last_ts)
            d->ts_monotonic = 0;
        if (ts < d->min_ts)
            d->min_ts = ts;
        if (ts > d->max_ts)
            d->max_ts = ts;
    }
    d->last_ts = ts;
    d->last_seq = seq;
    d->frames++;
    return 1;
}

static void tally_start(ring_drain_t *d, tally_t *t)
{
    t->d = d;
    t->every = d->index_every ? d->index_every : 1;
    t->phase = d->records_before % t->every;
    d->frames = 0;
    d->skipped = 0;
    d->bytes = 0;
    d->index_n = 0;
    d->room_full = 0;
    d->written_first = 0;
    d->ts_monotonic = 1;
    d->err = 0;
    d->bad_pos = 0;
    d->bad_seq = 0;
}

/* ---- write first, then check ------------------------------------------------ */

/* The end of a write-first batch from pos: a frame boundary known without
 * walking.  Returns 0 if this batch must be walked first; then *stop is
 * the ring's end if a write-first batch's worth follows it before head (a
 * walk-first batch stops there, so that only the short tail before the end
 * is walked first), else UINT64_MAX. */
static uint64_t known_end(const uint8_t *base, uint64_t pos, const ring_drain_t *d, uint64_t room,
                          uint64_t *stop)
{
    uint64_t cap = *U64(base, H_CAPACITY);
    uint64_t head = LOAD_ACQ(U64(base, H_HEAD_PUB));
    uint64_t wrap = (pos & ~(cap - 1)) + cap;
    uint64_t end = head < wrap ? head : wrap;
    *stop = wrap < head && head - wrap >= DRAIN_WRITE_FIRST_MIN ? wrap : UINT64_MAX;
    if (end <= pos || end - pos < DRAIN_WRITE_FIRST_MIN)
        return 0;
    uint64_t limit = d->max_bytes < room ? d->max_bytes : room;
    if (end - pos <= limit)
        return end;
    /* Too much for one batch: the farthest checkpoint within the limit.
     * A checkpoint position below head is a committed frame's start (the
     * producer stores it before that frame's commit word); one being
     * replaced reads as UINT64_MAX, the old or the new one, each fine. */
    uint64_t best = 0;
    for (int k = 0; k < 8; k++) {
        uint64_t p = LOAD_ACQ(U64(base, H_CHECKPOINTS + 16 * k));
        if (p != UINT64_MAX && p > pos && p < end && p - pos <= limit && p > best)
            best = p;
    }
    return best > pos && best - pos >= DRAIN_WRITE_FIRST_MIN ? best : 0;
}

static int write_first(const uint8_t *base, uint64_t *pos_io, uint64_t *seq_io, ring_drain_t *d,
                       uint64_t end)
{
    uint64_t cap = *U64(base, H_CAPACITY);
    uint64_t pos = *pos_io, seq = *seq_io, start = pos;
    uint64_t written = pos;        /* ring position up to which the file holds the bytes */
    uint64_t good = pos;           /* ... and up to which they are checked frames */
    uint64_t bad_pos = 0, bad_seq = 0;
    int status = RING_READ_OK;
    uint32_t k = 0;
    tally_t t;
    ring_walk_t wk;
    tally_start(d, &t);
    d->written_first = 1;
    walk_init(&wk, base, pos);
    wk.pf_end = 0;                 /* the copy brought the lines in: no prefetch */
    uint64_t piece = d->large_frames ? DRAIN_PIECE_LARGE : DRAIN_PIECE_SMALL;
    while (status == RING_READ_OK && written < end) {
        uint64_t to = written + piece < end ? written + piece : end;
        uint64_t good0 = good;
        uint32_t frames0 = d->frames;
        struct iovec iov = {data_at(base, cap, written), (size_t)(to - written)};
        int err = write_all(d->fd, &iov, 1, d->file_off + (written - start));
        if (err) {
            d->err = err;
            return RING_DRAIN_IO_ERROR;
        }
        written = to;
        int64_t now = ring_now_ns();
        wk.end = written;
        for (;;) {
            const uint8_t *h;
            uint32_t size;
            if (!walk_frame(&wk, &pos, seq, &h, &size, &bad_pos, &bad_seq, &status))
                break;
            uint64_t span = align8(size);
            if (pos + span > written) {
                if (written < end)
                    break;         /* the rest of it is in the next piece */
                /* It runs past the end: the checkpoint was not a frame
                 * start after all.  Not the frames' fault: end the batch
                 * before this one, which the next call walks first. */
                end = pos;
                break;
            }
            /* Frames follow each other: walk.h steps over nothing but the
             * padding before the ring's end, which is past every end. */
            if (pos != good) {
                status = RING_READ_CORRUPT;
                bad_pos = good;
                bad_seq = seq;
                break;
            }
            int64_t ts = *(const int64_t *)(h + 16);
            if (!tally(&t, seq, ts, d->file_off + (pos - start))) {
                end = pos;         /* index full (not reached: sized for max_bytes) */
                break;
            }
            if (sampled(k++))
                add_latency(d->latency_hist, now - ts);
            pos += walk_take(&wk, size);
            seq++;
            good = pos;
        }
        uint32_t nf = d->frames - frames0;
        if (nf)
            d->large_frames = (good - good0) / nf >= DRAIN_LARGE_FRAME;
        piece = d->large_frames ? DRAIN_PIECE_LARGE : DRAIN_PIECE_SMALL;
    }
    /* The file holds [start, written) of the ring; keep [start, good):
     * padding or the skipped end of the ring, or a bad frame and all after. */
    if (good < written && ftruncate(d->fd, (off_t)(d->file_off + (good - start))) != 0) {
        d->err = errno;
        return RING_DRAIN_IO_ERROR;
    }
    if (status != RING_READ_OK) {
        pos = good;
        /* d->frames are checked and stay; the caller raises on the next call */
    }
    d->bytes = good - start;
    d->bad_pos = bad_pos;
    d->bad_seq = bad_seq;
    *pos_io = pos;
    *seq_io = seq;
    return status;
}

/* ---- walk first, then write ------------------------------------------------- */

typedef struct {
    struct iovec iov[DRAIN_IOV];
    int niov;
    uint64_t run_end;      /* ring position just after the last run, for adjacency */
    uint64_t bytes;
    uint32_t nsampled;
    int64_t samples[DRAIN_MAX_SAMPLES];
} chunk_t;

static void chunk_reset(chunk_t *c)
{
    c->niov = 0;
    c->run_end = UINT64_MAX;       /* the next frame starts a new iovec */
    c->bytes = 0;
    c->nsampled = 0;
}

static int flush_chunk(ring_drain_t *d, chunk_t *c, uint64_t *written)
{
    if (c->niov == 0)
        return 0;
    int err = write_all(d->fd, c->iov, c->niov, d->file_off + *written);
    if (err)
        return err;
    int64_t now = ring_now_ns();
    for (uint32_t i = 0; i < c->nsampled; i++)
        add_latency(d->latency_hist, now - c->samples[i]);
    *written += c->bytes;
    chunk_reset(c);
    return 0;
}

static int walk_first(const uint8_t *base, uint64_t *pos_io, uint64_t *seq_io, ring_drain_t *d,
                      uint64_t room, uint64_t stop)
{
    uint64_t pos = *pos_io, seq = *seq_io;
    uint64_t written = 0;          /* bytes of earlier chunks, from d->file_off */
    int oversize_ok = d->fd >= 0 && d->oversize_ok;
    uint64_t bad_pos = 0, bad_seq = 0;
    int status = RING_READ_OK;
    uint32_t k = 0;
    chunk_t c;
    tally_t t;
    ring_walk_t wk;
    tally_start(d, &t);
    chunk_reset(&c);
    walk_init(&wk, base, pos);
    for (;;) {
        const uint8_t *h;
        uint32_t size;
        if (!walk_frame(&wk, &pos, seq, &h, &size, &bad_pos, &bad_seq, &status))
            break;
        if (pos >= stop)
            break;                 /* past the ring's end: write first from here */
        uint64_t span = align8(size);
        if (seq < d->skip_below) {
            /* Already on disk (a crash between write and commit): step
             * over it; the run it would have joined ends here. */
            c.run_end = UINT64_MAX;
            pos += walk_take(&wk, size);
            seq++;
            d->skipped++;
            continue;
        }
        uint64_t total = written + c.bytes;
        if (d->frames > 0 && total + span > d->max_bytes)
            break;
        if (total + span > room && !(d->frames == 0 && oversize_ok)) {
            d->room_full = 1;
            break;
        }
        /* A run continues while frames are adjacent, except across the
         * ring's end: the next byte after the end sits at the mapping's
         * start, not after it. */
        if (pos != c.run_end || (pos & (wk.cap - 1)) == 0) {
            if (c.niov == DRAIN_IOV) {
                int err = flush_chunk(d, &c, &written);
                if (err) {
                    d->err = err;
                    return RING_DRAIN_IO_ERROR;
                }
                total = written;
            }
            c.iov[c.niov].iov_base = (void *)h;
            c.iov[c.niov].iov_len = 0;
            c.niov++;
        }
        int64_t ts = *(const int64_t *)(h + 16);
        if (!tally(&t, seq, ts, d->file_off + total))
            break;
        c.iov[c.niov - 1].iov_len += span;
        c.run_end = pos + span;
        if (sampled(k++) && c.nsampled < DRAIN_MAX_SAMPLES)
            c.samples[c.nsampled++] = ts;
        c.bytes += span;
        pos += walk_take(&wk, size);
        seq++;
        if (c.bytes >= DRAIN_CHUNK) {
            int err = flush_chunk(d, &c, &written);
            if (err) {
                d->err = err;
                return RING_DRAIN_IO_ERROR;
            }
        }
    }
    int err = flush_chunk(d, &c, &written);
    if (err) {
        d->err = err;
        return RING_DRAIN_IO_ERROR;
    }
    d->bytes = written;
    d->bad_pos = bad_pos;
    d->bad_seq = bad_seq;
    *pos_io = pos;
    *seq_io = seq;
    return status;
}

int ring_drain_to_fd(const uint8_t *base, uint64_t *pos_io, uint64_t *seq_io, ring_drain_t *d)
{
    /* No file: skipping only, so stop at the first frame to write. */
    uint64_t room = d->fd < 0 ? 0 : d->room;
    uint64_t stop = UINT64_MAX;
    int write_first_ok = d->fd >= 0 && d->skip_below <= *seq_io;
    if (write_first_ok) {
        uint64_t end = known_end(base, *pos_io, d, room, &stop);
        if (end)
            return write_first(base, pos_io, seq_io, d, end);
    }
    uint64_t pos0 = *pos_io;
    int st = walk_first(base, pos_io, seq_io, d, room, stop);
    if (st == RING_READ_OK && write_first_ok && d->frames == 0 && *pos_io >= stop && *pos_io > pos0) {
        /* Only padding was left before the ring's end: go on from there. */
        uint64_t end = known_end(base, *pos_io, d, room, &stop);
        if (end)
            return write_first(base, pos_io, seq_io, d, end);
        return walk_first(base, pos_io, seq_io, d, room, stop);
    }
    return st;
}
