/* Temporary files and directories in ferry directories: mkstemp and friends.  glibc
 * makes the file with its internal open, which never reaches our hooks, so for a ferry
 * template we pick the names ourselves and create through the ferry open/mkdir.  And
 * O_TMPFILE opens of a ferry directory (tmpfile() itself uses /tmp and stays local).
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define ATTEMPTS 100

static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/* Where the six Xs are, or NULL (EINVAL) for a template that has none. */
static char *xs_of(char *tmpl, int suffixlen)
{
    size_t n = strlen(tmpl);
    if (suffixlen < 0 || n < 6 + (size_t)suffixlen) return NULL;
    char *x = tmpl + n - suffixlen - 6;
    return strncmp(x, "XXXXXX", 6) == 0 ? x : NULL;
}

static void fill(char *x)
{
    unsigned char r[6];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        for (int i = 0; i < 6; i++) r[i] = (unsigned char)(getpid() * 31 + i * 7 + (long)x);
    for (int i = 0; i < 6; i++) x[i] = letters[r[i] % (sizeof letters - 1)];
}

static int is_ferry(const char *tmpl)
{
    struct fy_path p;
    return fy_resolve(AT_FDCWD, &tmpl, &p) > 0;
}

static int make_file(char *tmpl, int suffixlen, int flags)
{
    char *x = xs_of(tmpl, suffixlen);
    if (!x) { errno = EINVAL; return -1; }
    for (int i = 0; i < ATTEMPTS; i++) {
        fill(x);
        const char *name = tmpl;
        struct fy_path p;
        if (fy_resolve(AT_FDCWD, &name, &p) <= 0) { errno = EINVAL; return -1; }
        int fd = fy_open_path(&p, (flags & ~O_ACCMODE) | O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    errno = EEXIST;
    return -1;
}

/* Eight entry points, one body: only the suffix and extra flags differ. */
#define MKSTEMP_HOOK(name, types, params, real_args, suffixlen, flags) \
    FY_EXPORT int name params                                          \
    {                                                                  \
        if (!is_ferry(tmpl)) {                                         \
            return LIBC(name) real_args;                               \
        }                                                              \
        return make_file(tmpl, suffixlen, flags);                      \
    }
#define T1 char *
#define T2 char *, int
#define T3 char *, int, int

MKSTEMP_HOOK(mkstemp, T1, (char *tmpl), (tmpl), 0, 0)
MKSTEMP_HOOK(mkstemp64, T1, (char *tmpl), (tmpl), 0, 0)
MKSTEMP_HOOK(mkostemp, T2, (char *tmpl, int flags), (tmpl, flags), 0, flags)
MKSTEMP_HOOK(mkostemp64, T2, (char *tmpl, int flags), (tmpl, flags), 0, flags)
MKSTEMP_HOOK(mkstemps, T2, (char *tmpl, int suffixlen), (tmpl, suffixlen), suffixlen, 0)
MKSTEMP_HOOK(mkstemps64, T2, (char *tmpl, int suffixlen), (tmpl, suffixlen), suffixlen, 0)
MKSTEMP_HOOK(mkostemps, T3, (char *tmpl, int suffixlen, int flags), (tmpl, suffixlen, flags), suffixlen, flags)
MKSTEMP_HOOK(mkostemps64, T3, (char *tmpl, int suffixlen, int flags), (tmpl, suffixlen, flags), suffixlen, flags)

FY_EXPORT char *mkdtemp(char *tmpl)
{
    if (!is_ferry(tmpl)) return LIBC(mkdtemp)(tmpl);
    char *x = xs_of(tmpl, 0);
    if (!x) { errno = EINVAL; return NULL; }
    for (int i = 0; i < ATTEMPTS; i++) {
        fill(x);
        if (mkdir(tmpl, 0700) == 0) return tmpl;
        if (errno != EEXIST) return NULL;
    }
    return NULL;
}

/* ---------- O_TMPFILE ---------- */

/* open(dir, O_TMPFILE) in a ferry directory: the file has no name, so where it lives is
 * invisible to the program; it is an ordinary local file, in the replica directory itself
 * in cache mode (so a later linkat can make it a replica file without copying), in the
 * cache root, $TMPDIR or /tmp in direct mode.  It is not in the ferry fd table until
 * linkat gives it a ferry name (link.c). */
/* Anonymous files opened with O_EXCL, "never to be linked": F_GETFL does not say so, so
 * linkat asks here (the kernel refuses such a link itself when it makes it in cache mode).
 * Keyed by inode; an O_TMPFILE open that gets the same inode number again clears it. */
static struct { dev_t dev; ino_t ino; } never[64];
static unsigned never_next;
static pthread_mutex_t never_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_tmpfile(int fd, int excl)
{
    struct stat st;
    if (fd < 0 || LIBC(fstat)(fd, &st) < 0) return;
    pthread_mutex_lock(&never_lock);
    for (size_t i = 0; i < sizeof never / sizeof *never; i++)
        if (never[i].ino == st.st_ino && never[i].dev == st.st_dev) never[i].ino = 0;
    if (excl) {
        never[never_next % (sizeof never / sizeof *never)].dev = st.st_dev;
        never[never_next++ % (sizeof never / sizeof *never)].ino = st.st_ino;
    }
    pthread_mutex_unlock(&never_lock);
}

int fy_tmpfile_linkable(const struct stat *st)
{
    int ok = 1;
    pthread_mutex_lock(&never_lock);
    for (size_t i = 0; i < sizeof never / sizeof *never; i++)
        if (never[i].ino == st->st_ino && never[i].dev == st->st_dev) ok = 0;
    pthread_mutex_unlock(&never_lock);
    return ok;
}

int fy_open_tmpfile(const struct fy_path *p, int flags, mode_t mode)
{
    if ((flags & O_ACCMODE) == O_RDONLY) { errno = EINVAL; return -1; }
    struct stat st;
    int rc = fy_cfg.mode == FY_MODE_DIRECT ? fy_remote_stat(p->ferry, 0, &st) : fy_cache_stat(p, &st, 0);
    if (rc < 0) return fy_fail(rc);
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    int fd = -1;
    if (fy_cfg.mode == FY_MODE_CACHE) {
        fd = LIBC(open)(p->cache, flags, mode);
    } else {
        const char *tmpdir = getenv("TMPDIR");
        const char *dirs[] = {fy_cfg.cache_len ? fy_cfg.cache : NULL, tmpdir && *tmpdir ? tmpdir : NULL, "/tmp"};
        for (size_t i = 0; i < sizeof dirs / sizeof *dirs && fd < 0; i++)
            if (dirs[i]) fd = LIBC(open)(dirs[i], flags, mode);
    }
    note_tmpfile(fd, flags & O_EXCL);
    return fd;
}
