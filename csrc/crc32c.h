/* CRC32C (Castagnoli) for the ring: SSE4.2 instruction where the CPU has
 * it (three interleaved streams, combined by table-driven shifts),
 * slicing-by-8 tables otherwise.  Chosen at run time.
 *
 * Internal to csrc/: the public entry points (ring_crc32c, ring_crc32c_hw)
 * are declared in ring.h, which is also the cffi cdef.
 */
#ifndef CAPTURE_CRC32C_H
#define CAPTURE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Build the tables and detect the instruction; idempotent, cheap after the first call. */
void crc32c_setup(void);
/* The raw (not inverted) CRC register after appending n bytes; crc32c_setup() first. */
uint32_t crc32c_raw(uint32_t crc, const uint8_t *p, size_t n);
/* The raw register after appending nbytes of zeros (slow; for tables and tests). */
uint32_t ring_crc_shift(uint32_t crc, size_t nbytes);

#endif
