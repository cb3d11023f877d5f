/* The open family, close (and the upload of a written cache file), dup, fcntl and fsync.
 * The data calls on direct-mode fds are direct.c's.
 *
 * Follow one call: open() -> fy_resolve() -> fy_open_path() -> CACHE_OPEN (cache mode:
 * the agent makes the cache hold the file, then we open the cache file ourselves) or
 * OPEN (direct mode: the agent opens it on the node and we hand the program a
 * placeholder fd).  Everything that is not ferry's goes straight to libc.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MODE_ARG(flags, mode)              \
    mode_t mode = 0;                       \
    if ((flags) & (O_CREAT | O_TMPFILE)) { \
        va_list ap;                        \
        va_start(ap, flags);               \
        mode = (mode_t)va_arg(ap, int);    \
        va_end(ap);                        \
    }

/* A read-only open the shared table answers (table.c): 1 for a directory listed or a file
 * fetched under a trusted lease (the replica is the node's, as CACHE_OPEN would leave
 * it), -ENOENT for a name surely absent, 0 to ask the agent. */
static int trusted_open(const struct fy_path *p, int flags, struct stat *st)
{
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC))) return 0;
    if (LIBC(fstatat)(AT_FDCWD, p->cache, st, (flags & O_NOFOLLOW) ? AT_SYMLINK_NOFOLLOW : 0) == 0)
        return fy_table_trusted(st);
    return errno == ENOENT && fy_cache_absent(p) ? -ENOENT : 0;
}

/* Is fd still the entry trusted_open judged (not evicted or replaced in between)? */
static int same_entry(int fd, const struct stat *want)
{
    struct stat st;
    return LIBC(fstat)(fd, &st) == 0 && st.st_dev == want->st_dev && st.st_ino == want->st_ino &&
           st.st_ctim.tv_sec == want->st_ctim.tv_sec && st.st_ctim.tv_nsec == want->st_ctim.tv_nsec;
}

static int cache_open(const struct fy_path *p, int flags, mode_t mode)
{
    /* Exclusive create in a listed directory: nothing remote to fetch, and the kernel's
     * EEXIST is the right answer, so skip the round trip (tar x, cp).  The agent learns
     * of the file from its upload, or adopts it from the replica if asked first. */
    int exclusive = (flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL);
    struct fy_enc e;
    struct stat trusted;
    int rc, fd;
    if (exclusive) {
        rc = fy_cache_list_parent(p);
        if (rc == 0) fy_cache_creating(p);
    } else if ((rc = trusted_open(p, flags, &trusted)) > 0) {
        fd = LIBC(open)(p->cache, flags, mode);
        if (fd >= 0 && same_entry(fd, &trusted)) goto opened;
        if (fd >= 0) LIBC(close)(fd);
        rc = 0;
    }
    if (rc == 0 && !exclusive) {
        fy_enc_cache_open(&e, p->ferry, (uint32_t)flags, (uint32_t)mode);
        rc = fy_ask(&e);
    }
    if (rc < 0) return fy_fail(rc);
    fd = LIBC(open)(p->cache, flags, mode);
    if (fd < 0) return -1;
opened:;
    int dirty = (flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_CREAT));  /* O_CREAT: a new file */
    /* A written file is uploaded by name: the name the kernel resolved through replica
     * symlinks ("ld/f" with ld -> d is d/f), not the one given, which may be a symlink
     * itself (its upload would replace the link) or gone by the time the file closes. */
    const char *ferry = p->ferry;
    char real[PATH_MAX + 256], canon[PATH_MAX];
    if (dirty) {
        char proc[32];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        ssize_t n = LIBC(readlink)(proc, real, sizeof real - 1);
        if (n > 0) {
            real[n] = 0;
            if (strcmp(real, p->cache) != 0 && fy_uncache(real, canon, sizeof canon)) ferry = canon;
        }
    }
    struct fy_fd *f = fy_fd_set(fd, FY_FD_CACHE, flags, fy_new_desc_id(), ferry);
    if (f) {
        f->dirty = (uint8_t)dirty;
        f->owner = getpid();
    }
    return fd;
}

static int direct_open(const struct fy_path *p, int flags, mode_t mode)
{
    /* The placeholder is one end of a socketpair (the lowest free fd, as open(2) would
     * return); the agent keeps the other end and reads EOF once every copy of the
     * placeholder, in every process, is closed. */
    int pfd[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pfd) < 0) return -1;
    /* Nothing ever arrives on the program's end: a read that bypasses the hooks (glibc's
     * internal one under a FILE, a static child's) fails with EAGAIN after a tick
     * instead of waiting forever.  Writes that bypass them are carried by the agent. */
    struct timeval tick = {0, 1};
    setsockopt(pfd[0], SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);
    struct fy_enc e;
    fy_enc_open(&e, p->ferry, (uint32_t)flags, (uint32_t)(mode & ~fy_umask));
    struct fy_rep_open rep;
    int rc = fy_call(&e, pfd[1], &rep, sizeof rep, NULL, 0, NULL);
    LIBC(close)(pfd[1]);
    if (rc < 0) { LIBC(close)(pfd[0]); return fy_fail(rc); }
    if (!(flags & O_CLOEXEC)) fcntl(pfd[0], F_SETFD, 0);
    if (!fy_fd_set(pfd[0], FY_FD_DIRECT, flags, rep.handle, p->ferry)) { LIBC(close)(pfd[0]); errno = EMFILE; return -1; }
    return pfd[0];
}

int fy_open_path(const struct fy_path *p, int flags, mode_t mode)
{
    /* Linux (6.4 on) refuses this pair before looking at the path. */
    if ((flags & (O_CREAT | O_DIRECTORY)) == (O_CREAT | O_DIRECTORY)) { errno = EINVAL; return -1; }
    if ((flags & O_TMPFILE) == O_TMPFILE) return fy_open_tmpfile(p, flags, mode);  /* tmp.c */
    return fy_cfg.mode == FY_MODE_DIRECT ? direct_open(p, flags, mode) : cache_open(p, flags, mode);
}

/* The four open entry points differ only in their real call (`which`). */
static int real_open(int which, int dirfd, const char *path, int flags, mode_t mode)
{
    switch (which) {
    case 0: return LIBC(open)(path, flags, mode);
    case 1: return LIBC(open64)(path, flags, mode);
    case 2: return LIBC(openat)(dirfd, path, flags, mode);
    default: return LIBC(openat64)(dirfd, path, flags, mode);
    }
}

/* Everything but the local names fy_surely_local tells at once (kept out of line, so
 * the entry points set up no frame for them). */
__attribute__((noinline)) static int open_hooked(int which, int dirfd, const char *path, int flags, mode_t mode)
{
    FY_PATH_HOOK(dirfd, path, -1, fy_note_dirfd(real_open(which, dirfd, path, flags, mode), dirfd, path, flags),
                 fy_open_path, flags, mode);
}

#define OPEN_BODY(which, dirfd, real_call)                                                   \
    if (fy_surely_local(dirfd, path)) return fy_note_dirfd(real_call, dirfd, path, flags); \
    return open_hooked(which, dirfd, path, flags, mode)

FY_EXPORT int open(const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    OPEN_BODY(0, AT_FDCWD, LIBC(open)(path, flags, mode));
}

FY_EXPORT int open64(const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    OPEN_BODY(1, AT_FDCWD, LIBC(open64)(path, flags, mode));
}

FY_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    OPEN_BODY(2, dirfd, LIBC(openat)(dirfd, path, flags, mode));
}

FY_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    MODE_ARG(flags, mode);
    OPEN_BODY(3, dirfd, LIBC(openat64)(dirfd, path, flags, mode));
}

/* Fortified builds (_FORTIFY_SOURCE) call these when the mode argument is absent. */
FY_EXPORT int __open_2(const char *path, int flags) { return open(path, flags); }
FY_EXPORT int __open64_2(const char *path, int flags) { return open64(path, flags); }
FY_EXPORT int __openat_2(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }
FY_EXPORT int __openat64_2(int dirfd, const char *path, int flags) { return openat64(dirfd, path, flags); }
FY_EXPORT int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
FY_EXPORT int creat64(const char *path, mode_t mode) { return open64(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

/* Does ferry path `ferry` name, in the replica, the file `st` describes? */
static int names_fd(const char *ferry, const struct stat *st)
{
    char cpath[2 * PATH_MAX + 8];
    struct stat a;
    snprintf(cpath, sizeof cpath, "%s%s", fy_cfg.cache, ferry);
    return LIBC(fstatat)(AT_FDCWD, cpath, &a, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == st->st_ino && a.st_dev == st->st_dev;
}

/* Hand a written cache file to the agent for upload; the fd travels as SCM_RIGHTS so
 * the agent reads this very inode even if the program renames it next. */
static void cache_flush(struct fy_fd *f, int fd)
{
    /* Upload under the name the file has now, decided here, in the program's order (the
     * agent sees the replica later): renamed while open, the new name; unlinked with a
     * hard link left, no name we know, so no upload that would bring the old one back. */
    const char *path = f->path;
    char real[PATH_MAX + 256], now[PATH_MAX];
    struct stat st;
    if (LIBC(fstat)(fd, &st) == 0 && st.st_nlink > 0 && !names_fd(f->path, &st)) {
        char proc[32];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        ssize_t n = LIBC(readlink)(proc, real, sizeof real - 1);
        if (n <= 0) return;
        real[n] = 0;
        if (!fy_uncache(real, now, sizeof now) || !names_fd(now, &st)) return;
        path = now;
    }
    struct fy_enc e;
    fy_enc_cache_close(&e, path);
    fy_tell(&e, fd);
}

/* Another fd of this process still writing the same file? */
static int dirty_elsewhere(int fd, const char *path)
{
    for (int i = 0; i < fy_fd_limit(); i++) {
        struct fy_fd *o = fy_fd_get(i);
        if (i != fd && o && o->kind == FY_FD_CACHE && o->dirty && strcmp(o->path, path) == 0) return 1;
    }
    return 0;
}

/* Forget fd before the kernel reuses its number (close, or dup2/dup3 onto it).  A dirty
 * file is uploaded when its last fd here goes: a shell's `cmd > f` opens, dup2s to 1 and
 * closes the original before cmd has written a byte, and uploading then would commit
 * an empty file on the node as if it were the result. */
__attribute__((noinline)) static void release_ferry_fd(int fd)
{
    if (fd == fy_conn_fd()) { fy_conn_forget(); return; }
    if (fd == fy_replica_root_fd()) { fy_replica_root_forget(); return; }
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return;
    if (f->kind == FY_FD_CACHE && f->dirty && !dirty_elsewhere(fd, f->path)) cache_flush(f, fd);
    fy_lock_on_close(f, fd);
    fy_fd_clear(fd);
}

static inline void release_fd(int fd)
{
    if ((unsigned)fd < FY_MAXFD && !fy_fd_table_[fd] && fd != fy_conn_fd() && fd != fy_replica_root_fd()) return;
    release_ferry_fd(fd);
}

/* For fclose: do what close() does for ferry, but leave the fd for glibc to close. */
void fy_close_fd_keep(int fd) { release_fd(fd); }

int fy_close_fd(int fd)
{
    release_fd(fd);
    return LIBC(close)(fd);
}

FY_EXPORT int close(int fd) { return fy_close_fd(fd); }

/* Many programs (and every shell's `exec 3>file`) leave files open at exit: the kernel
 * closes them without a word to us, so upload what this process opened and still holds
 * dirty.  Only the opener does it (pids survive exec), not every child that inherited
 * the fd.  Destructors run before exit() flushes stdio, so flush stdio first.  A process
 * killed or leaving by _exit() gets no such chance. */
__attribute__((destructor)) static void flush_at_exit(void)
{
    if (fy_cfg.mode != FY_MODE_CACHE) return;
    int me = getpid(), flushed = 0;
    for (int fd = 0; fd < fy_fd_limit(); fd++) {
        struct fy_fd *f = fy_fd_get(fd);
        if (!f || f->kind != FY_FD_CACHE || !f->dirty || f->owner != me) continue;
        if (!flushed++) fflush(NULL);
        cache_flush(f, fd);
        f->dirty = 0;
    }
}

/* fsync on a cache file: push it to the node and wait until it is there. */
static int sync_fd(int fd, int datasync)
{
    struct fy_fd *f = fy_fd_get(fd);
    struct fy_enc e;
    if (f && f->kind == FY_FD_DIRECT) {
        fy_enc_fsync(&e, f->handle, (uint32_t)datasync);
        return fy_result(fy_ask(&e));
    }
    int rc = datasync ? LIBC(fdatasync)(fd) : LIBC(fsync)(fd);
    if (rc < 0 || !f || !f->dirty) return rc;
    cache_flush(f, fd);
    fy_enc_sync(&e);
    return fy_result(fy_ask(&e));
}

FY_EXPORT int fsync(int fd) { return sync_fd(fd, 0); }
FY_EXPORT int fdatasync(int fd) { return sync_fd(fd, 1); }

FY_EXPORT int dup(int fd)
{
    int r = LIBC(dup)(fd);
    if (r >= 0 && fy_fd_get(fd)) fy_fd_copy(fd, r);
    return r;
}

FY_EXPORT int dup2(int from, int to)
{
    if (from != to) release_fd(to);
    int r = LIBC(dup2)(from, to);
    if (r >= 0 && from != to) fy_fd_copy(from, to);
    return r;
}

FY_EXPORT int dup3(int from, int to, int flags)
{
    if (from != to) release_fd(to);
    int r = LIBC(dup3)(from, to, flags);
    if (r >= 0) fy_fd_copy(from, to);
    return r;
}

static int fcntl_common(int fd, int cmd, void *arg, int (*real)(int, int, ...))
{
    struct fy_fd *f = fy_fd_get(fd);
    int locked = f ? fy_lock_fcntl(f, fd, cmd, arg) : -2;
    if (locked != -2) return locked;
    if (f && f->kind == FY_FD_DIRECT) {
        /* The placeholder's own status flags are a socket's; report the program's. */
        if (cmd == F_GETFL) return (f->flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_CLOEXEC)) | O_LARGEFILE;
        if (cmd == F_SETFL) {
            f->flags = (f->flags & ~(O_APPEND | O_NONBLOCK)) | ((int)(long)arg & (O_APPEND | O_NONBLOCK));
            return 0;
        }
    }
    int r = real(fd, cmd, arg);
    if (r >= 0 && f && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) fy_fd_copy(fd, r);
    return r;
}

/* Every fcntl command takes one argument or none: read one word either way. */
#define FCNTL_HOOK(name)                                     \
    FY_EXPORT int name(int fd, int cmd, ...)                 \
    {                                                        \
        va_list ap;                                          \
        va_start(ap, cmd);                                   \
        void *arg = va_arg(ap, void *);                      \
        va_end(ap);                                          \
        return fcntl_common(fd, cmd, arg, LIBC(name));       \
    }
FCNTL_HOOK(fcntl)
FCNTL_HOOK(fcntl64)

/* Bulk closes (daemons, shells before exec): release what they take from under us. */
FY_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
    if (!(flags & CLOSE_RANGE_CLOEXEC)) {
        unsigned int top = last < FY_MAXFD ? last : FY_MAXFD - 1;
        for (unsigned int fd = first; fd <= top; fd++) release_fd((int)fd);
    }
    return LIBC(close_range)(first, last, flags);
}

FY_EXPORT void closefrom(int lowfd)
{
    close_range(lowfd < 0 ? 0 : (unsigned)lowfd, ~0U, 0);
}
