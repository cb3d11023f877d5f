/* Temporary files and directories in ferry directories: mkstemp and friends.  glibc
 * makes the file with its internal open, which never reaches our hooks, so for a ferry
 * template we pick the names ourselves and create through the ferry open/mkdir.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define ATTEMPTS 100

static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/* Where the six Xs are, or NULL (EINVAL) for a template that has none. */
static char *xs_of(char *tmpl, int suffixlen)
{
    size_t n = strlen(tmpl);
    if (suffixlen < 0 || n < 6 + (size_t)suffixlen) return NULL;
    char *x = tmpl + n - suffixlen - 6;
    return strncmp(x, "XXXXXX", 6) == 0 ? x : NULL;
}

static void fill(char *x)
{
    unsigned char r[6];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        for (int i = 0; i < 6; i++) r[i] = (unsigned char)(getpid() * 31 + i * 7 + (long)x);
    for (int i = 0; i < 6; i++) x[i] = letters[r[i] % (sizeof letters - 1)];
}

static int is_ferry(const char *tmpl)
{
    struct fy_path p;
    return fy_resolve(AT_FDCWD, &tmpl, &p) > 0;
}

static int make_file(char *tmpl, int suffixlen, int flags)
{
    char *x = xs_of(tmpl, suffixlen);
    if (!x) { errno = EINVAL; return -1; }
    for (int i = 0; i < ATTEMPTS; i++) {
        fill(x);
        const char *name = tmpl;
        struct fy_path p;
        if (fy_resolve(AT_FDCWD, &name, &p) <= 0) { errno = EINVAL; return -1; }
        int fd = fy_open_path(&p, (flags & ~O_ACCMODE) | O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    errno = EEXIST;
    return -1;
}

/* Eight entry points, one body: only the suffix and extra flags differ. */
#define MKSTEMP_HOOK(name, types, params, real_args, suffixlen, flags)   \
    FY_EXPORT int name params                                             \
    {                                                                     \
        if (!is_ferry(tmpl)) {                                            \
            FY_REAL(int, name, types);                                    \
            return real_##name real_args;                                 \
        }                                                                 \
        return make_file(tmpl, suffixlen, flags);                         \
    }
#define T1 char *
#define T2 char *, int
#define T3 char *, int, int

MKSTEMP_HOOK(mkstemp, T1, (char *tmpl), (tmpl), 0, 0)
MKSTEMP_HOOK(mkstemp64, T1, (char *tmpl), (tmpl), 0, 0)
MKSTEMP_HOOK(mkostemp, T2, (char *tmpl, int flags), (tmpl, flags), 0, flags)
MKSTEMP_HOOK(mkostemp64, T2, (char *tmpl, int flags), (tmpl, flags), 0, flags)
MKSTEMP_HOOK(mkstemps, T2, (char *tmpl, int suffixlen), (tmpl, suffixlen), suffixlen, 0)
MKSTEMP_HOOK(mkstemps64, T2, (char *tmpl, int suffixlen), (tmpl, suffixlen), suffixlen, 0)
MKSTEMP_HOOK(mkostemps, T3, (char *tmpl, int suffixlen, int flags), (tmpl, suffixlen, flags), suffixlen, flags)
MKSTEMP_HOOK(mkostemps64, T3, (char *tmpl, int suffixlen, int flags), (tmpl, suffixlen, flags), suffixlen, flags)

FY_EXPORT char *mkdtemp(char *tmpl)
{
    FY_REAL(char *, mkdtemp, char *);
    if (!is_ferry(tmpl)) return real_mkdtemp(tmpl);
    char *x = xs_of(tmpl, 0);
    if (!x) { errno = EINVAL; return NULL; }
    for (int i = 0; i < ATTEMPTS; i++) {
        fill(x);
        if (mkdir(tmpl, 0700) == 0) return tmpl;
        if (errno != EEXIST) return NULL;
    }
    return NULL;
}
