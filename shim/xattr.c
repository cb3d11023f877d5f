/* Extended attributes, as far as programs that merely probe them need (ls -l asks for
 * ACLs on every file).  Cache mode reads the replica's; direct mode has none yet and says
 * ENOTSUP, which such programs take as "no ACLs".  Setting them is the POSIX issue's.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/xattr.h>

/* 0: not ferry's; 1: use `p.cache`; -1: errno set (ENOTSUP in direct mode). */
static int xattr_path(const char *path, int nofollow, struct fy_path *p)
{
    int r = fy_resolve(AT_FDCWD, &path, p);
    if (r <= 0) return r;
    if (fy_cfg.mode == FY_MODE_DIRECT) { errno = ENOTSUP; return -1; }
    struct stat st;
    int rc = fy_cache_stat(p, &st, nofollow);
    return rc < 0 ? fy_fail(rc) : 1;
}

#define GET_HOOK(name, nofollow)                                                              \
    FY_EXPORT ssize_t name(const char *path, const char *key, void *val, size_t size)       \
    {                                                                                         \
        FY_REAL(ssize_t, name, const char *, const char *, void *, size_t);                  \
        struct fy_path p;                                                                     \
        int r = xattr_path(path, nofollow, &p);                                               \
        return r < 0 ? -1 : real_##name(r ? p.cache : path, key, val, size);                 \
    }
GET_HOOK(getxattr, 0)
GET_HOOK(lgetxattr, 1)

#define LIST_HOOK(name, nofollow)                                                             \
    FY_EXPORT ssize_t name(const char *path, char *list, size_t size)                        \
    {                                                                                         \
        FY_REAL(ssize_t, name, const char *, char *, size_t);                                \
        struct fy_path p;                                                                     \
        int r = xattr_path(path, nofollow, &p);                                               \
        return r < 0 ? -1 : real_##name(r ? p.cache : path, list, size);                     \
    }
LIST_HOOK(listxattr, 0)
LIST_HOOK(llistxattr, 1)

static int direct_fd(int fd)
{
    struct fy_fd *f = fy_fd_get(fd);
    return f && f->kind == FY_FD_DIRECT;
}

FY_EXPORT ssize_t fgetxattr(int fd, const char *key, void *val, size_t size)
{
    if (direct_fd(fd)) { errno = ENOTSUP; return -1; }
    FY_REAL(ssize_t, fgetxattr, int, const char *, void *, size_t);
    return real_fgetxattr(fd, key, val, size);
}

FY_EXPORT ssize_t flistxattr(int fd, char *list, size_t size)
{
    if (direct_fd(fd)) { errno = ENOTSUP; return -1; }
    FY_REAL(ssize_t, flistxattr, int, char *, size_t);
    return real_flistxattr(fd, list, size);
}
