/* Many threads on remote fds at once.  Usage: threads DIR NTHREADS
 *
 * Each thread writes its own file (write, then pwrite over part of it, then reads it back
 * through a second fd), and all threads pwrite disjoint blocks of one shared file and
 * pread them back.  Prints one line per check; any mismatch says where.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 4096
#define ROUNDS 24

static const char *dir;
static int shared_fd;
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(int t, const char *what)
{
    pthread_mutex_lock(&lock);
    failures++;
    fprintf(stderr, "thread %d: %s: %s\n", t, what, strerror(errno));
    pthread_mutex_unlock(&lock);
}

static void fill(char *buf, int t, int round)
{
    for (int i = 0; i < BLOCK; i++) buf[i] = (char)('a' + (t * 7 + round * 3 + i) % 26);
}

static void *worker(void *arg)
{
    int t = (int)(long)arg;
    char path[4096], buf[BLOCK], back[BLOCK];
    snprintf(path, sizeof path, "%s/t%02d.bin", dir, t);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { fail(t, "open"); return NULL; }
    for (int r = 0; r < ROUNDS; r++) {
        fill(buf, t, r);
        if (write(fd, buf, BLOCK) != BLOCK) fail(t, "write");
        /* the shared file: this thread's block of round r */
        off_t off = ((off_t)r * 64 + t) * BLOCK;
        if (pwrite(shared_fd, buf, BLOCK, off) != BLOCK) fail(t, "pwrite shared");
        if (pread(shared_fd, back, BLOCK, off) != BLOCK || memcmp(buf, back, BLOCK)) fail(t, "pread shared");
    }
    /* overwrite round 3 in place, positionally: the file position must not move */
    memset(buf, 'Z', BLOCK);
    if (pwrite(fd, buf, BLOCK, 3 * BLOCK) != BLOCK) fail(t, "pwrite own");
    if (lseek(fd, 0, SEEK_CUR) != (off_t)ROUNDS * BLOCK) fail(t, "offset moved");
    if (close(fd) != 0) fail(t, "close");
    int rfd = open(path, O_RDONLY);
    if (rfd < 0) { fail(t, "reopen"); return NULL; }
    for (int r = 0; r < ROUNDS; r++) {
        if (r == 3) memset(buf, 'Z', BLOCK); else fill(buf, t, r);
        ssize_t n = read(rfd, back, BLOCK);
        if (n != BLOCK || memcmp(buf, back, BLOCK)) { errno = 0; fail(t, "read back"); break; }
    }
    close(rfd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) { fprintf(stderr, "usage: %s DIR NTHREADS\n", argv[0]); return 2; }
    dir = argv[1];
    int n = atoi(argv[2]);
    char path[4096];
    snprintf(path, sizeof path, "%s/shared.bin", dir);
    shared_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (shared_fd < 0) { perror("open shared"); return 1; }
    pthread_t th[64];
    for (int i = 0; i < n && i < 64; i++) pthread_create(&th[i], NULL, worker, (void *)(long)i);
    for (int i = 0; i < n && i < 64; i++) pthread_join(th[i], NULL);
    if (fsync(shared_fd) != 0) { perror("fsync"); failures++; }
    close(shared_fd);
    printf("threads=%d failures=%d\n", n, failures);
    return failures != 0;
}
