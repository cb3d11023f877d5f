/* The current directory: chdir, fchdir, getcwd.
 *
 * A ferry cwd is virtual (fy_vcwd), so relative names resolve against it as ferry paths;
 * in cache mode the real cwd also moves into the replica directory, so the kernel and a
 * child that bypasses the shim agree.  It crosses exec in FERRY_CWD (direct mode) or
 * through the real cwd (cache mode; init.c reads either back).
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

char fy_vcwd[PATH_MAX];
int fy_vcwd_set;

static int set_vcwd(const char *ferry)
{
    size_t n = strlen(ferry);
    if (n >= sizeof fy_vcwd) { errno = ENAMETOOLONG; return -1; }
    memcpy(fy_vcwd, ferry, n + 1);
    fy_vcwd_set = 1;
    return 0;
}

/* After a local chdir: in cache mode the kernel may still be inside the replica, and
 * a local cwd above a mount root changes how relative names resolve. */
static void recheck_cwd(void)
{
    char real[PATH_MAX];
    fy_vcwd_set = fy_cfg.mode == FY_MODE_CACHE && LIBC(getcwd)(real, sizeof real) &&
                  fy_uncache(real, fy_vcwd, sizeof fy_vcwd);
    fy_note_real_cwd();
}

/* After a local chdir or fchdir (rc its result). */
static int changed_locally(int rc)
{
    if (rc == 0 && fy_cfg.mode != FY_MODE_OFF) recheck_cwd();
    return rc;
}

static int chdir_ferry(const struct fy_path *p)
{
    struct stat st;
    int rc = fy_cfg.mode == FY_MODE_DIRECT ? fy_remote_stat(p->ferry, 0, &st) : fy_cache_stat(p, &st, 0);
    if (rc < 0) return fy_fail(rc);
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    if (fy_cfg.mode == FY_MODE_CACHE && LIBC(chdir)(p->cache) < 0) return -1;
    return set_vcwd(p->ferry);
}

/* "cd .." out of a ferry directory reaches libc already made absolute. */
FY_EXPORT int chdir(const char *path)
{
    FY_PATH_HOOK(AT_FDCWD, path, -1, changed_locally(LIBC(chdir)(path)), chdir_ferry);
}

FY_EXPORT int fchdir(int fd)
{
    struct fy_fd *f = fy_fd_get(fd);
    if (!f) return changed_locally(LIBC(fchdir)(fd));
    if (f->kind == FY_FD_CACHE) {
        if (LIBC(fchdir)(fd) < 0) return -1;
    } else {
        struct stat st;
        if (fstat(fd, &st) < 0) return -1;
        if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    }
    return set_vcwd(f->path);
}

FY_EXPORT char *getcwd(char *buf, size_t size)
{
    if (!fy_vcwd_set) return LIBC(getcwd)(buf, size);
    size_t n = strlen(fy_vcwd) + 1;
    if (!buf) {
        buf = malloc(size > n ? size : n);
        if (!buf) { errno = ENOMEM; return NULL; }
    } else if (size < n) {
        errno = size ? ERANGE : EINVAL;
        return NULL;
    }
    return fy_copy_out(buf, fy_vcwd, n) < 0 ? NULL : buf;  /* EFAULT, as the system call says */
}

FY_EXPORT char *__getcwd_chk(char *buf, size_t size, size_t buflen) { (void)buflen; return getcwd(buf, size); }
