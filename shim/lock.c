/* File locks on ferry fds: fcntl record and OFD locks, flock, lockf.  The node keeps them
 * (so they hold between clients too); the kernel never sees them, in either mode.
 *
 * Owners, as Linux has them:
 *  - record locks (F_SETLK, lockf) belong to the process: owner = pid.  close(2) of *any*
 *    fd on the file drops them all, so once this process has taken one, every close of a
 *    ferry fd sends a one-way unlock of that file (the agent drops the rest when the
 *    process exits, however it exits);
 *  - OFD and flock locks belong to the open file description: owner = the agent's handle
 *    in direct mode (the agent sees the placeholder's last close), or in cache mode the
 *    id given at open, which dups, forks and exec carry in the fd table.  A cache-mode fd
 *    is a real file, so the shim reports its last close here (DESC_DROP) and the copies a
 *    fork hands to a child (DESC_HOLD).
 * A wait (F_SETLKW, F_OFD_SETLKW, flock without LOCK_NB, lockf F_LOCK) takes a connection
 * of its own so the process's other threads keep working; it is not interrupted by
 * signals (a known limit: docs/calls.md).
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static atomic_int posix_locked;  /* this process has taken a record lock on a ferry file */

/* Cache-mode descriptions this process has locked through (few: a small set). */
#define MAX_LOCKED 64
static uint64_t locked_desc[MAX_LOCKED];
static pthread_mutex_t locked_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t fy_new_desc_id(void)
{
    static atomic_uint next;
    return (1ULL << 63) | ((uint64_t)getpid() << 24) | (atomic_fetch_add(&next, 1) & 0xffffff);
}

static void remember_desc(uint64_t id)
{
    pthread_mutex_lock(&locked_lock);
    int free_slot = -1;
    for (int i = 0; i < MAX_LOCKED; i++) {
        if (locked_desc[i] == id) { free_slot = -2; break; }
        if (!locked_desc[i] && free_slot == -1) free_slot = i;
    }
    if (free_slot >= 0) locked_desc[free_slot] = id;
    pthread_mutex_unlock(&locked_lock);
}


static int desc_open_elsewhere(int fd, uint64_t id)
{
    for (int i = 0; i < fy_fd_limit(); i++) {
        struct fy_fd *o = fy_fd_get(i);
        if (i != fd && o && o->kind == FY_FD_CACHE && o->handle == id) return 1;
    }
    return 0;
}

/* close(fd) (or dup2 onto it) is about to forget ferry fd `f`: let go as the kernel would. */
void fy_lock_on_close(struct fy_fd *f, int fd)
{
    if (posix_locked) {
        struct fy_enc e;
        fy_enc_lock(&e, f->path, FY_LOCK_POSIX, (uint64_t)getpid(), (uint32_t)getpid(), FY_LOCK_UNLOCK, 0, 0, 0);
        fy_tell(&e, -1);
    }
    if (f->kind != FY_FD_CACHE || !f->handle || desc_open_elsewhere(fd, f->handle)) return;
    pthread_mutex_lock(&locked_lock);
    int found = 0;
    for (int i = 0; i < MAX_LOCKED; i++)
        if (locked_desc[i] == f->handle) { locked_desc[i] = 0; found = 1; }
    pthread_mutex_unlock(&locked_lock);
    if (found) {
        struct fy_enc e;
        fy_enc_desc_drop(&e, f->handle, (uint32_t)getpid());
        fy_tell(&e, -1);
    }
}

/* fork: the child holds copies of the descriptions we locked through (the parent says so,
 * so the message is in order with our own later closes).  Its record locks are not
 * inherited. */
FY_EXPORT pid_t fork(void)
{
    pid_t pid = LIBC(fork)();
    if (pid == 0) { posix_locked = 0; return 0; }
    if (pid < 0) return pid;
    uint64_t ids[MAX_LOCKED];
    int n = 0;
    pthread_mutex_lock(&locked_lock);
    for (int i = 0; i < MAX_LOCKED; i++)
        if (locked_desc[i]) ids[n++] = locked_desc[i];
    pthread_mutex_unlock(&locked_lock);
    for (int i = 0; i < n; i++) {
        struct fy_enc e;
        fy_enc_desc_hold(&e, ids[i], (uint32_t)pid);
        fy_tell(&e, -1);
    }
    return pid;
}

/* One LOCK request; `wait` sends it on a connection of its own. */
static int lock_call(struct fy_fd *f, uint32_t kind, uint64_t owner, int type, int64_t start, int64_t len, int wait)
{
    struct fy_enc e;
    fy_enc_lock(&e, f->path, kind, owner, (uint32_t)getpid(), (uint32_t)type, start, len, (uint32_t)wait);
    int rc = wait ? fy_call_waiting(&e) : fy_ask(&e);
    if (rc == 0 && type != FY_LOCK_UNLOCK) {
        if (kind == FY_LOCK_POSIX) posix_locked = 1;
        else if (f->kind == FY_FD_CACHE) remember_desc(owner);
    }
    return rc;
}

static uint64_t desc_owner(struct fy_fd *f)
{
    return f->handle;  /* direct: the agent's handle; cache: the id given at open */
}

/* The absolute start of a struct flock's range. */
static int range_start(int fd, const struct flock *l, int64_t *start)
{
    int64_t base = 0;
    if (l->l_whence == SEEK_CUR) {
        off_t cur = lseek(fd, 0, SEEK_CUR);
        if (cur < 0) return -errno;
        base = cur;
    } else if (l->l_whence == SEEK_END) {
        struct stat st;
        if (fstat(fd, &st) < 0) return -errno;
        base = st.st_size;
    } else if (l->l_whence != SEEK_SET) {
        return -EINVAL;
    }
    *start = base + l->l_start;
    return 0;
}

/* The access a lock of `type` needs, as fcntl(2) checks it. */
static int access_ok(const struct fy_fd *f, int type)
{
    int acc = f->flags & O_ACCMODE;
    if (type == F_RDLCK) return acc != O_WRONLY;
    if (type == F_WRLCK) return acc != O_RDONLY;
    return 1;
}

/* fcntl's lock commands on a ferry fd: the result, or -2 when `cmd` is not one. */
int fy_lock_fcntl(struct fy_fd *f, int fd, int cmd, void *arg)
{
    int ofd = cmd == F_OFD_GETLK || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW;
    int get = cmd == F_GETLK || cmd == F_OFD_GETLK;
    if (!ofd && !get && cmd != F_SETLK && cmd != F_SETLKW) return -2;
    struct flock *l = arg;
    if (!l) { errno = EFAULT; return -1; }
    if (l->l_type != F_RDLCK && l->l_type != F_WRLCK && l->l_type != F_UNLCK) { errno = EINVAL; return -1; }
    if (ofd && l->l_pid != 0) { errno = EINVAL; return -1; }
    if ((f->flags & O_PATH) || (!get && !access_ok(f, l->l_type))) { errno = EBADF; return -1; }
    int64_t start = 0;
    int rc = range_start(fd, l, &start);
    if (rc < 0) return fy_fail(rc);
    uint32_t kind = ofd ? FY_LOCK_OFD : FY_LOCK_POSIX;
    uint64_t owner = ofd ? desc_owner(f) : (uint64_t)getpid();
    if (!get) {
        return fy_result(lock_call(f, kind, owner, l->l_type, start, l->l_len, cmd == F_SETLKW || cmd == F_OFD_SETLKW));
    }
    struct fy_enc e;
    fy_enc_getlk(&e, f->path, kind, owner, (uint32_t)l->l_type, start, l->l_len);
    struct fy_rep_getlk rep;
    rc = fy_call(&e, -1, &rep, sizeof rep, NULL, 0, NULL);
    if (rc == 0) rc = fy_check_rep(FY_OP_GETLK, &rep, 0);  /* reply.c: a lock type, a range */
    if (rc < 0) return fy_fail(rc);
    l->l_type = (short)rep.type;
    if (rep.type != F_UNLCK) {
        l->l_whence = SEEK_SET;
        l->l_start = rep.start;
        l->l_len = rep.len;
        l->l_pid = rep.pid;
    }
    return 0;
}

FY_EXPORT int flock(int fd, int op)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return LIBC(flock)(fd, op);
    int type;
    switch (op & ~LOCK_NB) {
    case LOCK_SH: type = FY_LOCK_READ; break;
    case LOCK_EX: type = FY_LOCK_WRITE; break;
    case LOCK_UN: type = FY_LOCK_UNLOCK; break;
    default: errno = EINVAL; return -1;
    }
    return fy_result(lock_call(f, FY_LOCK_FLOCK, desc_owner(f), type, 0, 0, !(op & LOCK_NB) && type != FY_LOCK_UNLOCK));
}

static int lockf_common(int fd, int cmd, off_t len, int (*real)(int, int, off_t))
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return real(fd, cmd, len);
    struct flock l = {.l_whence = SEEK_CUR, .l_start = 0, .l_len = len};
    switch (cmd) {
    case F_TEST:
        l.l_type = F_RDLCK;
        if (fy_lock_fcntl(f, fd, F_GETLK, &l) < 0) return -1;
        if (l.l_type == F_UNLCK || l.l_pid == getpid()) return 0;
        errno = EACCES;
        return -1;
    case F_ULOCK: l.l_type = F_UNLCK; return fy_lock_fcntl(f, fd, F_SETLK, &l);
    case F_LOCK: l.l_type = F_WRLCK; return fy_lock_fcntl(f, fd, F_SETLKW, &l);
    case F_TLOCK: l.l_type = F_WRLCK; return fy_lock_fcntl(f, fd, F_SETLK, &l);
    default: errno = EINVAL; return -1;
    }
}

FY_EXPORT int lockf(int fd, int cmd, off_t len)
{
    return lockf_common(fd, cmd, len, LIBC(lockf));
}

FY_EXPORT int lockf64(int fd, int cmd, off_t len)
{
    return lockf_common(fd, cmd, len, LIBC(lockf64));
}
