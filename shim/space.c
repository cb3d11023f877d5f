/* The size of a file and the space it holds: truncate, ftruncate, fallocate and
 * posix_fallocate (and their *64 names).
 *
 * Cache-mode fds are real fds on replica files, so the kernel does it and the upload at
 * close carries the new size; truncate by name runs on the replica (holding the content
 * first) and is replayed one-way.  A direct-mode fd sends FTRUNCATE or FALLOCATE on its
 * node handle; the node runs fallocate(2) (posix_fallocate for mode 0, which writes zeros
 * where the file system cannot allocate, as glibc's does).
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

static int truncate_ferry(const struct fy_path *p, off_t len)
{
    struct fy_enc e;
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        fy_enc_truncate(&e, p->ferry, len);
        return fy_result(fy_ask(&e));
    }
    /* The replica must hold the content before truncating keeps part of it. */
    int fd = fy_open_path(p, O_WRONLY | O_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct fy_fd *f = fy_fd_get(fd);
    fy_enc_truncate(&e, f ? f->path : p->ferry, len);  /* the file itself, not a symlink to it */
    fy_fd_clear(fd);                                    /* not an upload: the node truncates its own copy */
    LIBC(close)(fd);
    if (LIBC(truncate)(p->cache, len) < 0) return -1;
    fy_tell(&e, -1);
    return 0;
}

FY_EXPORT int truncate(const char *path, off_t len)
{
    FY_PATH_HOOK(AT_FDCWD, path, -1, LIBC(truncate)(path, len), truncate_ferry, len);
}

FY_EXPORT int truncate64(const char *path, off64_t len) { return truncate(path, len); }

FY_EXPORT int ftruncate(int fd, off_t len)
{
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) return LIBC(ftruncate)(fd, len);
    if (len < 0) { errno = EINVAL; return -1; }
    struct fy_enc e;
    fy_enc_ftruncate(&e, f->handle, len);
    return fy_result(fy_ask(&e));
}

FY_EXPORT int ftruncate64(int fd, off64_t len) { return ftruncate(fd, len); }

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
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) return LIBC(fallocate)(fd, mode, offset, len);
    int err = remote_fallocate(f, mode, offset, len);
    if (err) { errno = err; return -1; }
    return 0;
}

FY_EXPORT int fallocate64(int fd, int mode, off64_t offset, off64_t len) { return fallocate(fd, mode, offset, len); }

FY_EXPORT int posix_fallocate(int fd, off_t offset, off_t len)
{
    struct fy_fd *f = fy_fd_direct(fd);
    if (!f) return LIBC(posix_fallocate)(fd, offset, len);
    return remote_fallocate(f, 0, offset, len);
}

FY_EXPORT int posix_fallocate64(int fd, off64_t offset, off64_t len) { return posix_fallocate(fd, offset, len); }
