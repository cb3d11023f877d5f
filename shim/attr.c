/* Attribute changes: the chmod, chown and utimes families (tar, gzip, cp -p, touch).
 *
 * Cache mode: the change runs on the replica first (the program gets the kernel's own
 * answer), then goes to the agent as a one-way SETATTR carrying the values the replica
 * now holds, replayed on the node in order after the writes before it.  A file open for
 * writing is the exception: its upload on close carries mode and times already, and a
 * SETATTR sent now would reach the node before the file does.
 * Direct mode: one SETATTR request, answered by the node.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

struct setattr {
    uint32_t valid;            /* FY_SET_* */
    uint32_t mode, uid, gid;
    struct timespec ts[2];     /* may hold UTIME_NOW / UTIME_OMIT until resolved */
};

/* Not sent: the program's times could not be read (a wild pointer), which the kernel
 * answers with EFAULT; the local call hands the pointer on for the kernel to say so. */
#define SET_FAULT 0x80000000u

static int64_t ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

static void encode(struct fy_enc *e, const char *ferry, const struct setattr *a)
{
    fy_enc_setattr(e, ferry, a->valid, a->mode, a->uid, a->gid, ns(&a->ts[0]), ns(&a->ts[1]));
}

/* Direct mode: the node cannot know what "now" means here, so send the time. */
static int remote(const char *ferry, struct setattr *a)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 0; i < 2; i++)
        if (a->ts[i].tv_nsec == UTIME_NOW) a->ts[i] = now;
    struct fy_enc e;
    encode(&e, ferry, a);
    return fy_result(fy_ask(&e));
}

/* Run the change on a replica object: `path` relative to AT_FDCWD, or fd when path is NULL. */
static int apply_local(int fd, const char *path, int nofollow, const struct setattr *a)
{
    int atflag = nofollow ? AT_SYMLINK_NOFOLLOW : 0;
    if (a->valid & (FY_SET_UID | FY_SET_GID)) {
        uid_t u = a->valid & FY_SET_UID ? a->uid : (uid_t)-1;
        gid_t g = a->valid & FY_SET_GID ? a->gid : (gid_t)-1;
        if ((path ? LIBC(fchownat)(AT_FDCWD, path, u, g, atflag) : LIBC(fchown)(fd, u, g)) < 0) return -1;
    }
    if ((a->valid & FY_SET_MODE) && (path ? LIBC(fchmodat)(AT_FDCWD, path, a->mode, atflag) : LIBC(fchmod)(fd, a->mode)) < 0)
        return -1;
    if ((a->valid & (FY_SET_ATIME | FY_SET_MTIME)) &&
        (path ? LIBC(utimensat)(AT_FDCWD, path, a->ts, atflag) : LIBC(futimens)(fd, a->ts)) < 0)
        return -1;
    return 0;
}

/* After the replica took the change, send what it holds (umask-free mode, resolved times). */
static void replay(const char *ferry, int fd, const char *cache_path, struct setattr *a)
{
    struct stat st;
    if ((cache_path ? LIBC(fstatat)(AT_FDCWD, cache_path, &st, AT_SYMLINK_NOFOLLOW) : LIBC(fstat)(fd, &st)) == 0) {
        a->mode = st.st_mode & 07777;
        a->ts[0] = st.st_atim;
        a->ts[1] = st.st_mtim;
    }
    struct fy_enc e;
    encode(&e, ferry, a);
    fy_tell(&e, -1);
}

static int path_setattr(struct fy_path *p, int nofollow, struct setattr *a)
{
    if (a->valid & SET_FAULT) return fy_fail(-EFAULT);
    if (nofollow) a->valid |= FY_SET_NOFOLLOW;
    if (fy_cfg.mode == FY_MODE_DIRECT) return remote(p->ferry, a);
    struct stat st;
    int rc = fy_cache_stat(p, &st, 1);
    if (rc < 0) return fy_fail(rc);
    if (S_ISLNK(st.st_mode) && !nofollow) {
        /* Follow it here, in the client's namespace (the file may not be on the node yet,
         * and the link may lead out of ferry): start the call over on where it leads. */
        char canon[PATH_MAX];
        rc = fy_realpath(p->ferry, canon);
        return fy_fail(rc < 0 ? rc : fy_redirect_to(canon, 0));
    }
    if (apply_local(-1, p->cache, nofollow, a) < 0) return -1;
    replay(p->ferry, -1, p->cache, a);
    return 0;
}

static int fd_setattr(int fd, struct setattr *a, int *handled)
{
    struct fy_fd *f = fy_fd_get(fd);
    *handled = f != NULL;
    if (!f) return 0;
    if (a->valid & SET_FAULT) return fy_fail(-EFAULT);
    if (f->kind == FY_FD_DIRECT) return remote(f->path, a);
    if (apply_local(fd, NULL, 0, a) < 0) return -1;
    if (!f->dirty) replay(f->path, fd, NULL, a);
    return 0;
}

/* ---- hooks ---- */

#define PATH_HOOK(dirfd, path, nofollow, a, real_call) \
    FY_PATH_HOOK(dirfd, path, -1, real_call, path_setattr, nofollow, &a)
#define FD_HOOK(fd, a, real_call)            \
    int handled_;                            \
    int rc_ = fd_setattr(fd, &a, &handled_); \
    return handled_ ? rc_ : (real_call)

static struct setattr chmod_attr(mode_t mode) { return (struct setattr){.valid = FY_SET_MODE, .mode = mode & 07777}; }

static struct setattr chown_attr(uid_t uid, gid_t gid)
{
    return (struct setattr){.valid = (uid != (uid_t)-1 ? FY_SET_UID : 0) | (gid != (gid_t)-1 ? FY_SET_GID : 0),
                            .uid = uid, .gid = gid};
}

static struct setattr times_attr(const struct timespec *ts)
{
    struct setattr a = {.valid = FY_SET_ATIME | FY_SET_MTIME};
    struct timespec got[2];
    if (ts && fy_probe_copy(got, ts, sizeof got) < 0) return (struct setattr){.valid = SET_FAULT};
    for (int i = 0; i < 2; i++) {
        a.ts[i] = ts ? got[i] : (struct timespec){0, UTIME_NOW};
        if (a.ts[i].tv_nsec == UTIME_OMIT) a.valid &= ~(uint32_t)(i ? FY_SET_MTIME : FY_SET_ATIME);
    }
    return a;
}

static struct setattr timeval_attr(const struct timeval *tv)
{
    if (!tv) return times_attr(NULL);
    struct timespec ts[2] = {{tv[0].tv_sec, tv[0].tv_usec * 1000}, {tv[1].tv_sec, tv[1].tv_usec * 1000}};
    return times_attr(ts);
}

FY_EXPORT int chmod(const char *path, mode_t mode)
{
    struct setattr a = chmod_attr(mode);
    PATH_HOOK(AT_FDCWD, path, 0, a, LIBC(chmod)(path, mode));
}

FY_EXPORT int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
{
    struct setattr a = chmod_attr(mode);
    PATH_HOOK(dirfd, path, flags & AT_SYMLINK_NOFOLLOW, a, LIBC(fchmodat)(dirfd, path, mode, flags));
}

FY_EXPORT int fchmod(int fd, mode_t mode)
{
    struct setattr a = chmod_attr(mode);
    FD_HOOK(fd, a, LIBC(fchmod)(fd, mode));
}

FY_EXPORT int chown(const char *path, uid_t uid, gid_t gid)
{
    struct setattr a = chown_attr(uid, gid);
    PATH_HOOK(AT_FDCWD, path, 0, a, LIBC(chown)(path, uid, gid));
}

FY_EXPORT int lchown(const char *path, uid_t uid, gid_t gid)
{
    struct setattr a = chown_attr(uid, gid);
    PATH_HOOK(AT_FDCWD, path, 1, a, LIBC(lchown)(path, uid, gid));
}

FY_EXPORT int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
{
    if ((flags & AT_EMPTY_PATH) && fy_empty_path(path)) return fchown(dirfd, uid, gid);
    struct setattr a = chown_attr(uid, gid);
    PATH_HOOK(dirfd, path, flags & AT_SYMLINK_NOFOLLOW, a, LIBC(fchownat)(dirfd, path, uid, gid, flags));
}

FY_EXPORT int fchown(int fd, uid_t uid, gid_t gid)
{
    struct setattr a = chown_attr(uid, gid);
    FD_HOOK(fd, a, LIBC(fchown)(fd, uid, gid));
}

FY_EXPORT int utimensat(int dirfd, const char *path, const struct timespec ts[2], int flags)
{
    struct setattr a = times_attr(ts);
    if (!path) { FD_HOOK(dirfd, a, LIBC(utimensat)(dirfd, path, ts, flags)); }  /* the futimens form */
    PATH_HOOK(dirfd, path, flags & AT_SYMLINK_NOFOLLOW, a, LIBC(utimensat)(dirfd, path, ts, flags));
}

FY_EXPORT int futimens(int fd, const struct timespec ts[2])
{
    struct setattr a = times_attr(ts);
    FD_HOOK(fd, a, LIBC(futimens)(fd, ts));
}

FY_EXPORT int utimes(const char *path, const struct timeval tv[2])
{
    struct setattr a = timeval_attr(tv);
    PATH_HOOK(AT_FDCWD, path, 0, a, LIBC(utimes)(path, tv));
}

FY_EXPORT int lutimes(const char *path, const struct timeval tv[2])
{
    struct setattr a = timeval_attr(tv);
    PATH_HOOK(AT_FDCWD, path, 1, a, LIBC(lutimes)(path, tv));
}

FY_EXPORT int futimes(int fd, const struct timeval tv[2])
{
    struct setattr a = timeval_attr(tv);
    FD_HOOK(fd, a, LIBC(futimes)(fd, tv));
}

FY_EXPORT int utime(const char *path, const struct utimbuf *ub)
{
    struct timespec ts[2] = {{ub ? ub->actime : 0, 0}, {ub ? ub->modtime : 0, 0}};
    struct setattr a = times_attr(ub ? ts : NULL);
    PATH_HOOK(AT_FDCWD, path, 0, a, LIBC(utime)(path, ub));
}
