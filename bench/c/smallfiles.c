/* smallfiles DIR N SIZE: create N files of SIZE bytes in DIR (open O_CREAT|O_EXCL, write,
 * close), stat each, unlink each.  Prints the nanoseconds of the three phases. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: smallfiles DIR N SIZE\n"); return 2; }
    const char *dir = argv[1];
    int n = atoi(argv[2]);
    size_t size = (size_t)atol(argv[3]);
    char *buf = malloc(size ? size : 1), path[4096];
    memset(buf, 'x', size ? size : 1);
    long long t0 = now();
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/s%06d", dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) { perror(path); return 1; }
        if (size && write(fd, buf, size) != (ssize_t)size) { perror("write"); return 1; }
        if (close(fd) != 0) { perror("close"); return 1; }
    }
    long long t1 = now();
    struct stat st;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/s%06d", dir, i);
        if (stat(path, &st) != 0) { perror(path); return 1; }
        if ((size_t)st.st_size != size) { fprintf(stderr, "%s: size %lld\n", path, (long long)st.st_size); return 1; }
    }
    long long t2 = now();
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/s%06d", dir, i);
        if (unlink(path) != 0) { perror(path); return 1; }
    }
    long long t3 = now();
    printf("%lld %lld %lld\n", t1 - t0, t2 - t1, t3 - t2);
    return 0;
}
