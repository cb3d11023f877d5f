/* randread FILE N SEED: N preads of 4 KiB at random 4 KiB-aligned offsets of FILE.
 * Prints the nanoseconds of the loop and the number of bytes read. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: randread FILE N SEED\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 4096) { fprintf(stderr, "%s: too small\n", argv[1]); return 1; }
    long n = atol(argv[2]);
    unsigned long long x = strtoull(argv[3], NULL, 10) * 2654435761ULL + 1, blocks = st.st_size / 4096;
    char buf[4096];
    long long total = 0, t0 = now();
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;  /* xorshift64 */
        ssize_t r = pread(fd, buf, sizeof buf, (off_t)(x % blocks) * 4096);
        if (r != (ssize_t)sizeof buf) { perror("pread"); return 1; }
        total += r;
    }
    long long t1 = now();
    close(fd);
    printf("%lld %lld\n", t1 - t0, total);
    return 0;
}
