/* statlat DIR N PASSES OUT: stat DIR/f00000 .. DIR/f{N-1}, PASSES times over the same
 * names, timing each call with CLOCK_MONOTONIC.  Writes "pass ns" lines to OUT (a local
 * path).  Exit 1 if any stat failed (the first failure is reported on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <sys/stat.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 5) { fprintf(stderr, "usage: statlat DIR N PASSES OUT\n"); return 2; }
    const char *dir = argv[1];
    int n = atoi(argv[2]), passes = atoi(argv[3]);
    long long *ns = calloc((size_t)n * passes, sizeof *ns);
    char path[4096];
    int failed = 0;
    for (int p = 0; p < passes; p++) {
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/f%05d", dir, i);
            struct stat st;
            long long t0 = now_ns();
            int r = stat(path, &st);
            long long t1 = now_ns();
            ns[(size_t)p * n + i] = t1 - t0;
            if (r != 0 && !failed++)
                fprintf(stderr, "statlat: stat %s: %s\n", path, strerror(errno));
        }
    }
    FILE *f = fopen(argv[4], "w");
    if (!f) { perror(argv[4]); return 2; }
    for (int p = 0; p < passes; p++)
        for (int i = 0; i < n; i++)
            fprintf(f, "%d %lld\n", p, ns[(size_t)p * n + i]);
    fclose(f);
    if (failed) fprintf(stderr, "statlat: %d of %d stats failed\n", failed, n * passes);
    return failed ? 1 : 0;
}
