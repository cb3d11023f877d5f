/* stdio on ferry files.  glibc's FILE functions call its internal read/write, never our
 * hooks, so: in cache mode a FILE wraps the real cache fd (and fclose hands written files
 * to the agent, since glibc closes the fd internally); in direct mode a FILE is built
 * with fopencookie over our direct-mode calls.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* FILE*s we built with fopencookie, so fileno() can answer for them. */
static struct { FILE *f; int fd; } cookies[256];
static int ncookies;
static pthread_mutex_t cookie_lock = PTHREAD_MUTEX_INITIALIZER;

static void cookie_track(FILE *f, int fd)
{
    pthread_mutex_lock(&cookie_lock);
    for (int i = 0; i < 256; i++)
        if (!cookies[i].f) { cookies[i].f = f; cookies[i].fd = fd; ncookies++; break; }
    pthread_mutex_unlock(&cookie_lock);
}

static int cookie_fd(FILE *f, int forget)
{
    if (!ncookies) return -1;
    int fd = -1;
    pthread_mutex_lock(&cookie_lock);
    for (int i = 0; i < 256; i++)
        if (cookies[i].f == f) {
            fd = cookies[i].fd;
            if (forget) { cookies[i].f = NULL; ncookies--; }
            break;
        }
    pthread_mutex_unlock(&cookie_lock);
    return fd;
}

static ssize_t ck_read(void *c, char *buf, size_t n)
{
    struct fy_fd *f = fy_fd_get((int)(intptr_t)c);
    /* The fd may have been dup2'ed over since (a program restoring stdout): follow it. */
    return f ? fy_direct_read(f, buf, n, -1) : LIBC(read)((int)(intptr_t)c, buf, n);
}

static ssize_t ck_write(void *c, const char *buf, size_t n)
{
    struct fy_fd *f = fy_fd_get((int)(intptr_t)c);
    return f ? fy_direct_write(f, buf, n, -1) : LIBC(write)((int)(intptr_t)c, buf, n);
}

static int ck_seek(void *c, off64_t *pos, int whence)
{
    struct fy_fd *f = fy_fd_get((int)(intptr_t)c);
    off_t r = f ? fy_direct_lseek(f, *pos, whence) : LIBC(lseek)((int)(intptr_t)c, *pos, whence);
    if (r < 0) return -1;
    *pos = r;
    return 0;
}

static int ck_close(void *c) { return fy_close_fd((int)(intptr_t)c); }

static int mode_flags(const char *mode)
{
    int flags;
    switch (mode[0]) {
    case 'r': flags = O_RDONLY; break;
    case 'w': flags = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': flags = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return -1;
    }
    for (const char *m = mode + 1; *m && *m != ','; m++) {
        if (*m == '+') flags = (flags & ~O_ACCMODE) | O_RDWR;
        else if (*m == 'x') flags |= O_EXCL;
        else if (*m == 'e') flags |= O_CLOEXEC;
    }
    return flags;
}

static FILE *cookie_file(int fd, const char *mode)
{
    cookie_io_functions_t io = {ck_read, ck_write, ck_seek, ck_close};
    FILE *f = fopencookie((void *)(intptr_t)fd, mode, io);
    if (f) cookie_track(f, fd);
    return f;
}

static FILE *fopen_ferry(const struct fy_path *p, const char *mode)
{
    int flags = mode_flags(mode);
    if (flags < 0) { errno = EINVAL; return NULL; }
    int fd = fy_open_path(p, flags, 0666);
    if (fd < 0) return NULL;
    FILE *f = fy_cfg.mode == FY_MODE_DIRECT ? cookie_file(fd, mode) : LIBC(fdopen)(fd, mode);
    if (!f) { int e = errno; fy_close_fd(fd); errno = e; }
    return f;
}

FY_EXPORT FILE *fopen(const char *path, const char *mode)
{
    FY_PATH_HOOK(AT_FDCWD, path, NULL, LIBC(fopen)(path, mode), fopen_ferry, mode);
}

FY_EXPORT FILE *fopen64(const char *path, const char *mode)
{
    FY_PATH_HOOK(AT_FDCWD, path, NULL, LIBC(fopen64)(path, mode), fopen_ferry, mode);
}

FY_EXPORT FILE *fdopen(int fd, const char *mode)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (f && f->kind == FY_FD_DIRECT) return cookie_file(fd, mode);
    return LIBC(fdopen)(fd, mode);
}

FY_EXPORT int fclose(FILE *stream)
{
    if (cookie_fd(stream, 1) >= 0) return LIBC(fclose)(stream);  /* ck_close does the rest */
    int fd = stream ? fileno(stream) : -1;
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return LIBC(fclose)(stream);
    /* glibc closes the fd internally: flush the buffer, hand the file over, then close. */
    fflush(stream);
    fy_close_fd_keep(fd);
    return LIBC(fclose)(stream);
}

FY_EXPORT int fileno(FILE *stream)
{
    int fd = cookie_fd(stream, 0);
    if (fd >= 0) return fd;
    return LIBC(fileno)(stream);
}

FY_EXPORT int fileno_unlocked(FILE *stream)
{
    int fd = cookie_fd(stream, 0);
    if (fd >= 0) return fd;
    return LIBC(fileno_unlocked)(stream);
}

/* Direct mode: a standard stream whose fd is a ferry placeholder (the shell ran
 * `prog < /REMOTE@...`, or the program put a ferry fd on 0 with dup2) would make glibc
 * read the socket behind our back and wait there.  Point the stream at a cookie FILE,
 * as fopen does.  Run at start-up for the fds inherited across exec, and whenever fd 0
 * becomes a placeholder (fdtable.c).  Bytes glibc writes to fds 1 and 2 behind our back
 * need no cookie: the agent carries them (agent/placeholders.py). */
void fy_stdio_adopt(void)
{
    static const char *const modes[3] = {"r", "w", "w"};
    FILE **streams[3] = {&stdin, &stdout, &stderr};
    for (int fd = 0; fd < 3; fd++) {
        struct fy_fd *f = fy_fd_get(fd);
        if (!f || f->kind != FY_FD_DIRECT || cookie_fd(*streams[fd], 0) == fd) continue;
        FILE *c = cookie_file(fd, modes[fd]);
        if (!c) continue;
        if (fd == 2) setvbuf(c, NULL, _IONBF, 0);
        *streams[fd] = c;
    }
}

/* freopen: glibc reopens with its internal open (a ferry name would go to the local file
 * system) and refuses streams it did not build (our cookie FILEs). */
static FILE *reopen_direct(const struct fy_path *p, const char *local, const char *mode, FILE *fp)
{
    int std = fp == stdin ? 0 : fp == stdout ? 1 : fp == stderr ? 2 : -1;
    int flags = mode_flags(mode);
    if (flags < 0) { errno = EINVAL; return NULL; }
    int oldfd = fileno(fp);
    fflush(fp);
    int fd = p ? fy_open_path(p, flags, 0666) : open(local, flags, 0666);
    fclose(fp);
    if (fd < 0) return NULL;
    if (oldfd >= 0 && oldfd != fd) {
        /* The stream keeps its fd number, as glibc's freopen does: stdout stays fd 1. */
        if (dup3(fd, oldfd, flags & O_CLOEXEC) < 0) { int e = errno; close(fd); errno = e; return NULL; }
        close(fd);
        fd = oldfd;
    }
    FILE *nf = fy_fd_get(fd) ? cookie_file(fd, mode) : LIBC(fdopen)(fd, mode);
    if (!nf) { int e = errno; close(fd); errno = e; return NULL; }
    /* The FILE is a new one: the standard streams are variables, so point them at it. */
    if (std == 0) stdin = nf;
    else if (std == 1) stdout = nf;
    else if (std == 2) stderr = nf;
    return nf;
}

/* Cache mode: open through ferry (fetch, revalidate), then let glibc reopen the stream on
 * the replica file and take the fd it ends with as ours. */
static FILE *reopen_cache(const struct fy_path *p, const char *mode, FILE *fp,
                          FILE *(*real)(const char *, const char *, FILE *))
{
    int flags = mode_flags(mode);
    if (flags < 0) { errno = EINVAL; return NULL; }
    fflush(fp);
    int oldfd = LIBC(fileno)(fp);
    if (fy_fd_get(oldfd)) fy_close_fd_keep(oldfd);  /* glibc closes it: upload first */
    int nfd = fy_open_path(p, flags, 0666);
    if (nfd < 0) { int e = errno; fclose(fp); errno = e; return NULL; }
    struct fy_fd *nf = fy_fd_get(nfd);
    char ferry[PATH_MAX], cpath[2 * PATH_MAX + 8], m[16];
    snprintf(ferry, sizeof ferry, "%s", nf ? nf->path : p->ferry);
    snprintf(cpath, sizeof cpath, "%s%s", fy_cfg.cache, ferry);
    size_t k = 0;
    for (const char *c = mode; *c && k < sizeof m - 1; c++)
        if (*c != 'x') m[k++] = *c;  /* the file exists now: O_EXCL was checked above */
    m[k] = 0;
    FILE *res = real(cpath, m, fp);
    int e = errno;
    if (res) {
        int fd = LIBC(fileno)(res);
        struct fy_fd *f = fy_fd_set(fd, FY_FD_CACHE, flags, fy_new_desc_id(), ferry);
        if (f && nf) { f->dirty = nf->dirty; f->owner = nf->owner; }
    }
    fy_fd_clear(nfd);  /* the stream's fd carries the upload now */
    LIBC(close)(nfd);
    errno = e;
    return res;
}

static FILE *reopen(const char *path, const char *mode, FILE *fp, FILE *(*real)(const char *, const char *, FILE *))
{
    if (!fp || !mode) return real(path, mode, fp);
    struct fy_path p;
    const char *name = path;
    int r, cookie = cookie_fd(fp, 0) >= 0;
    struct fy_fd *old = fy_fd_get(fileno(fp));
    if (path) {
        r = fy_resolve(AT_FDCWD, &name, &p);
        if (r < 0) return NULL;
    } else if (old) {
        /* Same file, new mode: glibc would reopen /proc/self/fd/N, outside ferry. */
        size_t n = strlen(old->path);
        if (n >= sizeof p.ferry || fy_cfg.cache_len + n >= sizeof p.cache) { errno = ENAMETOOLONG; return NULL; }
        memcpy(p.ferry, old->path, n + 1);
        snprintf(p.cache, sizeof p.cache, "%s%s", fy_cfg.cache, old->path);
        r = 1;
    } else {
        r = 0;
    }
    if (fy_cfg.mode == FY_MODE_DIRECT && (r == 1 || cookie)) return reopen_direct(r == 1 ? &p : NULL, name, mode, fp);
    if (r == 1) return reopen_cache(&p, mode, fp, real);
    if (old) {
        fflush(fp);
        fy_close_fd_keep(fileno(fp));
    }
    return real(name, mode, fp);
}

FY_EXPORT FILE *freopen(const char *path, const char *mode, FILE *fp)
{
    return reopen(path, mode, fp, LIBC(freopen));
}

FY_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *fp)
{
    return reopen(path, mode, fp, LIBC(freopen64));
}
