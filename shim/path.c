/* Which paths are ferry's, and where they live in the cache.
 *
 * The test for a local name must stay cheap: it runs on every path a preloaded program
 * touches.  Most are told by fy_surely_local (fy.h) from their second byte; the rest by one
 * short loop of prefix compares.  Only ferry paths are
 * normalised (".", "..", "//" removed lexically, as ORFA did).
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>

/* The real cwd, kept only while it is an ancestor of a mount root ("/" always is, of
 * /REMOTE@...): then a relative name such as mkdir -p's "x" after chdir("/mnt") enters
 * the mount /mnt/x and must not create a local /mnt/x.  Refreshed on every local chdir. */
static char rcwd[PATH_MAX];
int fy_rcwd_above_;
#define rcwd_above fy_rcwd_above_
/* The first component below rcwd of each mount root under it: a relative name whose first
 * component is none of these (and is not "." or "..") stays local after one compare each,
 * which keeps programs started in "/" off the normalising path. */
static const char *rcwd_first[32];
static size_t rcwd_first_len[32];
static int rcwd_nfirst, rcwd_orfa;  /* rcwd_orfa: the cwd is "/", above every /REMOTE@ */

static void add_first(const char *rest)
{
    if (rcwd_nfirst >= 32) return;
    const char *slash = strchr(rest, '/');
    rcwd_first[rcwd_nfirst] = rest;
    rcwd_first_len[rcwd_nfirst++] = slash ? (size_t)(slash - rest) : strlen(rest);
}

void fy_note_real_cwd(void)
{
    rcwd_above = rcwd_nfirst = rcwd_orfa = 0;
    if (fy_cfg.mode == FY_MODE_OFF || fy_vcwd_set || !LIBC(getcwd)(rcwd, sizeof rcwd)) return;
    size_t n = strlen(rcwd);
    if (n == 1) {
        rcwd_orfa = 1;
        for (int i = 0; i < fy_cfg.nprefix; i++) add_first(fy_cfg.prefix[i] + 1);
    } else {
        for (int i = 0; i < fy_cfg.nprefix; i++)
            if (fy_cfg.prefix_len[i] > n && strncmp(fy_cfg.prefix[i], rcwd, n) == 0 && fy_cfg.prefix[i][n] == '/')
                add_first(fy_cfg.prefix[i] + n + 1);
    }
    rcwd_above = rcwd_orfa || rcwd_nfirst > 0;
}

/* Could relative `path` lead under a mount from rcwd?  Only through a mount root's first
 * component below rcwd, "REMOTE@..." from "/", or a "." or ".." somewhere. */
static int may_enter_mount(const char *path)
{
    if (path[0] == '.' || (rcwd_orfa && strncmp(path, "REMOTE@", 7) == 0) || strstr(path, "/.")) return 1;
    size_t len = strcspn(path, "/");
    for (int i = 0; i < rcwd_nfirst; i++)
        if (len == rcwd_first_len[i] && strncmp(path, rcwd_first[i], len) == 0) return 1;
    return 0;
}

static const char remote_tag[] = "/REMOTE@";

/* The mount prefix `p` lies under: its length, or 0.  Reads at most fy_cfg.probe_len bytes. */
static inline size_t prefix_root(const char *p)
{
    for (int i = 0; i < fy_cfg.nprefix; i++) {
        size_t n = fy_cfg.prefix_len[i];
        if (strncmp(p, fy_cfg.prefix[i], n) == 0 && (p[n] == '/' || p[n] == 0)) return n;
    }
    return 0;
}

size_t fy_mount_root(const char *p)
{
    if (p[0] != '/') return 0;
    if (strncmp(p, remote_tag, sizeof remote_tag - 1) == 0) {
        const char *end = strchr(p + sizeof remote_tag - 1, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        return n > sizeof remote_tag - 1 ? n : 0;
    }
    return prefix_root(p);
}

/* Lexically normalise `in` (absolute) into `out`.  0 or -ENAMETOOLONG. */
static int normalize(const char *in, char *out, size_t cap)
{
    size_t len = 0;
    const char *s = in;
    while (*s) {
        while (*s == '/') s++;
        if (!*s) break;
        const char *e = s;
        while (*e && *e != '/') e++;
        size_t n = (size_t)(e - s);
        if (n == 1 && s[0] == '.') {
            /* skip */
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            while (len > 0 && out[len - 1] != '/') len--;
            if (len > 0) len--;
        } else {
            if (len + 1 + n + 1 > cap) return -ENAMETOOLONG;
            out[len++] = '/';
            memcpy(out + len, s, n);
            len += n;
        }
        s = e;
    }
    if (len == 0) out[len++] = '/';
    out[len] = 0;
    return 0;
}

int fy_normalize(const char *in, char *out, size_t cap) { return normalize(in, out, cap); }

/* Local directory fds above a mount root, by absolute path: a program that walks to a
 * mount one component at a time (rsync 3.4 opens "/", then "mnt" and "x" with
 * openat(O_PATH)) names the mount relative to them.  The open hooks record such fds
 * (fy_note_dirfd); an entry is trusted only while the fd still is that directory (its
 * number may have been closed and reused without our knowing). */
#define ABOVE_MAX 16
static struct { int fd; dev_t dev; ino_t ino; char path[PATH_MAX]; } above[ABOVE_MAX];
int fy_nabove_;
static int above_next;
#define nabove fy_nabove_
static pthread_mutex_t above_lock = PTHREAD_MUTEX_INITIALIZER;

/* Copy the absolute path of above-fd `fd` into buf; 0 when fd is not one (any more). */
static int above_path(int fd, char *buf)
{
    struct stat st;
    int found = 0;
    pthread_mutex_lock(&above_lock);
    for (int i = 0; i < nabove; i++) {
        if (above[i].fd != fd) continue;
        if (LIBC(fstat)(fd, &st) == 0 && st.st_dev == above[i].dev && st.st_ino == above[i].ino) {
            strcpy(buf, above[i].path);
            found = 1;
        } else {
            above[i].fd = -1;
        }
        break;
    }
    pthread_mutex_unlock(&above_lock);
    return found;
}

int fy_above_mount(const char *p, size_t n)
{
    for (int i = 0; i < fy_cfg.nprefix; i++)
        if (fy_cfg.prefix_len[i] > n && strncmp(fy_cfg.prefix[i], p, n) == 0 && fy_cfg.prefix[i][n] == '/') return 1;
    return 0;
}

/* Is normalised local `path` "/" (above every /REMOTE@) or an ancestor of a mount prefix? */
static int is_above(const char *path)
{
    size_t n = strlen(path);
    return n == 1 || fy_above_mount(path, n);
}

static int normalize(const char *in, char *out, size_t cap);

/* Could absolute `path` name "/" or an ancestor of a mount prefix?  One compare per mount
 * of its first component (a "." anywhere sends it to the exact check). */
static int may_be_above(const char *path)
{
    while (*path == '/') path++;
    if (!*path || path[0] == '.' || strstr(path, "/.")) return 1;
    size_t len = strcspn(path, "/");
    for (int i = 0; i < fy_cfg.nprefix; i++)
        if (strncmp(fy_cfg.prefix[i] + 1, path, len) == 0 && fy_cfg.prefix[i][len + 1] == '/') return 1;
    return 0;
}

int fy_note_dirfd_(int fd, int dirfd, const char *path, int flags)
{
    if (fd < 0 || !(flags & (O_DIRECTORY | O_PATH)) || fy_cfg.mode == FY_MODE_OFF || !path) return fd;
    if (path[0] == '/' && !may_be_above(path)) return fd;  /* opendir("/usr/lib") and the like */
    char base[PATH_MAX], joined[2 * PATH_MAX], norm[PATH_MAX];
    const char *abs = path;
    if (path[0] != '/') {
        if (dirfd == AT_FDCWD) {
            if (!rcwd_above) return fd;
            strcpy(base, rcwd);
        } else if (nabove == 0 || !above_path(dirfd, base)) {
            return fd;
        }
        snprintf(joined, sizeof joined, "%s/%s", base, path);
        abs = joined;
    }
    if (normalize(abs, norm, sizeof norm) < 0 || !is_above(norm)) return fd;
    struct stat st;
    if (LIBC(fstat)(fd, &st) < 0) return fd;
    pthread_mutex_lock(&above_lock);
    int slot = -1;
    for (int i = 0; i < nabove && slot < 0; i++)
        if (above[i].fd == fd || above[i].fd == -1) slot = i;
    if (slot < 0) slot = nabove < ABOVE_MAX ? nabove++ : (above_next++ % ABOVE_MAX);
    above[slot].fd = fd;
    above[slot].dev = st.st_dev;
    above[slot].ino = st.st_ino;
    strcpy(above[slot].path, norm);
    pthread_mutex_unlock(&above_lock);
    return fd;
}

/* Can the program's string `path` be read whole (a NUL within PATH_MAX)?  When it cannot,
 * the shim does not claim it: libc gets the pointer, and the kernel answers as it would
 * without ferry (EFAULT, or ENAMETOOLONG).  Only names that may be ferry's pay for it. */
static int readable(const char *path, int *unreadable)
{
    long n = fy_probe_str(path, PATH_MAX);
    if (n >= 0 && n < PATH_MAX) return 1;
    *unreadable = 1;
    return 0;
}

int fy_resolve(int dirfd, const char **pathp, struct fy_path *out)
{
    /* The common case first (fy.h): an absolute local name is told by its second byte
     * ("/usr", "/tmp" against "/REMOTE@" and the prefixes), two bytes probed. */
    if (fy_surely_local(dirfd, *pathp)) return 0;
    int unreadable;
    return fy_resolve_r(dirfd, pathp, out, &unreadable);
}

int fy_resolve_r(int dirfd, const char **pathp, struct fy_path *out, int *unreadable)
{
    const char *path = *pathp;
    *unreadable = 0;
    if (fy_cfg.mode == FY_MODE_OFF || !path) return 0;
    /* A local absolute path costs the bytes the prefix compares read, probed first (see
     * fault.c): a wild pointer must not crash the program here. */
    if (fy_probe_str(path, fy_cfg.probe_len) < 0) { *unreadable = 1; return 0; }
    char joined[2 * PATH_MAX], above_base[PATH_MAX];
    const char *abs;
    int from_above = 0;
    if (path[0] == '/') {
        if (strncmp(path, remote_tag, sizeof remote_tag - 1) != 0 && !prefix_root(path)) return 0;
        if (!readable(path, unreadable) || !fy_mount_root(path)) return 0;
        abs = path;
    } else {
        const char *base;
        if (dirfd == AT_FDCWD) {
            if (!fy_vcwd_set && !rcwd_above) return 0;
            if (!readable(path, unreadable)) return 0;
            if (!fy_vcwd_set && !may_enter_mount(path)) return 0;
            base = fy_vcwd_set ? fy_vcwd : rcwd;
        } else {
            struct fy_fd *f = fy_fd_get(dirfd);
            if (!f) {
                if (nabove == 0 || !above_path(dirfd, above_base)) return 0;
                base = above_base;
                from_above = 1;
            } else {
                base = f->path;
            }
            if (!readable(path, unreadable)) return 0;
        }
        size_t bl = strlen(base), pl = strlen(path);
        if (bl == 1) bl = 0;  /* base "/" */
        if (bl + 1 + pl + 1 > sizeof joined) { errno = ENAMETOOLONG; return -1; }
        memcpy(joined, base, bl);
        joined[bl] = '/';
        memcpy(joined + bl + 1, path, pl + 1);
        abs = joined;
    }
    int rc = normalize(abs, out->ferry, sizeof out->ferry);
    if (rc < 0) { errno = -rc; return -1; }
    if (!fy_mount_root(out->ferry)) {
        /* ".." climbed out of the mount: the name is local, but the kernel knows neither
         * a ferry directory it is relative to nor the mount it climbs out of ("/mnt/x/.."
         * with no local /mnt/x), so hand libc the path normalised.  A real dirfd above
         * the mount resolves a relative name as it is. */
        if (!from_above) *pathp = out->ferry;
        return 0;
    }
    if (fy_cfg.cache_len) {
        size_t fl = strlen(out->ferry);
        if (fy_cfg.cache_len + fl + 1 > sizeof out->cache) { errno = ENAMETOOLONG; return -1; }
        memcpy(out->cache, fy_cfg.cache, fy_cfg.cache_len);
        memcpy(out->cache + fy_cfg.cache_len, out->ferry, fl + 1);
    }
    return 1;
}

int fy_uncache(const char *cache_path, char *out, size_t cap)
{
    if (fy_cfg.cache_len == 0 || strncmp(cache_path, fy_cfg.cache, fy_cfg.cache_len) != 0) return 0;
    const char *rest = cache_path + fy_cfg.cache_len;
    if (rest[0] != '/' || !fy_mount_root(rest) || strlen(rest) + 1 > cap) return 0;
    strcpy(out, rest);
    return 1;
}

static int same_mount(const char *a, const char *b)
{
    size_t ra = fy_mount_root(a), rb = fy_mount_root(b);
    return ra && ra == rb && memcmp(a, b, ra) == 0;
}

int fy_pair(int ro, const struct fy_path *po, int rn, const struct fy_path *pn)
{
    if (ro < 0 || rn < 0) return -1;
    if (ro == 0 && rn == 0) return 0;
    if (ro == rn && same_mount(po->ferry, pn->ferry)) return 1;
    /* The ferry one may be local after all, through a link out: go on with it. */
    int which = rn == 1;
    if (ro != rn && fy_parent_redirect(which ? pn : po) == -FY_EREDIRECT) {
        fy_redirect.which = which;
        errno = FY_EREDIRECT;
        return -1;
    }
    errno = EXDEV;
    return -1;
}

int fy_unreadable_pair(const char *old, int ro, int uo, const char *new, int rn, int un)
{
    (void)un;
    /* Nothing ferry's: libc, for the kernel's EFAULT.  With a ferry name beside it, the
     * shim answers as the kernel would, which reads both names before it looks either up
     * (EFAULT, not EXDEV), the old one first. */
    if (ro == 0 && rn == 0) return 0;
    errno = fy_probe_str(uo ? old : new, PATH_MAX) < 0 ? EFAULT : ENAMETOOLONG;
    return -1;
}

int fy_resolve_pair(int olddirfd, const char **old, struct fy_path *po, int newdirfd, const char **new,
                    struct fy_path *pn)
{
    int uo, un;
    int ro = fy_resolve_r(olddirfd, old, po, &uo);
    int rn = fy_resolve_r(newdirfd, new, pn, &un);
    if (uo || un) return fy_unreadable_pair(*old, ro, uo, *new, rn, un);
    return fy_pair(ro, po, rn, pn);
}
