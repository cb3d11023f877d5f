/* The table of ferry fds.  A lookup for a non-ferry fd is one bounds check and one load.
 *
 * The table lives in ordinary memory, so fork copies it; exec would lose it, so the exec
 * hooks serialise it into FERRY_FDS (only fds without FD_CLOEXEC, exactly the ones the
 * kernel keeps) and init.c reads it back.  Each entry is
 *   "<fd>,<kind>,<flags>,<dirty>,<owner>,<handle>,<dev>,<ino>,<pathlen>,<path>"  separated by nothing.
 * dev and ino name the open file the fd is (the placeholder or the replica file): the new
 * image keeps an entry only while its fd is still that file, since a spawn's file actions
 * (posix_spawn_file_actions_adddup2, addclose, addopen) may have put something else there.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fy_fd *fy_fd_table_[FY_MAXFD];
#define table fy_fd_table_
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static int limit;  /* one past the highest fd ever entered: bounds the scans at exec and exit */

int fy_fd_limit(void) { return limit; }

static void entry_free(struct fy_fd *f)
{
    if (!f) return;
    free(f->path);
    free(f->dl);
    free(f);
}

struct fy_fd *fy_fd_set(int fd, int kind, int flags, uint64_t handle, const char *path)
{
    if ((unsigned)fd >= FY_MAXFD) return NULL;
    struct fy_fd *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->kind = (uint8_t)kind;
    f->flags = flags;
    f->handle = handle;
    f->path = strdup(path);
    if (!f->path) { free(f); return NULL; }
    pthread_mutex_lock(&table_lock);
    struct fy_fd *old = table[fd];
    table[fd] = f;
    if (fd >= limit) limit = fd + 1;
    pthread_mutex_unlock(&table_lock);
    entry_free(old);
    if (fd == 0 && kind == FY_FD_DIRECT) fy_stdio_adopt();  /* stdin now reads a placeholder */
    return f;
}

void fy_fd_clear(int fd)
{
    if ((unsigned)fd >= FY_MAXFD || !table[fd]) return;
    pthread_mutex_lock(&table_lock);
    struct fy_fd *old = table[fd];
    table[fd] = NULL;
    pthread_mutex_unlock(&table_lock);
    entry_free(old);
}

void fy_fd_copy(int from, int to)
{
    struct fy_fd *f = fy_fd_get(from);
    if (from == to) return;
    if (!f) { fy_fd_clear(to); return; }
    struct fy_fd *n = fy_fd_set(to, f->kind, f->flags, f->handle, f->path);
    if (n) { n->dirty = f->dirty; n->owner = f->owner; }
}

char *fy_fd_export(void)
{
    size_t cap = 256, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = 0;
    for (int fd = 0; fd < limit; fd++) {
        struct fy_fd *f = table[fd];
        if (!f) continue;
        int fdflags = LIBC(fcntl)(fd, F_GETFD);
        if (fdflags < 0 || (fdflags & FD_CLOEXEC)) continue;
        struct stat st;
        if (LIBC(fstat)(fd, &st) < 0) continue;
        size_t need = len + strlen(f->path) + 96;
        if (need > cap) {
            while (need > cap) cap *= 2;
            char *t = realloc(s, cap);
            if (!t) { free(s); return NULL; }
            s = t;
        }
        len += (size_t)snprintf(s + len, cap - len, "%d,%d,%d,%d,%d,%llu,%llu,%llu,%zu,%s", fd, f->kind,
                                f->flags, f->dirty, f->owner, (unsigned long long)f->handle,
                                (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, strlen(f->path),
                                f->path);
    }
    return s;
}

void fy_fd_import(const char *s)
{
    while (s && *s) {
        char *e;
        long fd = strtol(s, &e, 10);
        if (*e != ',') return;
        long kind = strtol(e + 1, &e, 10);
        if (*e != ',') return;
        long flags = strtol(e + 1, &e, 10);
        if (*e != ',') return;
        long dirty = strtol(e + 1, &e, 10);
        if (*e != ',') return;
        long owner = strtol(e + 1, &e, 10);
        if (*e != ',') return;
        unsigned long long handle = strtoull(e + 1, &e, 10);
        if (*e != ',') return;
        unsigned long long dev = strtoull(e + 1, &e, 10);
        if (*e != ',') return;
        unsigned long long ino = strtoull(e + 1, &e, 10);
        if (*e != ',') return;
        unsigned long plen = strtoul(e + 1, &e, 10);
        if (*e != ',' || plen >= PATH_MAX || strnlen(e + 1, plen) < plen) return;
        char path[PATH_MAX];
        memcpy(path, e + 1, plen);
        path[plen] = 0;
        s = e + 1 + plen;
        struct stat st;
        if (LIBC(fstat)((int)fd, &st) < 0 || st.st_dev != dev || st.st_ino != ino) continue;  /* replaced */
        struct fy_fd *f = fy_fd_set((int)fd, (int)kind, (int)flags, handle, path);
        if (f) { f->dirty = (uint8_t)dirty; f->owner = (int)owner; }
    }
}
