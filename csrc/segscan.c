/* ring_seg_scan: the fast path of reading a segment file (see ring.h).
 *
 * Segment records are ring frames written through, so this is the check of
 * ring_read_batch without the ring (no wrap, no head): a contiguous buffer
 * read from the file.  Anything unusual is left to the Python reader
 * (flusher/segments/format.py), which owns the error wording and the gap
 * record rule; this loop only takes the records that pass every check. */
#include <stdint.h>
#include <string.h>

#include "ring.h"

uint32_t ring_seg_scan(const uint8_t *buf, uint64_t len, uint64_t max_record,
                       const uint8_t *gap_prefix, uint32_t gap_len, uint64_t *expect_io,
                       uint8_t *hdrs_out, uint32_t *offs_out, uint32_t max,
                       uint64_t *next_out)
{
    uint64_t off = 0;
    uint64_t expect = *expect_io;
    uint32_t n = 0;
    /* Offsets go out as u32: a buffer holds one read chunk and at most one
     * record of up to 1 GiB, far below that; stop there all the same. */
    while (n < max && len - off >= RING_FRAME_HEADER && off <= UINT32_MAX) {
        const uint8_t *h = buf + off;
        uint32_t size, lo;
        uint64_t seq;
        memcpy(&size, h, 4);
        memcpy(&lo, h + 4, 4);
        memcpy(&seq, h + 8, 8);
        uint8_t type = h[24];
        uint64_t span = ((uint64_t)size + 7) & ~(uint64_t)7;
        if (size < RING_FRAME_HEADER || size > max_record || span > len - off)
            break;
        if (lo != (uint32_t)seq || type < RING_T_DATA || type > RING_T_FRAG_END ||
            type == RING_T_PADDING)
            break;
        if (expect != UINT64_MAX && seq != expect)
            break;
        if (type == RING_T_CONTROL && size - RING_FRAME_HEADER >= gap_len &&
            memcmp(h + RING_FRAME_HEADER, gap_prefix, gap_len) == 0)
            break;
        uint32_t crc;
        memcpy(&crc, h + 28, 4);
        if (ring_frame_crc(h, size) != crc)
            break;
        memcpy(hdrs_out + (uint64_t)n * RING_FRAME_HEADER, h, RING_FRAME_HEADER);
        offs_out[n] = (uint32_t)off;
        n++;
        expect = seq + 1;
        off += span;
    }
    *expect_io = expect;
    *next_out = off;
    return n;
}
