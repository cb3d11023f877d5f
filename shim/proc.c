/* Processes: what a new program image must inherit from this one.
 *
 * fork needs nothing here (memory is copied; pthread_atfork in init.c gives the child its
 * own agent connection).  exec loses our memory, so every exec entry hands the new image
 * an environment from env.c, and a ferry path to a program is fetched into the cache and
 * executed from there (a `#!` script through its interpreter, as the kernel would: see
 * plan_exec).  vfork becomes fork: a vfork child shares our memory and could not run the
 * hooks safely.
 */
#include "fy.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* Ferry program path -> its cache file, fetched.  0 not ferry's (*path may be rewritten to
 * an absolute local name, see fy_resolve); 1 mapped; -1 error. */
static int program_path(const char **path, struct fy_path *p)
{
    int r = fy_resolve(AT_FDCWD, path, p);
    if (r <= 0) return r;
    struct fy_enc e;
    fy_enc_cache_open(&e, p->ferry, O_RDONLY, 0);
    int rc = fy_ask(&e);
    return rc < 0 ? fy_fail(rc) : 1;
}

/* `#!` scripts.  The kernel reads a script's first line and runs "interpreter [arg] script
 * args...", but it would look for a ferry script's interpreter on the local file system
 * and hand it the replica's name for the script.  So for a ferry script the shim does the
 * kernel's part: the interpreter (fetched first when it is a ferry path too) gets the
 * script's name as the program gave it, and opens it through ferry like any file.  A
 * local script whose interpreter is a ferry path is rewritten the same way; every other
 * local program goes to the kernel untouched. */
#define SCRIPT_HOPS 5   /* scripts in one chain before the kernel says ELOOP */
#define SCRIPT_HEAD 256 /* bytes of the first line the kernel reads (BINPRM_BUF_SIZE) */

struct exec_plan {
    struct fy_path p;
    const char *run;   /* the file to hand the kernel */
    char **argv;       /* the caller's, or `owned` */
    char **owned;      /* malloc'd rewritten argv */
    char *names[2 * (SCRIPT_HOPS + 1)];  /* malloc'd followed and rewritten names */
    char line[SCRIPT_HOPS + 1][SCRIPT_HEAD + 1];
};

static void plan_free(struct exec_plan *pl)
{
    free(pl->owned);
    for (int i = 0; i < 2 * (SCRIPT_HOPS + 1); i++) free(pl->names[i]);
}

/* The first line of `file` if it starts with "#!", cut into interpreter and optional
 * argument as the kernel does.  1: a script; 0: not one (or unreadable: the kernel
 * decides); -1: "#!" with no interpreter (ENOEXEC). */
static int read_shebang(const char *file, char *line, char **interp, char **arg)
{
    int fd = LIBC(open)(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, line, SCRIPT_HEAD) : -1;
    LIBC(close)(fd);
    if (n < 2 || line[0] != '#' || line[1] != '!') return 0;
    line[n] = 0;
    char *nl = memchr(line, '\n', (size_t)n);
    if (nl) *nl = 0;
    char *s = line + 2;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s) { errno = ENOEXEC; return -1; }
    *interp = s;
    *arg = NULL;
    while (*s && *s != ' ' && *s != '\t') s++;
    if (*s) {
        *s++ = 0;
        while (*s == ' ' || *s == '\t') s++;
        if (*s) {
            char *e = s + strlen(s);
            while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
            *arg = s;
        }
    }
    return 1;
}

static int is_ferry_name(const char *name)
{
    struct fy_path p;
    return fy_resolve(AT_FDCWD, &name, &p) == 1;
}

/* Decide what the kernel runs for execve(path, argv): fills pl->run and pl->argv.
 * 0 or -1 with errno. */
static int plan_exec(struct exec_plan *pl, const char *path, char *const argv[])
{
    memset(pl->names, 0, sizeof pl->names);
    pl->owned = NULL;
    pl->argv = (char **)argv;
    const char *cur = path;
    for (int hop = 0;; hop++) {
        const char *target = fy_follow_links(cur);
        if (!target) return -1;
        if (target != cur) pl->names[2 * hop] = (char *)target;
        const char *local = target;
        int r = program_path(&local, &pl->p);
        if (r < 0) return -1;
        if (!r && local != target && !(local = pl->names[2 * hop + 1] = strdup(local))) { errno = ENOMEM; return -1; }
        const char *file = r ? pl->p.cache : local;
        char *interp, *arg;
        int s = read_shebang(file, pl->line[hop], &interp, &arg);
        if (s < 0) return -1;
        if (s > 0 && !r && !is_ferry_name(interp)) s = 0;  /* the kernel's to run */
        if (s == 0) {
            pl->run = file;
            return 0;
        }
        if (hop == SCRIPT_HOPS) { errno = ELOOP; return -1; }
        /* A script we run ourselves: the kernel's permission check on it first. */
        if (LIBC(access)(file, X_OK) < 0) return -1;
        size_t argc = 0;
        while (pl->argv && pl->argv[argc]) argc++;
        char **nv = malloc((argc + 3) * sizeof *nv);
        if (!nv) { errno = ENOMEM; return -1; }
        size_t k = 0;
        nv[k++] = interp;
        if (arg) nv[k++] = arg;
        nv[k++] = (char *)(r ? target : local);  /* the script as named (past symlinks we followed) */
        for (size_t i = 1; i < argc; i++) nv[k++] = pl->argv[i];
        nv[k] = NULL;
        free(pl->owned);
        pl->argv = pl->owned = nv;
        cur = interp;
    }
}

/* How a new image starts (an exec, a spawn): 0 or an errno.  An exec that returns failed. */
typedef int start_fn(const char *file, char *const argv[], char *const env[], void *ctx);

/* `start` with the environment the new image must have (env.c). */
static int with_env(char *const envp[], start_fn *start, const char *file, char *const argv[], void *ctx)
{
    char **env = fy_env_for_exec(envp);
    if (!env) return errno;  /* ENOMEM, or EFAULT for a wild envp */
    fy_fault_before_exec();
    int rc = start(file, argv, env, ctx);
    fy_fault_after_exec();
    fy_env_free(env, envp);
    return rc;
}

/* The same for what plan_exec makes of path and argv. */
static int planned(const char *path, char *const argv[], char *const envp[], start_fn *start, void *ctx)
{
    struct exec_plan pl;
    int rc = plan_exec(&pl, path, argv) < 0 ? errno : with_env(envp, start, pl.run, pl.argv, ctx);
    plan_free(&pl);
    return rc;
}

/* ctx: libc's execve or execvpe (one type). */
static int start_exec(const char *file, char *const argv[], char *const env[], void *ctx)
{
    fy_libc_execve_t *const *exec = ctx;
    (*exec)(file, argv, env);
    return errno;
}

FY_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    fy_libc_execve_t *exec = fy_libc_execve();
    if (fy_cfg.mode == FY_MODE_OFF) return exec(path, argv, envp);
    errno = planned(path, argv, envp, start_exec, &exec);
    return -1;
}

FY_EXPORT int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

static int start_fexecve(const char *file, char *const argv[], char *const env[], void *ctx)
{
    (void)file;
    LIBC(fexecve)(*(int *)ctx, argv, env);
    return errno;
}

/* fexecve on a ferry fd: run the file by its ferry path (a direct-mode fd is a placeholder
 * the kernel cannot execute). */
FY_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    if (fy_cfg.mode == FY_MODE_OFF) return LIBC(fexecve)(fd, argv, envp);
    struct fy_fd *f = fy_fd_get(fd);
    if (f) return execve(f->path, argv, envp);
    errno = with_env(envp, start_fexecve, NULL, argv, &fd);
    return -1;
}

/* PATH search.  glibc's own search calls its internal execve, which would look for a
 * ferry directory in PATH on the local file system: when PATH holds one, search here. */

/* A candidate that failed so goes on to the next, as in glibc's search. */
static int keeps_searching(int err)
{
    switch (err) {
    case EACCES: case ENOENT: case ESTALE: case ENOTDIR: case ENODEV: case ETIMEDOUT: return 1;
    default: return 0;
    }
}

/* Offer `file` in each directory of PATH (an empty element is the cwd), in order, to `try`
 * until it answers 0 (the name is left in buf, PATH_MAX bytes) or an errno that ends the
 * search.  0, or an errno: EACCES if any candidate said so, else the last one's. */
static int search_path(const char *file, char *buf, int (*try)(const char *name, void *ctx), void *ctx)
{
    const char *s = getenv("PATH");
    if (!s) s = "/bin:/usr/bin";
    int err = ENOENT, eacces = 0;
    for (size_t fl = strlen(file);; s++) {
        const char *e = strchrnul(s, ':');
        size_t dl = (size_t)(e - s);
        if (dl + 1 + fl + 1 <= PATH_MAX) {
            memcpy(buf, s, dl);
            if (dl) buf[dl++] = '/';
            memcpy(buf + dl, file, fl + 1);
            err = try(buf, ctx);
            if (!err || !keeps_searching(err)) return err;
            eacces |= err == EACCES;
        }
        if (!*e) break;
        s = e;
    }
    return eacces ? EACCES : err;
}

static int ferry_dir(const char *name, void *ctx)
{
    (void)ctx;
    return (name[0] == '/' ? fy_mount_root(name) != 0 : fy_vcwd_set) ? 0 : ENOENT;
}

/* Does PATH hold a ferry directory (or a relative one, from a ferry cwd)? */
static int path_has_ferry(void)
{
    char buf[PATH_MAX];
    return search_path("", buf, ferry_dir, NULL) == 0;
}

struct exec_args { char *const *argv, *const *envp; };

/* glibc's execvpe step, over our execve. */
static int exec_candidate(const char *name, void *ctx)
{
    const struct exec_args *a = ctx;
    execve(name, a->argv, a->envp);
    if (errno == ENOEXEC) {
        /* no "#!": the shell runs it, as glibc does */
        size_t argc = 0;
        while (a->argv && a->argv[argc]) argc++;
        char **nv = malloc((argc + 3) * sizeof *nv);
        if (nv) {
            nv[0] = (char *)"/bin/sh";
            nv[1] = (char *)name;
            for (size_t i = 1; i < argc; i++) nv[i + 1] = a->argv[i];
            nv[argc < 1 ? 2 : argc + 1] = NULL;
            execve("/bin/sh", nv, a->envp);
            free(nv);
        }
    }
    return errno;
}

/* posix_spawnp's: the first executable regular file, through the ferry hooks. */
static int spawn_candidate(const char *name, void *ctx)
{
    (void)ctx;
    struct stat st;
    if (stat(name, &st) != 0 || !S_ISREG(st.st_mode)) return ENOENT;
    return access(name, X_OK) == 0 ? 0 : EACCES;
}

FY_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    fy_libc_execve_t *exec = fy_libc_execvpe();
    if (fy_cfg.mode == FY_MODE_OFF) return exec(file, argv, envp);
    if (strchr(file, '/')) return execve(file, argv, envp);
    if (!*file) { errno = ENOENT; return -1; }
    char buf[PATH_MAX];
    struct exec_args a = {argv, envp};
    if (path_has_ferry()) errno = search_path(file, buf, exec_candidate, &a);
    else errno = with_env(envp, start_exec, file, argv, &exec);
    return -1;
}

FY_EXPORT int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

/* execl* take their arguments as varargs: gather them into an argv first. */
#define GATHER_ARGS(first, ap, argv)                 \
    size_t n_ = 1;                                   \
    va_list cnt_;                                    \
    va_copy(cnt_, ap);                               \
    while (va_arg(cnt_, char *)) n_++;               \
    va_end(cnt_);                                    \
    char **argv = alloca((n_ + 1) * sizeof(char *)); \
    argv[0] = (char *)(first);                       \
    for (size_t i_ = 1; i_ <= n_; i_++) argv[i_] = va_arg(ap, char *)

/* execle's envp follows the argument list's NULL; the others use environ. */
#define EXECL_HOOK(name, run, takes_envp)                                        \
    FY_EXPORT int name(const char *file, const char *arg, ...)                   \
    {                                                                            \
        va_list ap;                                                              \
        va_start(ap, arg);                                                       \
        GATHER_ARGS(arg, ap, argv);                                              \
        char *const *envp = (takes_envp) ? va_arg(ap, char *const *) : environ;  \
        va_end(ap);                                                              \
        return run(file, argv, envp);                                            \
    }
EXECL_HOOK(execl, execve, 0)
EXECL_HOOK(execlp, execvpe, 0)
EXECL_HOOK(execle, execve, 1)

struct spawn_args { pid_t *pid; const posix_spawn_file_actions_t *fa; const posix_spawnattr_t *attr; };

static int start_spawn(const char *file, char *const argv[], char *const env[], void *ctx)
{
    const struct spawn_args *a = ctx;
    return LIBC(posix_spawn)(a->pid, file, a->fa, a->attr, argv, env);
}

static int start_spawnp(const char *file, char *const argv[], char *const env[], void *ctx)
{
    const struct spawn_args *a = ctx;
    return LIBC(posix_spawnp)(a->pid, file, a->fa, a->attr, argv, env);
}

static int spawn_common(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[], int search)
{
    if (fy_cfg.mode == FY_MODE_OFF)
        return (search ? LIBC(posix_spawnp) : LIBC(posix_spawn))(pid, path, fa, attr, argv, envp);
    struct spawn_args a = {pid, fa, attr};
    char found[PATH_MAX];
    if (search && !strchr(path, '/')) {
        if (!path_has_ferry()) return with_env(envp, start_spawnp, path, argv, &a);
        if (!*path) return ENOENT;
        int rc = search_path(path, found, spawn_candidate, NULL);
        if (rc) return rc;
        path = found;
    }
    return planned(path, argv, envp, start_spawn, &a);
}

FY_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return spawn_common(pid, path, fa, attr, argv, envp, 0);
}

FY_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return spawn_common(pid, file, fa, attr, argv, envp, 1);
}

FY_EXPORT int system(const char *cmd)
{
    if (fy_cfg.mode == FY_MODE_OFF) return LIBC(system)(cmd);
    char **saved = fy_environ_swap();
    fy_fault_before_exec();
    int rc = LIBC(system)(cmd);
    fy_fault_after_exec();
    fy_environ_restore(saved);
    return rc;
}

FY_EXPORT FILE *popen(const char *cmd, const char *mode)
{
    if (fy_cfg.mode == FY_MODE_OFF) return LIBC(popen)(cmd, mode);
    char **saved = fy_environ_swap();
    fy_fault_before_exec();
    FILE *f = LIBC(popen)(cmd, mode);
    fy_fault_after_exec();
    fy_environ_restore(saved);
    return f;
}

FY_EXPORT pid_t vfork(void) { return fork(); }
