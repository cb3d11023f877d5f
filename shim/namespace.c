/* The namespace: mkdir, rmdir, unlink, rename (and their *at forms), and the special
 * files ferry refuses (mknod, mkfifo).  Links are link.c's.
 *
 * Cache mode: a change runs on the replica first, so the program sees the kernel's own
 * answer (EEXIST, ENOTEMPTY: the directories involved are listed first so the replica is
 * complete), then goes to the agent one-way, to be replayed on the node in order.
 * Direct mode: each call is one request, answered by the node.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

static int mkdir_ferry(const struct fy_path *p, mode_t mode)
{
    struct fy_enc e;
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        fy_enc_mkdir(&e, p->ferry, mode & ~fy_umask);
        return fy_result(fy_ask(&e));
    }
    int rc = fy_cache_list_parent(p);
    if (rc < 0) return fy_fail(rc);
    fy_order_begin();
    if (LIBC(mkdirat)(AT_FDCWD, p->cache, mode) < 0) { fy_order_end(); return -1; }
    /* Send the mode the kernel really gave (umask applied), not the one asked for. */
    struct stat st;
    int made = LIBC(fstatat)(AT_FDCWD, p->cache, &st, AT_SYMLINK_NOFOLLOW) == 0;
    fy_enc_mkdir(&e, p->ferry, made ? st.st_mode & 07777 : mode & 07777);
    fy_tell(&e, -1);
    fy_order_end();
    return 0;
}

static int mkdir_common(int dirfd, const char *path, mode_t mode)
{
    FY_PATH_HOOK(dirfd, path, -1, LIBC(mkdirat)(dirfd, path, mode), mkdir_ferry, mode);
}

FY_EXPORT int mkdir(const char *path, mode_t mode) { return mkdir_common(AT_FDCWD, path, mode); }
FY_EXPORT int mkdirat(int dirfd, const char *path, mode_t mode) { return mkdir_common(dirfd, path, mode); }

static int unlink_ferry(const struct fy_path *p, int flags)
{
    int dir = flags & AT_REMOVEDIR;
    struct fy_enc e;
    if (dir) fy_enc_rmdir(&e, p->ferry);
    else fy_enc_unlink(&e, p->ferry);
    if (fy_cfg.mode == FY_MODE_DIRECT) return fy_result(fy_ask(&e));
    int rc = fy_cache_list_parent(p);
    if (rc < 0) return fy_fail(rc);
    if (dir) {
        /* An unlisted directory looks empty in the replica; list it so ENOTEMPTY is right. */
        struct stat st;
        rc = fy_cache_stat(p, &st, 1);
        if (rc < 0) return fy_fail(rc);
    }
    fy_order_begin();
    if (LIBC(unlinkat)(AT_FDCWD, p->cache, flags) < 0) { fy_order_end(); return -1; }
    fy_tell(&e, -1);
    fy_order_end();
    return 0;
}

static int unlink_common(int dirfd, const char *path, int flags)
{
    FY_PATH_HOOK(dirfd, path, -1, LIBC(unlinkat)(dirfd, path, flags), unlink_ferry, flags);
}

FY_EXPORT int unlink(const char *path) { return unlink_common(AT_FDCWD, path, 0); }
FY_EXPORT int rmdir(const char *path) { return unlink_common(AT_FDCWD, path, AT_REMOVEDIR); }
FY_EXPORT int unlinkat(int dirfd, const char *path, int flags) { return unlink_common(dirfd, path, flags); }

static int rename_ferry(const struct fy_path *po, const struct fy_path *pn, unsigned flags)
{
    struct fy_enc e;
    fy_enc_rename(&e, po->ferry, pn->ferry, flags);
    if (fy_cfg.mode == FY_MODE_DIRECT) return fy_result(fy_ask(&e));
    int rc = fy_cache_list_parent(po);
    if (rc == 0) rc = fy_redirect_new(fy_cache_list_parent(pn));
    if (rc < 0) return fy_fail(rc);
    struct stat st;
    rc = fy_cache_stat(po, &st, 1);         /* source must be present in the replica */
    if (rc < 0) return fy_fail(rc);
    rc = fy_cache_stat(pn, &st, 1);         /* a target directory must be listed (ENOTEMPTY) */
    if (rc == -FY_EREDIRECT) return fy_fail(fy_redirect_new(rc));
    fy_order_begin();
    if (LIBC(renameat2)(AT_FDCWD, po->cache, AT_FDCWD, pn->cache, flags) < 0) { fy_order_end(); return -1; }
    fy_tell(&e, -1);
    fy_order_end();
    return 0;
}

static int rename_common(int olddirfd, const char *old, int newdirfd, const char *new, unsigned flags)
{
    FY_PATH2_HOOK(olddirfd, old, newdirfd, new, -1, LIBC(renameat2)(olddirfd, old, newdirfd, new, flags),
                  rename_ferry, flags);
}

FY_EXPORT int rename(const char *old, const char *new) { return rename_common(AT_FDCWD, old, AT_FDCWD, new, 0); }
FY_EXPORT int renameat(int ofd, const char *old, int nfd, const char *new)
{
    return rename_common(ofd, old, nfd, new, 0);
}
FY_EXPORT int renameat2(int ofd, const char *old, int nfd, const char *new, unsigned flags)
{
    return rename_common(ofd, old, nfd, new, flags);
}

/* ---------- special files ---------- */

/* Nodes keep regular files, directories and symlinks only: a FIFO or device made in the
 * replica would never reach the node, so say so instead (EOPNOTSUPP, as NFS-less file
 * systems do).  Local paths, also through a link out, go to libc untouched. */
static int refuse_special(const struct fy_path *p)
{
    if (fy_parent_redirect(p) == -FY_EREDIRECT) { errno = FY_EREDIRECT; return -1; }  /* a local name */
    errno = EOPNOTSUPP;
    return -1;
}

static int mknod_common(int dirfd, const char *path, mode_t mode, dev_t dev)
{
    FY_PATH_HOOK(dirfd, path, -1, LIBC(mknodat)(dirfd, path, mode, dev), refuse_special);
}

FY_EXPORT int mknod(const char *path, mode_t mode, dev_t dev) { return mknod_common(AT_FDCWD, path, mode, dev); }
FY_EXPORT int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
{
    return mknod_common(dirfd, path, mode, dev);
}
FY_EXPORT int mkfifo(const char *path, mode_t mode) { return mknod_common(AT_FDCWD, path, mode | S_IFIFO, 0); }
FY_EXPORT int mkfifoat(int dirfd, const char *path, mode_t mode)
{
    return mknod_common(dirfd, path, mode | S_IFIFO, 0);
}
