/* The stat family and access.
 *
 * Cache mode answers from the replica: one local stat.  Only when the replica has no
 * answer yet (ENOENT/ENOTDIR, or a directory still carrying the "not yet listed" mode 0
 * the agent gives placeholders) does it ask the agent (CACHE_LOOKUP) and look again.
 * Direct mode asks the agent every time (STAT/FSTAT).
 */
#include "fy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* A device number per mount root, so tools that compare st_dev (find -xdev, du) see one fs. */
static dev_t mount_dev(const char *ferry_path)
{
    size_t n = fy_mount_root(ferry_path);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)ferry_path[i]) * 16777619u;
    return makedev(0xfe, h & 0xfffff);
}

void fy_attr_to_stat(const struct fy_attr *a, const char *ferry_path, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_dev = mount_dev(ferry_path);
    st->st_ino = a->ino;
    st->st_mode = a->mode;
    st->st_nlink = a->nlink;
    st->st_uid = a->uid;
    st->st_gid = a->gid;
    st->st_rdev = a->rdev;
    st->st_size = a->size;
    st->st_blksize = a->blksize;
    st->st_blocks = a->blocks;
    st->st_atim.tv_sec = a->atime_ns / 1000000000;
    st->st_atim.tv_nsec = a->atime_ns % 1000000000;
    st->st_mtim.tv_sec = a->mtime_ns / 1000000000;
    st->st_mtim.tv_nsec = a->mtime_ns % 1000000000;
    st->st_ctim.tv_sec = a->ctime_ns / 1000000000;
    st->st_ctim.tv_nsec = a->ctime_ns % 1000000000;
}

int fy_remote_stat(const char *ferry_path, int nofollow, struct stat *st)
{
    struct fy_enc e;
    fy_enc_stat(&e, ferry_path, nofollow ? FY_STAT_NOFOLLOW : 0);
    struct fy_rep_stat rep;
    int rc = fy_call(&e, -1, &rep, sizeof rep, NULL, 0, NULL);
    if (rc == 0) fy_attr_to_stat(&rep.attr, ferry_path, st);
    return rc;
}

static int remote_fstat(struct fy_fd *f, struct stat *st)
{
    struct fy_enc e;
    fy_enc_fstat(&e, f->handle);
    struct fy_rep_fstat rep;
    int rc = fy_call(&e, -1, &rep, sizeof rep, NULL, 0, NULL);
    if (rc == 0) fy_attr_to_stat(&rep.attr, f->path, st);
    return rc;
}

int fy_cache_lookup(const struct fy_path *p)
{
    struct fy_enc e;
    fy_enc_cache_lookup(&e, p->ferry);
    return fy_ask(&e);
}

static int unlisted_dir(const struct stat *st) { return S_ISDIR(st->st_mode) && (st->st_mode & 07777) == 0; }

/* Is the replica directory holding p (below its mount root) missing or not listed yet? */
static int parent_unlisted(const struct fy_path *p)
{
    const char *slash = strrchr(p->ferry, '/');
    if (!slash || (size_t)(slash - p->ferry) < fy_mount_root(p->ferry)) return 0;  /* the mount root */
    char dir[sizeof p->cache];
    size_t n = strlen(p->cache) - strlen(slash);
    memcpy(dir, p->cache, n);
    dir[n] = 0;
    struct stat st;
    return LIBC(fstatat)(AT_FDCWD, dir, &st, 0) < 0 || unlisted_dir(&st);
}

/* Cache mode: what a replica entry reports is the node's identity, not the replica's, so a
 * file looks the same in every run and on every client (git's index, make, rsync -u and
 * tar compare these).  The agent keeps "ino ctime_ns blocks mtime_ns size" of the node's
 * version beside the entry (agent/cache.py, note_identity).  st_dev is one number per
 * mount; st_ino the node's; while the replica copy is still that version (same mtime and,
 * for a file, size) st_ctime and, for a placeholder (a hole of the right size), st_blocks
 * are the node's too.  An entry the node has not seen yet (made here, or a symlink, which holds no
 * user xattr) keeps the replica's inode number with the top bit set: never one of the
 * node's, so no tool takes two files for hard links of one.  `fd` >= 0: read it there. */
static void node_identity_of(const char *cache_path, int fd, const char *ferry_path, struct stat *st);

static void node_identity(const char *cache_path, int fd, const char *ferry_path, struct stat *st)
{
    int saved = errno;  /* a stat that succeeds leaves errno as it found it */
    node_identity_of(cache_path, fd, ferry_path, st);
    errno = saved;
}

/* The five numbers of the entry's identity xattr (node_ino 0: it has none), from the
 * shared table when it knows them for this very state of the entry (table.c), else read
 * and noted there for the next stat. */
static void identity_of(const char *cache_path, int fd, const struct stat *st, struct fy_table_ident *id)
{
    if (fy_table_ident(st, id)) return;
    char v[128], proc[32];
    ssize_t n;
    if (fd >= 0) {
        n = LIBC(fgetxattr)(fd, "user.ferry.node", v, sizeof v - 1);
        if (n < 0 && errno == EBADF) {  /* an O_PATH fd has no xattr calls: its inode by name */
            snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
            n = LIBC(getxattr)(proc, "user.ferry.node", v, sizeof v - 1);
        }
    } else {
        n = LIBC(lgetxattr)(cache_path, "user.ferry.node", v, sizeof v - 1);
    }
    unsigned long long ino;
    long long ctime_ns, blocks, mtime_ns, size;
    if (n > 0) v[n] = 0;
    memset(id, 0, sizeof *id);
    if (n > 0 && sscanf(v, "%llu %lld %lld %lld %lld", &ino, &ctime_ns, &blocks, &mtime_ns, &size) == 5 && ino) {
        id->node_ino = ino;
        id->node_ctime_ns = ctime_ns;
        id->blocks = blocks;
        id->mtime_ns = mtime_ns;
        id->size = size;
    } else if (n < 0 && errno != ENODATA && errno != ENOTSUP && errno != EPERM) {
        return;  /* (not an answer about the entry: nothing to note) */
    }
    fy_table_note_ident(st, id);
}

static void node_identity_of(const char *cache_path, int fd, const char *ferry_path, struct stat *st)
{
    struct fy_table_ident id;
    identity_of(cache_path, fd, st, &id);
    st->st_dev = mount_dev(ferry_path);
    if (!id.node_ino) {
        st->st_ino |= 1ULL << 63;
        return;
    }
    st->st_ino = id.node_ino;
    /* (a directory's size is its file system's own: the replica's never matches the node's) */
    if ((st->st_size != id.size && !S_ISDIR(st->st_mode)) ||
        st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec != id.mtime_ns) return;
    st->st_ctim.tv_sec = id.node_ctime_ns / 1000000000;
    st->st_ctim.tv_nsec = id.node_ctime_ns % 1000000000;
    if (S_ISREG(st->st_mode) && st->st_blocks == 0) st->st_blocks = id.blocks;
}

/* A symlink the replica keeps marked (it leads out of its mount: see agent/cache.py)
 * reports the length of the target the node holds, as readlink does. */
static void link_size(const char *cache_path, struct stat *st)
{
    char t[PATH_MAX];
    if (S_ISLNK(st->st_mode) && st->st_size > (off_t)(fy_cfg.cache_len + sizeof FY_LINK_OUT_MARK - 1)) {
        ssize_t n = fy_replica_readlink(cache_path, t, sizeof t);
        if (n >= 0) st->st_size = n;
    }
}

static int cache_stat(const struct fy_path *p, struct stat *st, int nofollow);

/* 0 with *st filled, or -errno. */
int fy_cache_stat(const struct fy_path *p, struct stat *st, int nofollow)
{
    int rc = cache_stat(p, st, nofollow);
    if (rc == 0) link_size(p->cache, st);
    return rc;
}

/* Is p's last name surely absent: not in the replica, whose directory holding it has the
 * node's whole listing under a lease the shared table says is trusted (table.c)?  Then
 * ENOENT needs no round trip (git looks for .gitignore in every directory).  Only below
 * the mount root, and only the last name: an ENOENT from a component on the way (an
 * unlisted directory, which root may walk into) says nothing. */
int fy_cache_absent(const struct fy_path *p)
{
    const char *slash = strrchr(p->ferry, '/'), *cslash = strrchr(p->cache, '/');
    struct stat st;
    if (!slash || !cslash || (size_t)(slash - p->ferry) < fy_mount_root(p->ferry)) return 0;
    if (LIBC(fstatat)(AT_FDCWD, p->cache, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) return 0;
    char dir[sizeof p->cache];
    size_t n = (size_t)(cslash - p->cache);
    memcpy(dir, p->cache, n);
    dir[n] = 0;
    return LIBC(fstatat)(AT_FDCWD, dir, &st, 0) == 0 && S_ISDIR(st.st_mode) && fy_table_trusted(&st);
}

/* The replica tree as an O_PATH fd, so that a stat walks only the ferry path's own
 * components below it, not the replica root's from / as well (git stats every file, and
 * each component is a lookup: a sixth of a second-run git status went there).  Kept high
 * and close-on-exec, as the agent connection is; forgotten when the program closes or
 * dup2s onto its number (io.c, release_fd), and opened again on next use. */
int fy_root_fd_ = -1;
#define root_fd fy_root_fd_

static int replica_root(void)
{
    int fd = __atomic_load_n(&root_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 || fy_cfg.mode != FY_MODE_CACHE || !fy_cfg.cache_len) return fd;
    fd = LIBC(open)(fy_cfg.cache, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int high = LIBC(fcntl)(fd, F_DUPFD_CLOEXEC, 640);
    if (high >= 0) {
        LIBC(close)(fd);
        fd = high;
    }
    int none = -1;
    if (!__atomic_compare_exchange_n(&root_fd, &none, fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        LIBC(close)(fd);  /* another thread's is there */
        return none;
    }
    return fd;
}

void fy_replica_root_forget(void) { __atomic_store_n(&root_fd, -1, __ATOMIC_RELEASE); }

/* fstatat of p's replica entry (p->cache), from the replica root fd when there is one. */
static int replica_fstatat(const struct fy_path *p, struct stat *st, int flag)
{
    int root = replica_root();
    if (root < 0) return LIBC(fstatat)(AT_FDCWD, p->cache, st, flag);
    return LIBC(fstatat)(root, p->cache + fy_cfg.cache_len + 1, st, flag);
}

static int cache_stat(const struct fy_path *p, struct stat *st, int nofollow)
{
    int flag = nofollow ? AT_SYMLINK_NOFOLLOW : 0;
    if (replica_fstatat(p, st, flag) == 0 && !unlisted_dir(st)) return 0;
    if (errno == ENOENT && fy_cache_absent(p)) return -ENOENT;
    if (errno != ENOENT && errno != ENOTDIR && !unlisted_dir(st)) return -errno;
    if (nofollow && errno == ENOENT && parent_unlisted(p)) {
        /* Listing the parent places the name; looking the name itself up would follow it
         * if it is a symlink, and lstat/readlink must not fail on where a link points
         * (an absolute target, refused by the agent, is still a link to show). */
        struct fy_path parent;
        memcpy(&parent, p, sizeof parent);
        char *name = strrchr(parent.ferry, '/');
        *name = 0;
        int rc = fy_cache_lookup(&parent);
        *name = '/';
        if (rc == -FY_EREDIRECT) return fy_redirect_extend(rc, strrchr(p->ferry, '/'));
        if (rc == 0 && LIBC(fstatat)(AT_FDCWD, p->cache, st, flag) == 0 && !unlisted_dir(st)) return 0;
    }
    int rc = fy_cache_lookup(p);
    if (rc < 0) return rc;
    return LIBC(fstatat)(AT_FDCWD, p->cache, st, flag) == 0 ? 0 : -errno;
}

/* Before a mutation: the parent directory must be listed, or local checks (EEXIST,
 * ENOTEMPTY) would answer from an incomplete replica. */
int fy_cache_list_parent(const struct fy_path *p)
{
    struct stat st;
    /* The mount root has no parent here, but it exists: put it in the replica so that
     * mkdir -p of the root says EEXIST locally instead of replaying MKDIR "/". */
    if (fy_mount_root(p->ferry) == strlen(p->ferry)) {
        int rc = fy_cache_stat(p, &st, 0);
        return rc < 0 ? rc : 0;
    }
    struct fy_path parent;
    memcpy(&parent, p, sizeof parent);
    char *s = strrchr(parent.ferry, '/');
    char *c = strrchr(parent.cache, '/');
    if (!s || !c) return 0;
    *s = 0;
    *c = 0;
    int rc = fy_cache_stat(&parent, &st, 0);
    if (rc < 0) return fy_redirect_extend(rc, strrchr(p->ferry, '/'));
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* The agent learns of a file made without asking from its upload at close; one never
 * closed (the program killed, or gone by _exit) it finds at the run's end by listing the
 * directories it was told of here (agent/writeback.py, adopt_unannounced), not the whole
 * replica, which other runs share.  Told before the file exists, so a program killed at
 * any point leaves none untold; once per process and directory in a row (tar x, cp -r make
 * a directory's files one after another), under the order lock (reset in a forked child). */
void fy_cache_creating(const struct fy_path *p)
{
    static char told[PATH_MAX];
    const char *slash = strrchr(p->ferry, '/');
    if (!slash) return;
    size_t n = (size_t)(slash - p->ferry);
    fy_order_begin();
    if (n >= sizeof told || memcmp(told, p->ferry, n) != 0 || told[n] != 0) {
        struct fy_enc e;
        fy_enc_cache_created(&e, p->ferry);
        fy_tell(&e, -1);
        if (n < sizeof told) {
            memcpy(told, p->ferry, n);
            told[n] = 0;
        }
    }
    fy_order_end();
}

/* A pair with one ferry name and one local name is EXDEV, unless the ferry name's parent
 * crosses a link out of its mount: then it is a local name too, and the call goes on with
 * it (-FY_EREDIRECT).  Either mode; any other answer leaves the pair as it is (0). */
int fy_parent_redirect(const struct fy_path *p)
{
    if (fy_mount_root(p->ferry) == strlen(p->ferry)) return 0;
    int rc;
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        char parent[PATH_MAX];
        struct stat st;
        size_t n = (size_t)(strrchr(p->ferry, '/') - p->ferry);
        memcpy(parent, p->ferry, n);
        parent[n] = 0;
        rc = fy_redirect_extend(fy_remote_stat(parent, 0, &st), strrchr(p->ferry, '/'));
    } else {
        rc = fy_cache_list_parent(p);
    }
    return rc == -FY_EREDIRECT ? rc : 0;
}

/* Stat a resolved ferry path in whichever mode. */
/* The program's buffer is filled last, in one guarded copy: a wild one is EFAULT, as the
 * kernel says for a local file. */
static int path_stat(const struct fy_path *p, struct stat *st, int nofollow)
{
    struct stat got;
    int rc;
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        rc = fy_remote_stat(p->ferry, nofollow, &got);
    } else {
        rc = fy_cache_stat(p, &got, nofollow);
        if (rc == 0) node_identity(p->cache, -1, p->ferry, &got);
    }
    return rc < 0 ? fy_fail(rc) : fy_copy_out(st, &got, sizeof got);
}

static int fd_stat(int fd, struct stat *st)
{
    struct fy_fd *f = fy_fd_get(fd);
    struct stat got;
    int rc;
    if (!f) return LIBC(fstat)(fd, st);
    if (f->kind == FY_FD_CACHE) {  /* a real fd on a replica file: as its stat(path) says */
        if (LIBC(fstat)(fd, &got) < 0) return -1;
        node_identity(NULL, fd, f->path, &got);
        return fy_copy_out(st, &got, sizeof got);
    }
    rc = remote_fstat(f, &got);
    return rc < 0 ? fy_fail(rc) : fy_copy_out(st, &got, sizeof got);
}

__attribute__((noinline)) static int at_stat_hooked(int dirfd, const char *path, struct stat *st, int flags)
{
    if ((flags & AT_EMPTY_PATH) && fy_empty_path(path)) return fd_stat(dirfd, st);
    FY_PATH_HOOK(dirfd, path, -1, LIBC(fstatat)(dirfd, path, st, flags), path_stat, st, flags & AT_SYMLINK_NOFOLLOW);
}

static inline int at_stat(int dirfd, const char *path, struct stat *st, int flags)
{
    if (!(flags & AT_EMPTY_PATH) && fy_surely_local(dirfd, path)) return LIBC(fstatat)(dirfd, path, st, flags);
    return at_stat_hooked(dirfd, path, st, flags);
}

FY_EXPORT int stat(const char *path, struct stat *st) { return at_stat(AT_FDCWD, path, st, 0); }
FY_EXPORT int stat64(const char *path, struct stat64 *st) { return at_stat(AT_FDCWD, path, (struct stat *)st, 0); }
FY_EXPORT int lstat(const char *path, struct stat *st) { return at_stat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
FY_EXPORT int lstat64(const char *path, struct stat64 *st) { return at_stat(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW); }
FY_EXPORT int fstat(int fd, struct stat *st) { return fd_stat(fd, st); }
FY_EXPORT int fstat64(int fd, struct stat64 *st) { return fd_stat(fd, (struct stat *)st); }
FY_EXPORT int fstatat(int dirfd, const char *path, struct stat *st, int flags) { return at_stat(dirfd, path, st, flags); }
FY_EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags) { return at_stat(dirfd, path, (struct stat *)st, flags); }

/* Binaries built against glibc < 2.33 call these instead (ver is _STAT_VER, the kernel layout). */
FY_EXPORT int __xstat(int ver, const char *path, struct stat *st) { (void)ver; return at_stat(AT_FDCWD, path, st, 0); }
FY_EXPORT int __xstat64(int ver, const char *path, struct stat64 *st) { (void)ver; return at_stat(AT_FDCWD, path, (struct stat *)st, 0); }
FY_EXPORT int __lxstat(int ver, const char *path, struct stat *st) { (void)ver; return at_stat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
FY_EXPORT int __lxstat64(int ver, const char *path, struct stat64 *st) { (void)ver; return at_stat(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW); }
FY_EXPORT int __fxstat(int ver, int fd, struct stat *st) { (void)ver; return fd_stat(fd, st); }
FY_EXPORT int __fxstat64(int ver, int fd, struct stat64 *st) { (void)ver; return fd_stat(fd, (struct stat *)st); }
FY_EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags) { (void)ver; return at_stat(dirfd, path, st, flags); }
FY_EXPORT int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags) { (void)ver; return at_stat(dirfd, path, (struct stat *)st, flags); }

static void stat_to_statx(const struct stat *st, struct statx *sx)
{
    memset(sx, 0, sizeof *sx);
    sx->stx_mask = STATX_BASIC_STATS;
    sx->stx_blksize = (uint32_t)st->st_blksize;
    sx->stx_nlink = (uint32_t)st->st_nlink;
    sx->stx_uid = st->st_uid;
    sx->stx_gid = st->st_gid;
    sx->stx_mode = (uint16_t)st->st_mode;
    sx->stx_ino = st->st_ino;
    sx->stx_size = (uint64_t)st->st_size;
    sx->stx_blocks = (uint64_t)st->st_blocks;
    sx->stx_atime.tv_sec = st->st_atim.tv_sec;
    sx->stx_atime.tv_nsec = (uint32_t)st->st_atim.tv_nsec;
    sx->stx_mtime.tv_sec = st->st_mtim.tv_sec;
    sx->stx_mtime.tv_nsec = (uint32_t)st->st_mtim.tv_nsec;
    sx->stx_ctime.tv_sec = st->st_ctim.tv_sec;
    sx->stx_ctime.tv_nsec = (uint32_t)st->st_ctim.tv_nsec;
    sx->stx_rdev_major = major(st->st_rdev);
    sx->stx_rdev_minor = minor(st->st_rdev);
    sx->stx_dev_major = major(st->st_dev);
    sx->stx_dev_minor = minor(st->st_dev);
}

/* What node_identity put in `st` over the kernel's statx of the same replica entry. */
static void statx_identity(const struct stat *st, struct statx *sx)
{
    sx->stx_ino = st->st_ino;
    sx->stx_dev_major = major(st->st_dev);
    sx->stx_dev_minor = minor(st->st_dev);
    sx->stx_ctime.tv_sec = st->st_ctim.tv_sec;
    sx->stx_ctime.tv_nsec = (uint32_t)st->st_ctim.tv_nsec;
    sx->stx_blocks = (uint64_t)st->st_blocks;
}

static int statx_ferry(const struct fy_path *p, int flags, unsigned int mask, struct statx *sx)
{
    struct stat st;
    if (path_stat(p, &st, flags & AT_SYMLINK_NOFOLLOW) < 0) return -1;
    if (fy_cfg.mode == FY_MODE_CACHE) {
        if (LIBC(statx)(AT_FDCWD, p->cache, flags, mask, sx) < 0) return -1;
        statx_identity(&st, sx);
        if (S_ISLNK(st.st_mode)) sx->stx_size = (uint64_t)st.st_size;  /* a marked link's: see link_size */
        return 0;
    }
    struct statx got;
    stat_to_statx(&st, &got);
    return fy_copy_out(sx, &got, sizeof got);
}

FY_EXPORT int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *sx)
{
    if ((flags & AT_EMPTY_PATH) && fy_empty_path(path)) {
        struct fy_fd *f = fy_fd_get(dirfd);
        if (f && f->kind == FY_FD_CACHE) {
            struct stat st;
            if (fd_stat(dirfd, &st) < 0 || LIBC(statx)(dirfd, path, flags, mask, sx) < 0) return -1;
            statx_identity(&st, sx);
            return 0;
        }
        if (!fy_fd_direct(dirfd)) return LIBC(statx)(dirfd, path, flags, mask, sx);
        struct stat st;
        struct statx got;
        if (fd_stat(dirfd, &st) < 0) return -1;
        stat_to_statx(&st, &got);
        return fy_copy_out(sx, &got, sizeof got);
    }
    FY_PATH_HOOK(dirfd, path, -1, LIBC(statx)(dirfd, path, flags, mask, sx), statx_ferry, flags, mask, sx);
}

static int access_ferry(const struct fy_path *p, int amode, int flags)
{
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        struct fy_enc e;
        fy_enc_access(&e, p->ferry, (uint32_t)amode);
        return fy_result(fy_ask(&e));
    }
    struct stat st;
    int rc = fy_cache_stat(p, &st, flags & AT_SYMLINK_NOFOLLOW);
    if (rc < 0) return fy_fail(rc);
    return LIBC(faccessat)(AT_FDCWD, p->cache, amode, flags);
}

static int access_common(int dirfd, const char *path, int amode, int flags)
{
    FY_PATH_HOOK(dirfd, path, -1, LIBC(faccessat)(dirfd, path, amode, flags), access_ferry, amode, flags);
}

FY_EXPORT int access(const char *path, int amode) { return access_common(AT_FDCWD, path, amode, 0); }
FY_EXPORT int faccessat(int dirfd, const char *path, int amode, int flags) { return access_common(dirfd, path, amode, flags); }
