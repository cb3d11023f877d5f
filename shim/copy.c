/* Copies between fds in the kernel: copy_file_range, sendfile, sendfile64, splice.
 *
 * Cache-mode fds are real fds, so the kernel does these.  When either fd is a direct-mode
 * placeholder the kernel would only see a socket, so the copy is done here: reads and
 * writes through the direct-mode calls (and libc for the other, local, end), with the
 * offset pointers honoured as the kernel does (NULL: use and advance the fd's own offset;
 * otherwise read or write there, update *off and leave the fd's offset alone), and the
 * kernel's errnos for what it would refuse.  copy_file_range between a ferry fd and a local
 * one copies (in cache mode too, where the kernel would say EXDEV: the replica is on another
 * file system than the program's files), as it does between two local files.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#define MAX_RW 0x7ffff000L  /* Linux's MAX_RW_COUNT: the most one call moves */

struct end { int fd; struct fy_fd *f; };  /* f: the direct-mode entry, NULL for a real fd */

/* Up to n bytes at `off` (-1: at and advancing the fd's offset). */
static ssize_t end_read(const struct end *e, void *buf, size_t n, off64_t off)
{
    if (e->f) return fy_direct_read(e->f, buf, n, off);
    ssize_t r;
    do r = off < 0 ? LIBC(read)(e->fd, buf, n) : LIBC(pread64)(e->fd, buf, n, off); while (r < 0 && errno == EINTR);
    return r;
}

/* All n bytes if it can; the count written, or -1 when nothing was. */
static ssize_t end_write(const struct end *e, const char *buf, size_t n, off64_t off)
{
    if (e->f) return fy_direct_write(e->f, buf, n, off);
    size_t done = 0;
    while (done < n) {
        ssize_t w = off < 0 ? LIBC(write)(e->fd, buf + done, n - done)
                            : LIBC(pwrite64)(e->fd, buf + done, n - done, off + (off64_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return done ? (ssize_t)done : -1;
        done += (size_t)w;
    }
    return (ssize_t)done;
}

/* The read went further than the write: put the fd's offset back by n. */
static void end_unread(const struct end *e, size_t n)
{
    if (e->f) { fy_direct_lseek(e->f, -(off_t)n, SEEK_CUR); return; }
    LIBC(lseek64)(e->fd, -(off64_t)n, SEEK_CUR);
}

static ssize_t pump(const struct end *in, off64_t *in_off, const struct end *out, off64_t *out_off, size_t len)
{
    int saved = errno;
    if (len > (size_t)MAX_RW) len = (size_t)MAX_RW;
    size_t chunk = len < FY_IO_CHUNK ? len : FY_IO_CHUNK;
    char *buf = malloc(chunk ? chunk : 1);
    if (!buf) { errno = ENOMEM; return -1; }
    size_t total = 0;
    while (total < len) {
        size_t want = len - total < chunk ? len - total : chunk;
        ssize_t r = end_read(in, buf, want, in_off ? *in_off : -1);
        if (r <= 0) {
            if (r < 0 && !total) { int e = errno; free(buf); errno = e; return -1; }
            break;
        }
        ssize_t w = end_write(out, buf, (size_t)r, out_off ? *out_off : -1);
        size_t wrote = w > 0 ? (size_t)w : 0;
        if (in_off) *in_off += (off64_t)wrote;
        else if (wrote < (size_t)r) end_unread(in, (size_t)r - wrote);
        if (out_off) *out_off += (off64_t)wrote;
        total += wrote;
        if (w < 0 && !total) { int e = errno; free(buf); errno = e; return -1; }
        if (wrote < (size_t)r || (size_t)r < want) break;  /* stopped short, or the end of the input */
    }
    free(buf);
    errno = saved;
    return (ssize_t)total;
}

/* Status flags of an fd (through the fcntl hook, so a placeholder reports the program's). */
static int status_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_PATH)) { errno = EBADF; return -1; }
    return fl;
}

FY_EXPORT ssize_t copy_file_range(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out, size_t len,
                                  unsigned int flags)
{
    struct end in = {fd_in, fy_fd_direct(fd_in)}, out = {fd_out, fy_fd_direct(fd_out)};
    if (!in.f && !out.f) {
        int saved = errno;
        ssize_t r = LIBC(copy_file_range)(fd_in, off_in, fd_out, off_out, len, flags);
        /* Cache mode: the replica lives on another file system than the program's local
         * files; copy as direct mode does rather than refuse with EXDEV. */
        if (r >= 0 || errno != EXDEV || (!fy_fd_get(fd_in) && !fy_fd_get(fd_out))) return r;
        errno = saved;
    }
    int fl_in = status_flags(fd_in), fl_out = status_flags(fd_out);
    if (fl_in < 0 || fl_out < 0) return -1;
    if (flags) { errno = EINVAL; return -1; }
    struct stat si, so;
    if (fstat(fd_in, &si) < 0 || fstat(fd_out, &so) < 0) return -1;
    if (S_ISDIR(si.st_mode) || S_ISDIR(so.st_mode)) { errno = EISDIR; return -1; }
    if (!S_ISREG(si.st_mode) || !S_ISREG(so.st_mode)) { errno = EINVAL; return -1; }
    if ((fl_in & O_ACCMODE) == O_WRONLY || (fl_out & O_ACCMODE) == O_RDONLY || (fl_out & O_APPEND)) {
        errno = EBADF;
        return -1;
    }
    if ((off_in && *off_in < 0) || (off_out && *off_out < 0)) { errno = len ? EOVERFLOW : EINVAL; return -1; }
    if (len == 0) return 0;
    if (si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
        /* One file: the two ranges must not overlap. */
        off64_t a = off_in ? *off_in : lseek64(fd_in, 0, SEEK_CUR);
        off64_t b = off_out ? *off_out : lseek64(fd_out, 0, SEEK_CUR);
        if (a < 0 || b < 0) return -1;
        off64_t n = len > (size_t)MAX_RW ? MAX_RW : (off64_t)len;
        if (a < b + n && b < a + n) { errno = EINVAL; return -1; }
    }
    return pump(&in, off_in, &out, off_out, len);
}

static ssize_t sendfile_common(int out_fd, int in_fd, off64_t *offset, size_t count)
{
    struct end in = {in_fd, fy_fd_direct(in_fd)}, out = {out_fd, fy_fd_direct(out_fd)};
    /* the kernel's checks, in its order */
    int fl_in = status_flags(in_fd);
    if (fl_in < 0) return -1;
    if ((fl_in & O_ACCMODE) == O_WRONLY) { errno = EBADF; return -1; }
    if (offset && *offset < 0) { errno = EINVAL; return -1; }
    int fl_out = status_flags(out_fd);
    if (fl_out < 0) return -1;
    if ((fl_out & O_ACCMODE) == O_RDONLY) { errno = EBADF; return -1; }
    if (fl_out & O_APPEND) { errno = EINVAL; return -1; }
    if (count == 0) return 0;
    struct stat si;
    if (fstat(in_fd, &si) < 0) return -1;
    if (!S_ISREG(si.st_mode)) { errno = EINVAL; return -1; }  /* not a file the kernel could map */
    return pump(&in, offset, &out, NULL, count);
}

FY_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count)
{
    if (!fy_fd_direct(in_fd) && !fy_fd_direct(out_fd)) {
        return LIBC(sendfile64)(out_fd, in_fd, offset, count);
    }
    return sendfile_common(out_fd, in_fd, offset, count);
}

FY_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    if (!fy_fd_direct(in_fd) && !fy_fd_direct(out_fd)) {
        return LIBC(sendfile)(out_fd, in_fd, offset, count);
    }
    _Static_assert(sizeof(off_t) == sizeof(off64_t), "off_t is 64-bit here");
    return sendfile_common(out_fd, in_fd, (off64_t *)offset, count);
}

/* splice between a pipe and a direct-mode fd (the kernel would read the placeholder socket,
 * which never carries data, and wait forever).  Into a pipe it moves no more than the pipe
 * has room for, as the kernel does, so a program that splices in and out of one pipe from a
 * single thread never blocks on it. */
FY_EXPORT ssize_t splice(int fd_in, off64_t *off_in, int fd_out, off64_t *off_out, size_t len, unsigned int flags)
{
    struct end in = {fd_in, fy_fd_direct(fd_in)}, out = {fd_out, fy_fd_direct(fd_out)};
    if (!in.f && !out.f) {
        return LIBC(splice)(fd_in, off_in, fd_out, off_out, len, flags);
    }
    int fl_in = status_flags(fd_in), fl_out = status_flags(fd_out);
    if (fl_in < 0 || fl_out < 0) return -1;
    if ((fl_in & O_ACCMODE) == O_WRONLY || (fl_out & O_ACCMODE) == O_RDONLY) { errno = EBADF; return -1; }
    struct stat st;
    int pipe_fd = in.f ? fd_out : fd_in;
    if ((in.f && out.f) || fstat(pipe_fd, &st) < 0 || !S_ISFIFO(st.st_mode)) { errno = EINVAL; return -1; }
    if (pipe_fd == fd_in ? off_in != NULL : off_out != NULL) { errno = ESPIPE; return -1; }
    off64_t *off = in.f ? off_in : off_out;
    if ((out.f && (fl_out & O_APPEND)) || (off && *off < 0)) { errno = EINVAL; return -1; }
    if (len == 0) return 0;
    if (!in.f && ((flags & SPLICE_F_NONBLOCK) || (fl_in & O_NONBLOCK))) {
        struct pollfd pfd = {fd_in, POLLIN, 0};
        if (poll(&pfd, 1, 0) == 0) { errno = EAGAIN; return -1; }  /* empty, writers left */
    }
    if (!out.f) {
        int size = fcntl(fd_out, F_GETPIPE_SZ), queued = 0;
        if (size <= 0) size = 65536;
        if (ioctl(fd_out, FIONREAD, &queued) < 0) queued = 0;
        size_t room = queued < size ? (size_t)(size - queued) : 0;
        if (!room && ((flags & SPLICE_F_NONBLOCK) || (fl_out & O_NONBLOCK))) { errno = EAGAIN; return -1; }
        if (!room) room = PIPE_BUF;  /* wait for room, as the kernel does */
        if (len > room) len = room;
    }
    return pump(&in, in.f ? off_in : NULL, &out, out.f ? off_out : NULL, len);
}
