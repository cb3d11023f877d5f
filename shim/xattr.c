/* Extended attributes: get/lget/fget, list/llist/flist, set/lset/fset, remove/lremove/fremove.
 *
 * The node keeps them (GETXATTR, LISTXATTR, SETXATTR, REMOVEXATTR); the shim only sizes the
 * answer as the kernel does (size 0 asks for the length, a smaller buffer is ERANGE).
 * Every other name goes to the node.  ferry carries no POSIX ACLs or security labels (the
 * system. and security. namespaces): `ls -l` probes system.posix_acl_access and
 * security.selinux on every file, and `ls -lR` must stay free of round trips.  Cache mode
 * answers those reads from the replica (which has none); direct mode says ENOTSUP, as a file
 * system without them does, and ls stops asking.  Setting them: see no_acl.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define XATTR_NAME_LIMIT 255     /* Linux's XATTR_NAME_MAX */
#define XATTR_VALUE_LIMIT 65536  /* Linux's XATTR_SIZE_MAX */

/* 1 with errno set for a name the kernel refuses before looking anything up. */
static int bad_name(const char *key)
{
    if (!key) { errno = EFAULT; return 1; }
    size_t n = strlen(key);
    if (n == 0 || n > XATTR_NAME_LIMIT) { errno = ERANGE; return 1; }
    return 0;
}

static int acl_or_label(const char *key)
{
    return strncmp(key, "system.", 7) == 0 || strncmp(key, "security.", 9) == 0;
}

/* A read of an ACL or label: 1 when the replica answers it (cache mode), -1 with errno
 * ENOTSUP (direct mode), 0 when it goes to the node. */
static int local_read(const char *key)
{
    if (!acl_or_label(key)) return 0;
    if (fy_cfg.mode == FY_MODE_CACHE) return 1;
    errno = ENOTSUP;
    return -1;
}

/* Setting a POSIX ACL (system.*) says EOPNOTSUPP, as a file system without ACLs does (and,
 * in direct mode, a security label too, which ferry does not carry either).  It costs
 * nothing: cp -p/-a set an ACL equal to the mode on every file they write, and fall back to
 * fchmod on that answer (in cache mode a set would otherwise have to put a file still being
 * written on the node first, uploading it twice). */
static int no_acl(const char *key)
{
    if (strncmp(key, "system.", 7) != 0 && (fy_cfg.mode == FY_MODE_CACHE || strncmp(key, "security.", 9) != 0))
        return 0;
    errno = EOPNOTSUPP;
    return 1;
}

/* GETXATTR (key) or LISTXATTR (key NULL): the reply's bytes into (buf, size). */
static ssize_t remote_get(const char *ferry, const char *key, int nofollow, void *buf, size_t size)
{
    struct fy_enc e;
    union { struct fy_rep_getxattr get; struct fy_rep_listxattr list; } rep;
    if (key) fy_enc_getxattr(&e, ferry, key, (uint32_t)nofollow);
    else fy_enc_listxattr(&e, ferry, (uint32_t)nofollow);
    char *val;
    size_t len;
    int rc = fy_call_alloc(&e, &rep, sizeof rep, &val, &len);
    if (rc < 0) { free(val); return fy_fail(rc); }
    /* reply.c: the length fills the tail exactly, a name list is NUL-terminated names */
    ssize_t checked = fy_dec_xattr(val, len, key ? rep.get.value_len : rep.list.names_len, !key);
    if (checked < 0) { free(val); return fy_fail(-EIO); }
    uint32_t n = (uint32_t)checked;
    if (size && n > size) { free(val); errno = ERANGE; return -1; }
    if (size && n && !buf) { free(val); errno = EFAULT; return -1; }
    if (size && n) memcpy(buf, val, n);
    free(val);
    return (ssize_t)n;
}

static int remote_set(const char *ferry, const char *key, const void *val, size_t size, int flags, int nofollow)
{
    struct fy_enc e;
    fy_enc_setxattr(&e, ferry, key, val, (uint32_t)size, (uint32_t)flags, (uint32_t)nofollow);
    return fy_result(fy_ask(&e));
}

static int remote_remove(const char *ferry, const char *key, int nofollow)
{
    struct fy_enc e;
    fy_enc_removexattr(&e, ferry, key, (uint32_t)nofollow);
    return fy_result(fy_ask(&e));
}

/* setxattr's own checks, in the kernel's order, before anything is looked up. */
static int bad_set(const char *key, const void *val, size_t size, int flags)
{
    if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) { errno = EINVAL; return 1; }
    if (bad_name(key)) return 1;
    if (size > XATTR_VALUE_LIMIT) { errno = E2BIG; return 1; }
    if (size && !val) { errno = EFAULT; return 1; }
    return 0;
}

/* A ferry fd the xattr calls may act on: NULL (EBADF set) for an O_PATH one, as Linux. */
static struct fy_fd *usable_fd(struct fy_fd *f)
{
    if (f->flags & O_PATH) { errno = EBADF; return NULL; }
    return f;
}

/* ---------- get ---------- */

static ssize_t get_ferry(const struct fy_path *p, const char *key, void *val, size_t size, int nofollow)
{
    if (bad_name(key)) return -1;
    int here = local_read(key);
    if (here < 0) return -1;
    if (!here) return remote_get(p->ferry, key, nofollow, val, size);
    struct stat st;
    int rc = fy_cache_stat(p, &st, nofollow);
    if (rc < 0) return fy_fail(rc);
    return (nofollow ? LIBC(lgetxattr) : LIBC(getxattr))(p->cache, key, val, size);
}

#define GET_HOOK(name, nofollow)                                                                      \
    FY_EXPORT ssize_t name(const char *path, const char *key, void *val, size_t size)                 \
    {                                                                                                 \
        FY_PATH_HOOK(AT_FDCWD, path, -1, LIBC(name)(path, key, val, size), get_ferry, key, val, size, \
                     nofollow);                                                                       \
    }
GET_HOOK(getxattr, 0)
GET_HOOK(lgetxattr, 1)

FY_EXPORT ssize_t fgetxattr(int fd, const char *key, void *val, size_t size)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return LIBC(fgetxattr)(fd, key, val, size);
    if (!usable_fd(f)) return -1;
    if (bad_name(key)) return -1;
    int here = local_read(key);
    if (here < 0) return -1;
    if (here && f->kind == FY_FD_CACHE) return LIBC(fgetxattr)(fd, key, val, size);
    return remote_get(f->path, key, 0, val, size);
}

/* ---------- list ---------- */

static ssize_t list_ferry(const struct fy_path *p, char *list, size_t size, int nofollow)
{
    return remote_get(p->ferry, NULL, nofollow, list, size);
}

#define LIST_HOOK(name, nofollow)                                                                         \
    FY_EXPORT ssize_t name(const char *path, char *list, size_t size)                                     \
    {                                                                                                     \
        FY_PATH_HOOK(AT_FDCWD, path, -1, LIBC(name)(path, list, size), list_ferry, list, size, nofollow); \
    }
LIST_HOOK(listxattr, 0)
LIST_HOOK(llistxattr, 1)

FY_EXPORT ssize_t flistxattr(int fd, char *list, size_t size)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return LIBC(flistxattr)(fd, list, size);
    return usable_fd(f) ? remote_get(f->path, NULL, 0, list, size) : -1;
}

/* ---------- set ---------- */

static int set_ferry(const struct fy_path *p, const char *key, const void *val, size_t size, int flags,
                     int nofollow)
{
    if (bad_set(key, val, size, flags) || no_acl(key)) return -1;
    return remote_set(p->ferry, key, val, size, flags, nofollow);
}

#define SET_HOOK(name, nofollow)                                                                   \
    FY_EXPORT int name(const char *path, const char *key, const void *val, size_t size, int flags) \
    {                                                                                              \
        FY_PATH_HOOK(AT_FDCWD, path, -1, LIBC(name)(path, key, val, size, flags), set_ferry, key,  \
                     val, size, flags, nofollow);                                                  \
    }
SET_HOOK(setxattr, 0)
SET_HOOK(lsetxattr, 1)

FY_EXPORT int fsetxattr(int fd, const char *key, const void *val, size_t size, int flags)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return LIBC(fsetxattr)(fd, key, val, size, flags);
    if (bad_set(key, val, size, flags) || !usable_fd(f) || no_acl(key)) return -1;
    return remote_set(f->path, key, val, size, flags, 0);
}

/* ---------- remove ---------- */

static int remove_ferry(const struct fy_path *p, const char *key, int nofollow)
{
    if (bad_name(key) || no_acl(key)) return -1;
    return remote_remove(p->ferry, key, nofollow);
}

#define REMOVE_HOOK(name, nofollow)                                                           \
    FY_EXPORT int name(const char *path, const char *key)                                     \
    {                                                                                         \
        FY_PATH_HOOK(AT_FDCWD, path, -1, LIBC(name)(path, key), remove_ferry, key, nofollow); \
    }
REMOVE_HOOK(removexattr, 0)
REMOVE_HOOK(lremovexattr, 1)

FY_EXPORT int fremovexattr(int fd, const char *key)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return LIBC(fremovexattr)(fd, key);
    if (!usable_fd(f) || bad_name(key) || no_acl(key)) return -1;
    return remote_remove(f->path, key, 0);
}
