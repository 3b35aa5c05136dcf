/* CRC32C: see crc32c.h. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "ring.h"
#include "crc32c.h"


static uint32_t crc_table[8][256];
static int crc_ready;
/* Appending 256 / 512 zero bytes to a CRC register is a fixed linear map on
 * its 32 bits; tabulated per byte it costs four lookups instead of a
 * bit-serial polynomial multiply (which made the combine step of the
 * three-stream loop cost more than the CRC instructions themselves). */
static uint32_t shift_tab[2][4][256];

static inline uint32_t shift_fixed(int which, uint32_t x)
{
    const uint32_t(*t)[256] = shift_tab[which];
    return t[0][x & 0xff] ^ t[1][(x >> 8) & 0xff] ^ t[2][(x >> 16) & 0xff] ^ t[3][x >> 24];
}

static void crc_init_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][(w >> 56) & 0xff];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    /* Three independent streams hide the instruction's 3-cycle latency. */
    while (n >= 3 * 256) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *p1 = p + 256, *p2 = p + 512;
        for (int i = 0; i < 256; i += 8) {
            uint64_t a, b, d;
            memcpy(&a, p + i, 8);
            memcpy(&b, p1 + i, 8);
            memcpy(&d, p2 + i, 8);
            c = __builtin_ia32_crc32di(c, a);
            c1 = __builtin_ia32_crc32di(c1, b);
            c2 = __builtin_ia32_crc32di(c2, d);
        }
        /* CRC is linear: crc(A|B|C) = shift(crc(A), |BC|) ^ shift(crc0(B), |C|) ^ crc0(C). */
        c = shift_fixed(1, (uint32_t)c) ^ shift_fixed(0, (uint32_t)c1) ^ (uint32_t)c2;
        p += 768;
        n -= 768;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return (uint32_t)c;
}
static int have_hw = -1;
#endif

/* Multiply two polynomials modulo the CRC32C polynomial (reflected). */
static uint32_t gf_mul(uint32_t a, uint32_t b)
{
    uint32_t r = 0;
    for (int i = 0; i < 32; i++) {
        if (b & 0x80000000u)
            r ^= a;
        b <<= 1;
        a = (a >> 1) ^ (0x82F63B78u & (0u - (a & 1)));
    }
    return r;
}

/* x^(8 * 2^k) mod P for k = 0..31, reflected, built on first use. */
static uint32_t shift_pow[40];
static void shift_init(void)
{
    uint32_t x = 0x00800000u; /* x^8 in reflected form */
    for (int k = 0; k < 40; k++) {
        shift_pow[k] = x;
        x = gf_mul(x, x);
    }
}

/* The raw (non-inverted) CRC register after appending nbytes of zeros. */
uint32_t ring_crc_shift(uint32_t crc, size_t nbytes)
{
    for (int k = 0; nbytes; k++, nbytes >>= 1)
        if (nbytes & 1)
            crc = gf_mul(shift_pow[k], crc);
    return crc;
}

void crc32c_setup(void)
{
    if (__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE))
        return;
    crc_init_table();
    shift_init();
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 4; i++)
            for (uint32_t b = 0; b < 256; b++)
                shift_tab[w][i][b] = ring_crc_shift(b << (8 * i), w ? 512 : 256);
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

uint32_t crc32c_raw(uint32_t c, const uint8_t *p, size_t n)
{
#if defined(__x86_64__)
    if (have_hw)
        return crc_hw(c, p, n);
#endif
    return crc_sw(c, p, n);
}

uint32_t ring_crc32c(uint32_t crc, const uint8_t *data, size_t len)
{
    crc32c_setup();
    return ~crc32c_raw(~crc, data, len);
}

int ring_crc32c_hw(void)
{
    crc32c_setup();
#if defined(__x86_64__)
    return have_hw;
#else
    return 0;
#endif
}

