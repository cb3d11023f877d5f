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
    return f ? fy_direct_read(f, buf, n, -1) : (errno = EBADF, -1);
}

static ssize_t ck_write(void *c, const char *buf, size_t n)
{
    struct fy_fd *f = fy_fd_get((int)(intptr_t)c);
    return f ? fy_direct_write(f, buf, n, -1) : (errno = EBADF, -1);
}

static int ck_seek(void *c, off64_t *pos, int whence)
{
    struct fy_fd *f = fy_fd_get((int)(intptr_t)c);
    if (!f) { errno = EBADF; return -1; }
    off_t r = fy_direct_lseek(f, *pos, whence);
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

static FILE *open_file(const char *path, const char *mode, FILE *(*real)(const char *, const char *))
{
    struct fy_path p;
    int r = fy_resolve(AT_FDCWD, &path, &p);
    if (r == 0) return real(path, mode);
    if (r < 0) return NULL;
    int flags = mode_flags(mode);
    if (flags < 0) { errno = EINVAL; return NULL; }
    int fd = fy_open_path(&p, flags, 0666);
    if (fd < 0) return NULL;
    FY_REAL(FILE *, fdopen, int, const char *);
    FILE *f = fy_cfg.mode == FY_MODE_DIRECT ? cookie_file(fd, mode) : real_fdopen(fd, mode);
    if (!f) { int e = errno; fy_close_fd(fd); errno = e; }
    return f;
}

FY_EXPORT FILE *fopen(const char *path, const char *mode)
{
    FY_REAL(FILE *, fopen, const char *, const char *);
    return open_file(path, mode, real_fopen);
}

FY_EXPORT FILE *fopen64(const char *path, const char *mode)
{
    FY_REAL(FILE *, fopen64, const char *, const char *);
    return open_file(path, mode, real_fopen64);
}

FY_EXPORT FILE *fdopen(int fd, const char *mode)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (f && f->kind == FY_FD_DIRECT) return cookie_file(fd, mode);
    FY_REAL(FILE *, fdopen, int, const char *);
    return real_fdopen(fd, mode);
}

FY_EXPORT int fclose(FILE *stream)
{
    FY_REAL(int, fclose, FILE *);
    if (cookie_fd(stream, 1) >= 0) return real_fclose(stream);  /* ck_close does the rest */
    int fd = stream ? fileno(stream) : -1;
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return real_fclose(stream);
    /* glibc closes the fd internally: flush the buffer, hand the file over, then close. */
    fflush(stream);
    fy_close_fd_keep(fd);
    return real_fclose(stream);
}

FY_EXPORT int fileno(FILE *stream)
{
    int fd = cookie_fd(stream, 0);
    if (fd >= 0) return fd;
    FY_REAL(int, fileno, FILE *);
    return real_fileno(stream);
}

FY_EXPORT int fileno_unlocked(FILE *stream)
{
    int fd = cookie_fd(stream, 0);
    if (fd >= 0) return fd;
    FY_REAL(int, fileno_unlocked, FILE *);
    return real_fileno_unlocked(stream);
}

/* Direct mode, at start-up: a standard stream whose fd is a ferry placeholder (the shell
 * ran `prog > /REMOTE@...` or `prog < ...`) would make glibc read and write the socket
 * behind our back, so the program's bytes would never reach the node (or a read would
 * wait forever).  Point stdin/stdout/stderr at cookie FILEs instead, as fopen does. */
void fy_stdio_adopt(void)
{
    static const char *const modes[3] = {"r", "w", "w"};
    FILE **streams[3] = {&stdin, &stdout, &stderr};
    for (int fd = 0; fd < 3; fd++) {
        struct fy_fd *f = fy_fd_get(fd);
        if (!f || f->kind != FY_FD_DIRECT) continue;
        FILE *c = cookie_file(fd, modes[fd]);
        if (!c) continue;
        if (fd == 2) setvbuf(c, NULL, _IONBF, 0);
        *streams[fd] = c;
    }
}
