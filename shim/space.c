/* Reserving space: fallocate and posix_fallocate (and their *64 names).
 *
 * Cache-mode fds are real fds on replica files, so the kernel does it and the upload at
 * close carries the new size.  A direct-mode fd sends FALLOCATE on its node handle; the
 * node runs fallocate(2) (posix_fallocate for mode 0, which writes zeros where the file
 * system cannot allocate, as glibc's does).
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>

static struct fy_fd *direct(int fd)
{
    struct fy_fd *f = fy_fd_get(fd);
    return f && f->kind == FY_FD_DIRECT ? f : NULL;
}

/* 0 or a positive errno, as posix_fallocate returns it. */
static int remote_fallocate(struct fy_fd *f, int mode, off_t offset, off_t len)
{
    if (offset < 0 || len <= 0) return EINVAL;
    if ((f->flags & O_PATH) || (f->flags & O_ACCMODE) == O_RDONLY) return EBADF;
    struct fy_enc e;
    fy_enc_fallocate(&e, f->handle, (uint32_t)mode, offset, len);
    return -fy_ask(&e);
}

FY_EXPORT int fallocate(int fd, int mode, off_t offset, off_t len)
{
    struct fy_fd *f = direct(fd);
    if (!f) { FY_REAL(int, fallocate, int, int, off_t, off_t); return real_fallocate(fd, mode, offset, len); }
    int err = remote_fallocate(f, mode, offset, len);
    if (err) { errno = err; return -1; }
    return 0;
}

FY_EXPORT int fallocate64(int fd, int mode, off64_t offset, off64_t len) { return fallocate(fd, mode, offset, len); }

FY_EXPORT int posix_fallocate(int fd, off_t offset, off_t len)
{
    struct fy_fd *f = direct(fd);
    if (!f) { FY_REAL(int, posix_fallocate, int, off_t, off_t); return real_posix_fallocate(fd, offset, len); }
    return remote_fallocate(f, 0, offset, len);
}

FY_EXPORT int posix_fallocate64(int fd, off64_t offset, off64_t len) { return posix_fallocate(fd, offset, len); }
