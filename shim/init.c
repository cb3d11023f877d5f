/* Load-time set-up: read the configuration that `ferry run` put in the environment,
 * once, so every hook afterwards decides with a flag and a prefix compare.
 *
 *   FERRY_SOCK      agent's Unix socket (unset: the shim stays out of the way entirely)
 *   FERRY_MODE      cache | direct
 *   FERRY_CACHE     cache root (cache mode)
 *   FERRY_PREFIXES  mount prefixes separated by ':'
 *   FERRY_FDS       ferry fds inherited across exec (see fdtable.c)
 *   FERRY_CWD       ferry current directory inherited across exec (direct mode)
 */
#include "fy.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/xattr.h>
#include <unistd.h>

struct fy_config fy_cfg;
mode_t fy_umask;
struct fy_libc fy_libc;

/* Each line of libc.h's table says what glibc's own declaration says, or the build fails. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  /* readdir_r */
#define FY_LIBC_CHECK(ret, name, params)                                               \
    _Static_assert(__builtin_types_compatible_p(fy_libc_##name##_t, __typeof__(name)), \
                   "libc.h declares " #name " unlike glibc");
FY_LIBC_TABLE(FY_LIBC_CHECK)
#undef FY_LIBC_CHECK
#pragma GCC diagnostic pop

/* Direct mode creates files on the node, which applies the modes it is given: the
 * program's umask must shape them here, as the kernel would.  Kept current by umask(). */
FY_EXPORT mode_t umask(mode_t mask)
{
    mode_t old = LIBC(umask)(mask);
    fy_umask = mask & 0777;
    return old;
}

void *fy_next(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        /* A libc function ferry wraps is missing: nothing sensible can continue. */
        static const char msg[] = "libferry: libc symbol missing: ";
        write(2, msg, sizeof msg - 1);
        write(2, name, strlen(name));
        write(2, "\n", 1);
        abort();
    }
    return p;
}

static void add_prefix(const char *s, size_t n)
{
    while (n > 1 && s[n - 1] == '/') n--;
    if (n == 0 || s[0] != '/' || fy_cfg.nprefix >= 32) return;
    char *p = malloc(n + 1);
    if (!p) return;
    memcpy(p, s, n);
    p[n] = 0;
    fy_cfg.prefix[fy_cfg.nprefix] = p;
    fy_cfg.prefix_len[fy_cfg.nprefix++] = n;
}

__attribute__((constructor)) static void fy_init(void)
{
    const char *sock = getenv("FERRY_SOCK");
    const char *mode = getenv("FERRY_MODE");
    if (!sock || !*sock || strlen(sock) >= sizeof fy_cfg.sock) return;
    strcpy(fy_cfg.sock, sock);
    pthread_atfork(NULL, NULL, fy_after_fork_child);
    /* syscall(2) is hooked (syscall.c) and may be called by an allocator inside dlsym: have
     * the real one before anything else asks for it */
    (void)fy_libc_syscall();
    fy_umask = LIBC(umask)(022);
    LIBC(umask)(fy_umask);
    fy_cfg.mode = (mode && strcmp(mode, "direct") == 0) ? FY_MODE_DIRECT : FY_MODE_CACHE;

    const char *cache = getenv("FERRY_CACHE");
    if (cache && strlen(cache) < sizeof fy_cfg.cache) {
        strcpy(fy_cfg.cache, cache);
        fy_cfg.cache_len = strlen(cache);
        while (fy_cfg.cache_len > 1 && fy_cfg.cache[fy_cfg.cache_len - 1] == '/')
            fy_cfg.cache[--fy_cfg.cache_len] = 0;
    } else if (fy_cfg.mode == FY_MODE_CACHE) {
        fy_cfg.mode = FY_MODE_OFF;  /* misconfigured: better inert than wrong */
        return;
    }

    const char *pre = getenv("FERRY_PREFIXES");
    while (pre && *pre) {
        const char *end = strchr(pre, ':');
        size_t n = end ? (size_t)(end - pre) : strlen(pre);
        add_prefix(pre, n);
        pre = end ? end + 1 : NULL;
    }

    fy_cfg.probe_len = sizeof "/REMOTE@" - 1;
    for (int i = 0; i < fy_cfg.nprefix; i++)
        if (fy_cfg.prefix_len[i] + 1 > fy_cfg.probe_len) fy_cfg.probe_len = fy_cfg.prefix_len[i] + 1;
    fy_cfg.lead['R'] = 1;  /* /REMOTE@ */
    for (int i = 0; i < fy_cfg.nprefix; i++) {
        if (fy_cfg.prefix_len[i] > 1) {
            fy_cfg.lead[(unsigned char)fy_cfg.prefix[i][1]] = 1;
        } else {  /* the prefix "/": "/" itself and "//..." (prefix_root's test) */
            fy_cfg.lead[0] = fy_cfg.lead['/'] = 1;
        }
    }
    fy_fault_init();

    const char *fds = getenv("FERRY_FDS");
    if (fds) fy_fd_import(fds);
    if (fds && fy_cfg.mode == FY_MODE_DIRECT) fy_stdio_adopt();
    /* Consumed: a child started by a path that bypasses the exec hooks must not
     * inherit a stale table.  The exec hooks write fresh values. */
    unsetenv("FERRY_FDS");

    /* The ferry cwd survives exec: in cache mode the real cwd is inside the cache,
     * in direct mode FERRY_CWD carries it. */
    const char *cwd = getenv("FERRY_CWD");
    if (fy_cfg.mode == FY_MODE_DIRECT && cwd && strlen(cwd) < sizeof fy_vcwd && fy_mount_root(cwd)) {
        strcpy(fy_vcwd, cwd);
        fy_vcwd_set = 1;
    } else if (fy_cfg.mode == FY_MODE_CACHE) {
        char real[PATH_MAX];
        if (LIBC(getcwd)(real, sizeof real) && fy_uncache(real, fy_vcwd, sizeof fy_vcwd))
            fy_vcwd_set = 1;
    }
    unsetenv("FERRY_CWD");
    fy_note_real_cwd();
}
