/* Symbolic and hard links.
 *
 * Reading a link: cache mode reads the replica's copy (the agent places remote symlinks
 * as symlinks); direct mode finds the target in the parent's LISTDIR, which carries it.
 * Making links: SYMLINK and LINK (cache mode: in the replica first, then one-way).  A
 * link between a ferry path and a local one, or two mounts, is EXDEV as the kernel says
 * across file systems.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Direct mode: the target of `ferry` from its parent's listing. */
static ssize_t remote_readlink(const char *ferry, char *buf, size_t size)
{
    char parent[PATH_MAX];
    const char *slash = strrchr(ferry, '/');
    size_t root = fy_mount_root(ferry);
    if (!slash || (size_t)(slash - ferry) < root) { errno = EINVAL; return -1; }  /* the mount root */
    memcpy(parent, ferry, (size_t)(slash - ferry));
    parent[slash - ferry] = 0;
    const char *name = slash + 1;
    size_t nlen = strlen(name);
    struct fy_enc e;
    fy_enc_listdir(&e, parent);
    struct fy_rep_listdir rep;
    char *list;
    size_t len;
    int rc = fy_call_alloc(&e, &rep, sizeof rep, &list, &len);
    if (rc < 0) { free(list); return fy_fail(fy_redirect_extend(rc, slash)); }
    if (fy_dec_listdir(list, len, rep.entries_count, NULL) < 0) { free(list); return fy_fail(-EIO); }  /* reply.c */
    ssize_t out = -1;
    errno = ENOENT;
    struct fy_entry ent;
    const char *pos = list;
    for (uint32_t i = 0; i < rep.entries_count && (pos = fy_dec_entry(pos, list + len, &ent)); i++) {
        if (ent.name_len == nlen && memcmp(ent.name, name, nlen) == 0) {
            if (!S_ISLNK(ent.attr.mode)) { errno = EINVAL; break; }
            out = (ssize_t)(ent.target_len < size ? ent.target_len : size);
            if (fy_copy_out(buf, ent.target, (size_t)out) < 0) out = -1;
            break;
        }
    }
    free(list);
    return out;
}

ssize_t fy_replica_readlink(const char *cache_path, char *buf, size_t size)
{
    char t[PATH_MAX + 256];
    ssize_t n = LIBC(readlinkat)(AT_FDCWD, cache_path, t, sizeof t);
    if (n < 0) return -1;
    const char *s = t;
    size_t mark = fy_cfg.cache_len + sizeof FY_LINK_OUT_MARK - 1;
    if ((size_t)n >= mark && memcmp(t, fy_cfg.cache, fy_cfg.cache_len) == 0 &&
        memcmp(t + fy_cfg.cache_len, FY_LINK_OUT_MARK, sizeof FY_LINK_OUT_MARK - 1) == 0) {
        s += mark;
        n -= (ssize_t)mark;
    }
    size_t out = (size_t)n < size ? (size_t)n : size;
    return fy_copy_out(buf, s, out) < 0 ? -1 : (ssize_t)out;
}

static ssize_t readlink_ferry(const struct fy_path *p, char *buf, size_t size)
{
    if (fy_cfg.mode == FY_MODE_DIRECT) return remote_readlink(p->ferry, buf, size);
    struct stat st;
    int rc = fy_cache_stat(p, &st, 1);
    if (rc < 0) return fy_fail(rc);
    return fy_replica_readlink(p->cache, buf, size);
}

static ssize_t readlink_common(int dirfd, const char *path, char *buf, size_t size)
{
    FY_PATH_HOOK(dirfd, path, -1, LIBC(readlinkat)(dirfd, path, buf, size), readlink_ferry, buf, size);
}

FY_EXPORT ssize_t readlink(const char *path, char *buf, size_t size)
{
    return readlink_common(AT_FDCWD, path, buf, size);
}
FY_EXPORT ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size)
{
    return readlink_common(dirfd, path, buf, size);
}
FY_EXPORT ssize_t __readlink_chk(const char *path, char *buf, size_t size, size_t buflen)
{
    (void)buflen;
    return readlink_common(AT_FDCWD, path, buf, size);
}
FY_EXPORT ssize_t __readlinkat_chk(int dirfd, const char *path, char *buf, size_t size, size_t buflen)
{
    (void)buflen;
    return readlink_common(dirfd, path, buf, size);
}

/* A ferry path with its symlinks followed as the kernel would here, in the client's
 * namespace (exec names the program it runs so, and a link may lead out of ferry: a venv's
 * bin/python3 -> /usr/bin/python3).  `path` itself when no symlink is on the way, else a
 * malloc'd path (local, or ferry's); NULL with errno on error. */
const char *fy_follow_links(const char *path)
{
    struct fy_path fp;
    const char *n = path;
    if (fy_resolve(AT_FDCWD, &n, &fp) != 1) return path;
    char *out = malloc(PATH_MAX);
    if (!out) { errno = ENOMEM; return NULL; }
    int rc = fy_realpath(fp.ferry, out);
    if (rc == -ENOENT || rc == -ENOTDIR || (rc == 0 && strcmp(out, fp.ferry) == 0)) {
        free(out);
        return path;  /* the exec says what is missing */
    }
    if (rc < 0) { free(out); errno = -rc; return NULL; }
    return out;
}

/* What the replica's copy of link p -> target holds (agent/cache.py stored_target): the
 * target when it stays inside the link's mount, else the target marked.  Made so here, in
 * one step: a copy re-made by the agent later would drop the times and owner the program
 * sets on the link right after (rsync -a, tar, cp -a). */
static const char *replica_target(const struct fy_path *p, const char *target, char *buf, size_t cap)
{
    size_t root = fy_mount_root(p->ferry);
    const char *slash = strrchr(p->ferry, '/');
    char joined[PATH_MAX], norm[PATH_MAX];
    if (target[0] != '/' && slash &&
        snprintf(joined, sizeof joined, "%.*s/%s", (int)(slash - p->ferry), p->ferry, target) < (int)sizeof joined &&
        fy_normalize(joined, norm, sizeof norm) == 0 && strncmp(norm, p->ferry, root) == 0 &&
        (norm[root] == '/' || norm[root] == 0))
        return target;
    snprintf(buf, cap, "%s%s%s", fy_cfg.cache, FY_LINK_OUT_MARK, target);
    return buf;
}

static int symlink_ferry(const struct fy_path *p, const char *target)
{
    /* The kernel reads the target before anything else: a wild one is EFAULT. */
    long tl = fy_probe_str(target, PATH_MAX);
    if (tl < 0) return fy_fail(-EFAULT);
    if (tl >= PATH_MAX) return fy_fail(-ENAMETOOLONG);
    struct fy_enc e;
    fy_enc_symlink(&e, target, p->ferry);
    if (fy_cfg.mode == FY_MODE_DIRECT) return fy_result(fy_ask(&e));
    int rc = fy_cache_list_parent(p);
    if (rc < 0) return fy_fail(rc);
    char marked[2 * PATH_MAX];
    fy_order_begin();
    if (LIBC(symlinkat)(replica_target(p, target, marked, sizeof marked), AT_FDCWD, p->cache) < 0) {
        fy_order_end();
        return -1;
    }
    fy_tell(&e, -1);
    fy_order_end();
    return 0;
}

FY_EXPORT int symlinkat(const char *target, int dirfd, const char *path)
{
    FY_PATH_HOOK(dirfd, path, -1, LIBC(symlinkat)(target, dirfd, path), symlink_ferry, target);
}

FY_EXPORT int symlink(const char *target, const char *path) { return symlinkat(target, AT_FDCWD, path); }

/* The open file a linkat source names, if it names one: (fd, "", AT_EMPTY_PATH), or
 * "/proc/self/fd/N" followed (AT_SYMLINK_FOLLOW), the two ways to give an O_TMPFILE file a
 * name.  -1 for an ordinary name. */
static int source_fd(int olddirfd, const char *old, int flags)
{
    if (!old || fy_probe_str(old, PATH_MAX) < 0) return -1;  /* libc then answers (EFAULT) */
    if ((flags & AT_EMPTY_PATH) && old[0] == 0) return olddirfd;
    if (!(flags & AT_SYMLINK_FOLLOW)) return -1;
    char own[40];
    snprintf(own, sizeof own, "/proc/%d/fd/", (int)getpid());
    const char *n = strncmp(old, "/proc/self/fd/", 14) == 0 ? old + 14
                  : strncmp(old, own, strlen(own)) == 0 ? old + strlen(own) : NULL;
    if (!n || *n < '0' || *n > '9') return -1;
    char *end;
    long v = strtol(n, &end, 10);
    return *end == 0 && v < FY_MAXFD ? (int)v : -1;
}

/* A new ferry file `pn` with the content and mode of the local file open on `src`. */
static int copy_into(int fd_in, const struct fy_path *pn, mode_t mode)
{
    char proc[32];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd_in);
    int src = LIBC(open)(proc, O_RDONLY | O_CLOEXEC);  /* the fd may be write-only */
    if (src < 0) return -1;
    int fd = fy_open_path(pn, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) { int e = errno; LIBC(close)(src); errno = e; return -1; }
    enum { CHUNK = 1 << 20 };
    char *buf = malloc(CHUNK);
    int err = buf ? 0 : ENOMEM;
    for (off64_t off = 0; !err;) {
        ssize_t r = LIBC(pread64)(src, buf, CHUNK, off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { err = r < 0 ? errno : 0; break; }
        for (ssize_t done = 0; done < r && !err;) {
            ssize_t w = write(fd, buf + done, (size_t)(r - done));
            if (w < 0 && errno != EINTR) err = errno;
            else if (w > 0) done += w;
        }
        off += r;
    }
    free(buf);
    LIBC(close)(src);
    if (!err && fchmod(fd, mode) < 0) err = errno;  /* as the kernel keeps it, umask aside */
    if (fy_close_fd(fd) < 0 && !err) err = errno;
    if (err) { unlink(pn->ferry); errno = err; return -1; }
    return 0;
}

/* linkat of an O_TMPFILE file (local: see tmp.c) to a ferry name.  Cache mode links it in
 * the replica, where it was made, and the fd then writes that ferry file (uploaded when it
 * is closed, as any written file); otherwise its content is copied into a new ferry file,
 * and later writes through the fd stay in the anonymous file. */
static int link_anonymous(int fd, const struct fy_path *pn)
{
    struct stat st;
    int fl = LIBC(fcntl)(fd, F_GETFL);
    if (fl < 0 || LIBC(fstat)(fd, &st) < 0) return -1;
    if (st.st_nlink > 0) { errno = EXDEV; return -1; }  /* a named local file: another file system */
    /* an unlinked file, or O_TMPFILE | O_EXCL, which asked never to be linked */
    if ((fl & O_TMPFILE) != O_TMPFILE || !fy_tmpfile_linkable(&st)) { errno = ENOENT; return -1; }
    if (fy_cfg.mode == FY_MODE_CACHE) {
        int rc = fy_cache_list_parent(pn);
        if (rc < 0) return fy_fail(rc);
        fy_cache_creating(pn);
        char proc[32];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (LIBC(linkat)(AT_FDCWD, proc, AT_FDCWD, pn->cache, AT_SYMLINK_FOLLOW) == 0) {
            struct fy_fd *f = fy_fd_set(fd, FY_FD_CACHE, fl & ~O_TMPFILE, fy_new_desc_id(), pn->ferry);
            if (f) { f->dirty = 1; f->owner = getpid(); }
            return 0;
        }
        if (errno != EXDEV) return -1;  /* made elsewhere (tmpfile() in /tmp): copy it */
    }
    return copy_into(fd, pn, st.st_mode & 07777);
}

static int link_ferry(const struct fy_path *po, const struct fy_path *pn, int flags)
{
    struct fy_enc e;
    fy_enc_link(&e, po->ferry, pn->ferry);
    if (fy_cfg.mode == FY_MODE_DIRECT) return fy_result(fy_ask(&e));
    struct stat st;
    int rc = fy_cache_stat(po, &st, 1);     /* the source must be in the replica */
    if (rc == 0) rc = fy_redirect_new(fy_cache_list_parent(pn));
    if (rc < 0) return fy_fail(rc);
    fy_order_begin();
    if (LIBC(linkat)(AT_FDCWD, po->cache, AT_FDCWD, pn->cache, flags) < 0) { fy_order_end(); return -1; }
    fy_tell(&e, -1);
    fy_order_end();
    return 0;
}

/* FY_PATH2_HOOK's steps, with a local source that names an open file in between. */
static int linkat_once(int olddirfd, const char *old, int newdirfd, const char *new, int flags)
{
    struct fy_path po, pn;
    int uo, un;
    int ro = fy_resolve_r(olddirfd, &old, &po, &uo);
    int rn = fy_resolve_r(newdirfd, &new, &pn, &un);
    if ((uo || un) && fy_unreadable_pair(old, ro, uo, new, rn, un) < 0) return -1;
    if (uo || un) return LIBC(linkat)(olddirfd, old, newdirfd, new, flags);  /* EFAULT */
    int sfd = ro == 0 && rn == 1 ? source_fd(olddirfd, old, flags) : -1;
    if (sfd >= 0) {
        struct fy_fd *sf = fy_fd_get(sfd);
        if (!sf) return link_anonymous(sfd, &pn);
        const char *named = sf->path;  /* /proc/self/fd/N of a ferry fd: that file */
        ro = fy_resolve(AT_FDCWD, &named, &po);
    }
    int r = fy_pair(ro, &po, rn, &pn);
    if (r == 0) return LIBC(linkat)(olddirfd, old, newdirfd, new, flags);
    return r < 0 ? -1 : link_ferry(&po, &pn, flags);
}

/* As FY_PATH2_HOOK: a name that crosses a link out of its mount goes on from the link's
 * target in the client's namespace (which may make the pair local, or EXDEV). */
FY_EXPORT int linkat(int olddirfd, const char *old, int newdirfd, const char *new, int flags)
{
    char next[2][PATH_MAX];
    for (int hops = 0;; hops++) {
        int r = linkat_once(olddirfd, old, newdirfd, new, flags);
        if (r == 0 || errno != FY_EREDIRECT) return r;
        if (hops >= FY_MAX_REDIRECTS) { errno = ELOOP; return -1; }
        if (fy_redirect.which) new = strcpy(next[1], fy_redirect.path);
        else old = strcpy(next[0], fy_redirect.path);
    }
}

FY_EXPORT int link(const char *old, const char *new) { return linkat(AT_FDCWD, old, AT_FDCWD, new, 0); }
