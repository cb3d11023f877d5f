/* passthru DIR NFILES ITERS: ITERS rounds of stat+open+read+close over DIR/p0000 ..
 * (local files only).  Prints the in-process loop time in ns on stdout. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: passthru DIR NFILES ITERS\n"); return 2; }
    int nfiles = atoi(argv[2]);
    long iters = atol(argv[3]);
    char (*paths)[4096] = malloc((size_t)nfiles * 4096);
    for (int i = 0; i < nfiles; i++)
        snprintf(paths[i], 4096, "%s/p%04d", argv[1], i);
    char buf[4096];
    long long bytes = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < iters; k++) {
        const char *p = paths[k % nfiles];
        struct stat st;
        if (stat(p, &st) != 0) { fprintf(stderr, "passthru: stat %s: %s\n", p, strerror(errno)); return 1; }
        int fd = open(p, O_RDONLY);
        if (fd < 0) { fprintf(stderr, "passthru: open %s: %s\n", p, strerror(errno)); return 1; }
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0) { fprintf(stderr, "passthru: read %s: %s\n", p, strerror(errno)); return 1; }
        bytes += r;
        close(fd);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    printf("%lld %lld\n", ns, bytes);
    return 0;
}
