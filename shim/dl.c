/* dlopen of a file on a ferry path (Python importing a C extension that pip built into a
 * venv on ferry).  The dynamic loader opens the file with its own internal calls, past
 * every hook, so it is handed an fd it can open: cache mode opens the file through the
 * hooked open (fetching it into the replica) and loads that real fd by its /proc name;
 * direct mode, whose fd is a placeholder, loads a copy in a memfd.  When that fails the
 * loader is asked for the name as given, so dlerror() says what it would. */
#include "fy.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* A memfd holding what ferry fd `fd` reads, or -1. */
static int copy_to_memfd(int fd, const char *name)
{
    int m = memfd_create(name, MFD_CLOEXEC);
    if (m < 0) return -1;
    enum { CHUNK = 1 << 20 };
    char *buf = malloc(CHUNK);
    int ok = buf != NULL;
    while (ok) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { ok = r == 0; break; }
        for (ssize_t done = 0; done < r && ok;) {
            ssize_t w = LIBC(write)(m, buf + done, (size_t)(r - done));
            if (w < 0 && errno != EINTR) ok = 0;
            else if (w > 0) done += w;
        }
    }
    free(buf);
    if (!ok) { LIBC(close)(m); return -1; }
    return m;
}

static void *dlopen_ferry(const struct fy_path *p, const char *given, int flags)
{
    int fd = fy_open_path(p, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return errno == FY_EREDIRECT ? NULL : LIBC(dlopen)(given, flags);
    int lfd = fd;
    if (fy_cfg.mode == FY_MODE_DIRECT) {
        const char *base = strrchr(p->ferry, '/');
        lfd = copy_to_memfd(fd, base ? base + 1 : p->ferry);
    }
    void *h = NULL;
    if (lfd >= 0) {
        char proc[40];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", lfd);
        h = LIBC(dlopen)(proc, flags);
        if (lfd != fd) LIBC(close)(lfd);
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return h ? h : LIBC(dlopen)(given, flags);
}

FY_EXPORT void *dlopen(const char *path, int flags)
{
    /* a bare name is searched for in the loader's directories, which stay local */
    if (!path || !strchr(path, '/') || fy_cfg.mode == FY_MODE_OFF) return LIBC(dlopen)(path, flags);
    const char *given = path;
    FY_PATH_HOOK(AT_FDCWD, path, NULL, LIBC(dlopen)(path, flags), dlopen_ferry, given, flags);
}
