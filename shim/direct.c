/* The data calls on direct-mode fds: read, write and seek, in every form (positional,
 * vectored, fortified).  A direct-mode fd is a placeholder the kernel knows only as a
 * socket, so each call becomes READ/WRITE/LSEEK on the agent's handle, at most
 * FY_IO_CHUNK per request; the file position lives in the agent, shared by dups and
 * forks as the kernel's is.  Any other fd goes straight to libc — a cache-mode write that
 * finds the replica full first asks the agent to make room (room_made).
 */
#include "fy.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

ssize_t fy_direct_read(struct fy_fd *f, void *buf, size_t n, int64_t off)
{
    size_t done = 0;
    do {  /* once even for n == 0: the node still says EBADF or EISDIR */
        uint32_t want = (uint32_t)(n - done < FY_IO_CHUNK ? n - done : FY_IO_CHUNK);
        /* The reply's data goes straight into buf: a wild one would fail the receive
         * half-way and lose the connection (EIO), where the kernel says EFAULT. */
        if (fy_probe_wr((char *)buf + done, want) < 0) { if (done) break; return fy_fail(-EFAULT); }
        struct fy_enc e;
        fy_enc_read(&e, f->handle, off < 0 ? -1 : off + (int64_t)done, want);
        struct fy_rep_read rep;
        size_t got = 0;
        int rc = fy_call(&e, -1, &rep, sizeof rep, (char *)buf + done, want, &got);  /* data straight into buf */
        if (rc == 0) rc = fy_check_rep(FY_OP_READ, &rep, got);  /* reply.c: data_len == got */
        if (rc < 0) { if (done) break; return fy_fail(rc); }
        done += got;
        if (got < want) break;
    } while (done < n);
    return (ssize_t)done;
}

ssize_t fy_direct_write(struct fy_fd *f, const void *buf, size_t n, int64_t off)
{
    size_t done = 0;
    do {
        size_t chunk = n - done < FY_IO_CHUNK ? n - done : FY_IO_CHUNK;
        if (fy_probe_rd((const char *)buf + done, chunk) < 0) { if (done) break; return fy_fail(-EFAULT); }
        struct fy_enc e;
        fy_enc_write(&e, f->handle, off < 0 ? -1 : off + (int64_t)done, (const char *)buf + done, (uint32_t)chunk);
        struct fy_rep_write rep;
        int rc = fy_call(&e, -1, &rep, sizeof rep, NULL, 0, NULL);
        if (rc == 0) rc = fy_check_rep(FY_OP_WRITE, &rep, chunk);  /* reply.c: count <= chunk */
        if (rc < 0) { if (done) break; return fy_fail(rc); }
        done += rep.count;
        if (rep.count < chunk) break;
    } while (done < n);
    return (ssize_t)done;
}

off_t fy_direct_lseek(struct fy_fd *f, off_t off, int whence)
{
    struct fy_enc e;
    fy_enc_lseek(&e, f->handle, off, (uint32_t)whence);
    struct fy_rep_lseek rep;
    int rc = fy_call(&e, -1, &rep, sizeof rep, NULL, 0, NULL);
    if (rc == 0) rc = fy_check_rep(FY_OP_LSEEK, &rep, 0);  /* reply.c: offset >= 0 */
    return rc < 0 ? fy_fail(rc) : (off_t)rep.offset;
}

FY_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) return LIBC(read)(fd, buf, n);
    return fy_direct_read(f, buf, n, -1);
}

FY_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    (void)buflen;
    return read(fd, buf, n);
}

/* A write to a cache-mode file that found the replica's file system full: the agent evicts
 * clean copies, least recently used first (CACHE_ROOM), and the write is tried once more.
 * ENOSPC stays only when what fills the cache is not yet on the node (never evicted). */
static int room_made(int fd, size_t need)
{
    if (errno != ENOSPC || fy_cfg.mode == FY_MODE_DIRECT || !fy_cfg.cache_len) return 0;
    /* By where the fd leads, not by our fd table: it may come from a parent (a shell's
     * redirection) that opened it in the replica. */
    char proc[32], where[PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = LIBC(readlink)(proc, where, sizeof where - 1);
    if (n <= (ssize_t)fy_cfg.cache_len || memcmp(where, fy_cfg.cache, fy_cfg.cache_len) != 0 ||
        where[fy_cfg.cache_len] != '/') {
        errno = ENOSPC;
        return 0;
    }
    struct fy_enc e;
    fy_enc_cache_room(&e, need);
    if (fy_ask(&e) == 0) return 1;
    errno = ENOSPC;
    return 0;
}

/* (Only after the kernel said ENOSPC: it has read the array, so we may too.) */
static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; i < cnt; i++) n += iov[i].iov_len;
    return n;
}

FY_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) {
        ssize_t r = LIBC(write)(fd, buf, n);
        return r < 0 && room_made(fd, n) ? LIBC(write)(fd, buf, n) : r;
    }
    return fy_direct_write(f, buf, n, -1);
}

#define PREAD_HOOK(name)                                           \
    FY_EXPORT ssize_t name(int fd, void *buf, size_t n, off_t off) \
    {                                                              \
        struct fy_fd *f = fy_fd_direct(fd);                        \
        if (!f) return LIBC(name)(fd, buf, n, off);                \
        if (off < 0) { errno = EINVAL; return -1; }                \
        return fy_direct_read(f, buf, n, off);                     \
    }
#define PWRITE_HOOK(name)                                                \
    FY_EXPORT ssize_t name(int fd, const void *buf, size_t n, off_t off) \
    {                                                                    \
        struct fy_fd *f = fy_fd_direct(fd);                              \
        if (!f) {                                                        \
            ssize_t r = LIBC(name)(fd, buf, n, off);                     \
            return r < 0 && room_made(fd, n) ? LIBC(name)(fd, buf, n, off) : r; \
        }                                                                \
        if (off < 0) { errno = EINVAL; return -1; }                      \
        return fy_direct_write(f, buf, n, off);                          \
    }
PREAD_HOOK(pread)
PREAD_HOOK(pread64)
PWRITE_HOOK(pwrite)
PWRITE_HOOK(pwrite64)

/* The kernel reads the whole iovec array before any I/O: EFAULT when it cannot. */
static int iov_unreadable(const struct iovec *iov, int cnt)
{
    if (cnt <= 0 || fy_probe_rd(iov, (size_t)cnt * sizeof *iov) == 0) return 0;
    errno = EFAULT;
    return 1;
}

FY_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) return LIBC(readv)(fd, iov, cnt);
    if (iov_unreadable(iov, cnt)) return -1;
    ssize_t total = 0;
    for (int i = 0; i < cnt; i++) {
        ssize_t n = fy_direct_read(f, iov[i].iov_base, iov[i].iov_len, -1);
        if (n < 0) return total ? total : -1;
        total += n;
        if ((size_t)n < iov[i].iov_len) break;
    }
    return total;
}

FY_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) {
        ssize_t r = LIBC(writev)(fd, iov, cnt);
        return r < 0 && errno == ENOSPC && room_made(fd, iov_total(iov, cnt)) ? LIBC(writev)(fd, iov, cnt) : r;
    }
    if (iov_unreadable(iov, cnt)) return -1;
    ssize_t total = 0;
    for (int i = 0; i < cnt; i++) {
        if (!iov[i].iov_len) continue;
        ssize_t n = fy_direct_write(f, iov[i].iov_base, iov[i].iov_len, -1);
        if (n < 0) return total ? total : -1;
        total += n;
        if ((size_t)n < iov[i].iov_len) break;
    }
    return total;
}

/* Vectored positional I/O on direct-mode fds: one positional request per buffer.  The v2
 * forms take offset -1 as "at the file position", as the kernel does. */
static ssize_t vec_io(struct fy_fd *f, const struct iovec *iov, int cnt, int64_t off, int writing)
{
    if (cnt < 0 || cnt > IOV_MAX) { errno = EINVAL; return -1; }
    if (iov_unreadable(iov, cnt)) return -1;
    ssize_t total = 0;
    for (int i = 0; i < cnt; i++) {
        if (!iov[i].iov_len) continue;
        int64_t at = off < 0 ? -1 : off + total;
        ssize_t n = writing ? fy_direct_write(f, iov[i].iov_base, iov[i].iov_len, at)
                            : fy_direct_read(f, iov[i].iov_base, iov[i].iov_len, at);
        if (n < 0) return total ? total : -1;
        total += n;
        if ((size_t)n < iov[i].iov_len) break;
    }
    return total;
}

#define PREADV_HOOK(name, writing, iovtype)                          \
    FY_EXPORT ssize_t name(int fd, iovtype *iov, int cnt, off_t off) \
    {                                                                \
        struct fy_fd *f = fy_fd_direct(fd);                          \
        if (!f) {                                                    \
            ssize_t r = LIBC(name)(fd, iov, cnt, off);               \
            return r < 0 && writing && errno == ENOSPC && room_made(fd, iov_total(iov, cnt)) \
                ? LIBC(name)(fd, iov, cnt, off) : r;                 \
        }                                                            \
        if (off < 0) { errno = EINVAL; return -1; }                  \
        return vec_io(f, iov, cnt, off, writing);                    \
    }
#define PREADV2_HOOK(name, writing, iovtype)                                    \
    FY_EXPORT ssize_t name(int fd, iovtype *iov, int cnt, off_t off, int flags) \
    {                                                                           \
        struct fy_fd *f = fy_fd_direct(fd);                                     \
        if (!f) {                                                               \
            ssize_t r = LIBC(name)(fd, iov, cnt, off, flags);                   \
            return r < 0 && writing && errno == ENOSPC && room_made(fd, iov_total(iov, cnt)) \
                ? LIBC(name)(fd, iov, cnt, off, flags) : r;                     \
        }                                                                       \
        if (off < -1) { errno = EINVAL; return -1; }                            \
        return vec_io(f, iov, cnt, off, writing);                               \
    }
PREADV_HOOK(preadv, 0, const struct iovec)
PREADV_HOOK(preadv64, 0, const struct iovec)
PREADV_HOOK(pwritev, 1, const struct iovec)
PREADV_HOOK(pwritev64, 1, const struct iovec)
PREADV2_HOOK(preadv2, 0, const struct iovec)
PREADV2_HOOK(preadv64v2, 0, const struct iovec)
PREADV2_HOOK(pwritev2, 1, const struct iovec)
PREADV2_HOOK(pwritev64v2, 1, const struct iovec)

FY_EXPORT off_t lseek(int fd, off_t off, int whence)
{
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) return LIBC(lseek)(fd, off, whence);
    return fy_direct_lseek(f, off, whence);
}

FY_EXPORT off64_t lseek64(int fd, off64_t off, int whence) { return lseek(fd, off, whence); }
