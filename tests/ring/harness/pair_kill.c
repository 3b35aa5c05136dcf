/* Test harness: a producer that stops itself (SIGSTOP) inside the seqlock
 * window of publish_pair - after the odd generation and the head store,
 * before next_seq and the even store - so a test can SIGKILL it exactly
 * there.  Built by the tests only: it includes ring.c with the test hook
 * defined; the product compiles the hook away.
 *
 * usage: pair_kill RING_FILE N   (writes N frames, then one that stops) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile int hook_armed;
#define RING_TEST_PAIR_HOOK() do { if (hook_armed) raise(SIGSTOP); } while (0)
#include "ring.c"

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int fd = open(argv[1], O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return 3;
    uint8_t *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        return 4;
    ring_producer_t p;
    ring_producer_open(&p, base, (uint32_t)getpid(), ring_now_ns());
    int n = atoi(argv[2]);
    char buf[64];
    for (int i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof buf, "frame %d", i);
        if (ring_write(&p, (const uint8_t *)buf, (uint32_t)len, RING_T_DATA, 0, 0, 0) < 0)
            return 5;
    }
    hook_armed = 1;
    ring_write(&p, (const uint8_t *)"in the window", 13, RING_T_DATA, 0, 0, 0);
    return 6; /* never reached: the test kills us while stopped */
}
