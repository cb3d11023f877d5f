/* localcalls N OUT: the cost of the shim on calls that are not ferry's.  Times N calls each
 * of access("/tmp/...", F_OK) (absent file), stat of an existing file, and open+close of
 * it, in batches of 1000, and writes "call min_ns median_ns" per call to OUT (or stdout
 * for "-"): the fastest batch's mean says what the code costs when nothing else runs
 * (a shared VM's noise is an order of magnitude above the shim's few ns).  Run it with and
 * without `ferry run`: the difference is what the shim adds to a local call (the prefix
 * compare, the wild-pointer probe of issue 10). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#define BATCH 1000
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static const char *absent = "/tmp/ferry-localcalls-absent", *present = "/tmp/ferry-localcalls-present";

static void one(int which)
{
    struct stat st;
    switch (which) {
    case 0: access(absent, F_OK); break;
    case 1: stat(present, &st); break;
    default: close(open(present, O_RDONLY)); break;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: localcalls N OUT\n"); return 2; }
    long nb = atol(argv[1]) / BATCH;
    if (nb < 1) nb = 1;
    int fd = open(present, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) { perror(present); return 2; }
    close(fd);
    double *t = malloc(nb * sizeof *t);
    static const char *names[] = {"access", "stat", "open_close"};
    FILE *f = argv[2][0] == '-' && !argv[2][1] ? stdout : fopen(argv[2], "w");
    if (!f || !t) { perror(argv[2]); return 2; }
    for (int w = 0; w < 3; w++) {
        for (long b = 0; b < nb; b++) {
            double t0 = now_ns();
            for (int i = 0; i < BATCH; i++) one(w);
            t[b] = (now_ns() - t0) / BATCH;
        }
        qsort(t, nb, sizeof *t, cmp);
        fprintf(f, "%s %.1f %.1f\n", names[w], t[0], t[nb / 2]);
    }
    if (f != stdout) fclose(f);
    unlink(present);
    return 0;
}
