/* Processes: what a new program image must inherit from this one.
 *
 * fork needs nothing here (memory is copied; pthread_atfork in init.c gives the child its
 * own agent connection).  exec loses our memory, so every exec entry writes the ferry
 * fd table and the ferry cwd into the new image's environment, and a ferry path to a
 * program is fetched into the cache and executed from there (a `#!` script through its
 * interpreter, as the kernel would: see plan_exec).  A program that clears its
 * environment (env -i) still hands ferry on: the exec hooks put LD_PRELOAD and the FERRY_*
 * settings back into any envp that lacks them.  vfork becomes fork: a
 * vfork child shares our memory and could not run the hooks safely.
 */
#include "fy.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static int is_ours(const char *kv)
{
    return strncmp(kv, "FERRY_FDS=", 10) == 0 || strncmp(kv, "FERRY_CWD=", 10) == 0;
}

static char *kv(const char *key, const char *val)
{
    size_t k = strlen(key), v = strlen(val);
    char *s = malloc(k + v + 2);
    if (!s) return NULL;
    memcpy(s, key, k);
    s[k] = '=';
    memcpy(s + k + 1, val, v + 1);
    return s;
}

/* What a child needs to stay under ferry, as it was when this image started: a program
 * that clears its environment (env -i, execle with a small envp) gets these put back. */
static const char *const keep_keys[] = {"FERRY_SOCK", "FERRY_MODE", "FERRY_CACHE", "FERRY_PREFIXES"};
#define NKEEP (sizeof keep_keys / sizeof *keep_keys)
static char *keep_vals[NKEEP];
static char *self_lib;  /* this library's file, as the loader named it (LD_PRELOAD's word) */

__attribute__((constructor)) static void remember_env(void)
{
    if (!getenv("FERRY_SOCK")) return;
    for (size_t i = 0; i < NKEEP; i++) {
        const char *v = getenv(keep_keys[i]);
        if (v) keep_vals[i] = strdup(v);
    }
    Dl_info info;
    if (dladdr((void *)remember_env, &info) && info.dli_fname && info.dli_fname[0] == '/')
        self_lib = strdup(info.dli_fname);
}

/* Does the LD_PRELOAD value `v` (words separated by spaces or colons) name self_lib? */
static int preloads_us(const char *v)
{
    size_t n = strlen(self_lib);
    for (const char *s = v; (s = strstr(s, self_lib)) != NULL; s += n)
        if ((s == v || s[-1] == ' ' || s[-1] == ':') && (s[n] == 0 || s[n] == ' ' || s[n] == ':')) return 1;
    return 0;
}

/* A copy of envp with FERRY_FDS/FERRY_CWD describing this process now, and LD_PRELOAD and
 * the FERRY_* settings put back where the program dropped them (every other variable is
 * the program's choice).  Leaked on a successful exec (the image is gone); callers free
 * it on failure. */
char **fy_env_for_exec(char *const envp[])
{
    size_t n = 0;
    while (envp && envp[n]) n++;
    char **out = calloc(n + NKEEP + 4, sizeof *out);
    if (!out) return NULL;
    size_t j = 0;
    int have[NKEEP] = {0}, have_preload = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_ours(envp[i])) continue;
        for (size_t k = 0; k < NKEEP; k++) {
            size_t kl = strlen(keep_keys[k]);
            if (strncmp(envp[i], keep_keys[k], kl) == 0 && envp[i][kl] == '=') have[k] = 1;
        }
        if (self_lib && strncmp(envp[i], "LD_PRELOAD=", 11) == 0) {
            have_preload = 1;
            if (!preloads_us(envp[i] + 11)) {
                /* The program preloads something else: ferry first, theirs after. */
                char *v = malloc(strlen(self_lib) + strlen(envp[i] + 11) + 2);
                if (v) {
                    sprintf(v, "%s %s", self_lib, envp[i] + 11);
                    out[j] = kv("LD_PRELOAD", v);
                    free(v);
                    if (out[j]) { j++; continue; }
                }
            }
        }
        out[j++] = envp[i];
    }
    for (size_t k = 0; k < NKEEP; k++)
        if (!have[k] && keep_vals[k] && (out[j] = kv(keep_keys[k], keep_vals[k]))) j++;
    if (self_lib && !have_preload && (out[j] = kv("LD_PRELOAD", self_lib))) j++;
    char *fds = fy_fd_export();
    if (fds && *fds && (out[j] = kv("FERRY_FDS", fds))) j++;
    free(fds);
    if (fy_vcwd_set && fy_cfg.mode == FY_MODE_DIRECT && (out[j] = kv("FERRY_CWD", fy_vcwd))) j++;
    out[j] = NULL;
    return out;
}

static void free_env(char **env, char *const orig[])
{
    if (!env) return;
    for (size_t i = 0; env[i]; i++) {
        int from_orig = 0;
        for (size_t k = 0; orig && orig[k]; k++)
            if (orig[k] == env[i]) { from_orig = 1; break; }
        if (!from_orig) free(env[i]);
    }
    free(env);
}

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
    FY_REAL(int, open, const char *, int, ...);
    FY_REAL(int, close, int);
    int fd = real_open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, line, SCRIPT_HEAD) : -1;
    real_close(fd);
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

/* A ferry path that is a symlink, followed here as a kernel client follows any symlink:
 * an absolute target names a file on this machine (a venv's bin/python3 ->
 * /usr/bin/python3), which the agent, refusing absolute targets as escapes from the
 * export, would not open.  `path` itself when it is no ferry symlink, else a malloc'd
 * target (local, or a ferry path that is no symlink); NULL on error. */
const char *fy_follow_links(const char *path)
{
    char *cur = NULL;
    for (int hop = 0; hop < 40; hop++) {
        struct fy_path fp;
        const char *n = cur ? cur : path;
        struct stat st;
        if (fy_resolve(AT_FDCWD, &n, &fp) != 1 || lstat(fp.ferry, &st) < 0 || !S_ISLNK(st.st_mode))
            return cur ? cur : path;
        char t[PATH_MAX];
        ssize_t len = readlink(fp.ferry, t, sizeof t - 1);
        if (len <= 0) return cur ? cur : path;
        t[len] = 0;
        char *next = malloc(2 * PATH_MAX);
        if (!next) { free(cur); errno = ENOMEM; return NULL; }
        if (t[0] == '/') {
            strcpy(next, t);
        } else {
            *strrchr(fp.ferry, '/') = 0;  /* a normalised ferry path always has one */
            snprintf(next, 2 * PATH_MAX, "%s/%s", fp.ferry, t);
        }
        free(cur);
        cur = next;
    }
    free(cur);
    errno = ELOOP;
    return NULL;
}

/* Decide what the kernel runs for execve(path, argv): fills pl->run and pl->argv.
 * 0 or -1 with errno. */
static int plan_exec(struct exec_plan *pl, const char *path, char *const argv[])
{
    FY_REAL(int, access, const char *, int);
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
        if (real_access(file, X_OK) < 0) return -1;
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

FY_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    FY_REAL(int, execve, const char *, char *const[], char *const[]);
    if (fy_cfg.mode == FY_MODE_OFF) return real_execve(path, argv, envp);
    struct exec_plan pl;
    int e = ENOMEM;
    if (plan_exec(&pl, path, argv) < 0) {
        e = errno;
    } else {
        char **env = fy_env_for_exec(envp);
        if (env) {
            real_execve(pl.run, pl.argv, env);
            e = errno;
            free_env(env, envp);
        }
    }
    plan_free(&pl);
    errno = e;
    return -1;
}

FY_EXPORT int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

/* fexecve on a ferry fd: run the file by its ferry path (a direct-mode fd is a placeholder
 * the kernel cannot execute). */
FY_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    FY_REAL(int, fexecve, int, char *const[], char *const[]);
    if (fy_cfg.mode == FY_MODE_OFF) return real_fexecve(fd, argv, envp);
    struct fy_fd *f = fy_fd_get(fd);
    if (f) return execve(f->path, argv, envp);
    char **env = fy_env_for_exec(envp);
    if (!env) { errno = ENOMEM; return -1; }
    real_fexecve(fd, argv, env);
    int e = errno;
    free_env(env, envp);
    errno = e;
    return -1;
}

/* PATH search.  glibc's own search calls its internal execve, which would look for a
 * ferry directory in PATH on the local file system: when PATH holds one, search here. */
static const char *search_path(void)
{
    const char *s = getenv("PATH");
    return s ? s : "/bin:/usr/bin";
}

/* Element [s, e) of PATH joined with `file` into buf (an empty element is the cwd). */
static int join_elem(char *buf, size_t cap, const char *s, const char *e, const char *file)
{
    size_t dl = (size_t)(e - s), fl = strlen(file);
    if (dl + 1 + fl + 1 > cap) return -1;
    memcpy(buf, s, dl);
    if (dl) buf[dl++] = '/';
    memcpy(buf + dl, file, fl + 1);
    return 0;
}

static int path_has_ferry(const char *pathvar)
{
    for (const char *s = pathvar;; s++) {
        const char *e = strchrnul(s, ':');
        char dir[PATH_MAX];
        if (e == s || *s != '/') {
            if (fy_vcwd_set) return 1;
        } else if ((size_t)(e - s) < sizeof dir) {
            memcpy(dir, s, (size_t)(e - s));
            dir[e - s] = 0;
            if (fy_mount_root(dir)) return 1;
        }
        if (!*e) return 0;
        s = e;
    }
}

FY_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    FY_REAL(int, execvpe, const char *, char *const[], char *const[]);
    if (fy_cfg.mode == FY_MODE_OFF) return real_execvpe(file, argv, envp);
    if (strchr(file, '/')) return execve(file, argv, envp);
    if (!*file) { errno = ENOENT; return -1; }
    const char *pathvar = search_path();
    if (!path_has_ferry(pathvar)) {
        char **env = fy_env_for_exec(envp);
        if (!env) { errno = ENOMEM; return -1; }
        real_execvpe(file, argv, env);
        int e = errno;
        free_env(env, envp);
        errno = e;
        return -1;
    }
    /* glibc's loop, over our execve. */
    int eacces = 0;
    for (const char *s = pathvar;; s++) {
        const char *e = strchrnul(s, ':');
        char buf[PATH_MAX];
        if (join_elem(buf, sizeof buf, s, e, file) == 0) {
            execve(buf, argv, envp);
            if (errno == ENOEXEC) {
                /* no "#!": the shell runs it, as glibc does */
                size_t argc = 0;
                while (argv && argv[argc]) argc++;
                char **nv = malloc((argc + 3) * sizeof *nv);
                if (nv) {
                    nv[0] = (char *)"/bin/sh";
                    nv[1] = buf;
                    for (size_t i = 1; i < argc; i++) nv[i + 1] = argv[i];
                    nv[argc < 1 ? 2 : argc + 1] = NULL;
                    execve("/bin/sh", nv, envp);
                    free(nv);
                }
            }
            switch (errno) {
            case EACCES: eacces = 1; /* fall through */
            case ENOENT: case ESTALE: case ENOTDIR: case ENODEV: case ETIMEDOUT: break;
            default: return -1;
            }
        }
        if (!*e) break;
        s = e;
    }
    if (eacces) errno = EACCES;
    return -1;
}

FY_EXPORT int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

/* execl* take their arguments as varargs: gather them into an argv first. */
#define GATHER_ARGS(first, ap, argv)                                         \
    size_t n_ = 1;                                                           \
    va_list cnt_;                                                            \
    va_copy(cnt_, ap);                                                       \
    while (va_arg(cnt_, char *)) n_++;                                       \
    va_end(cnt_);                                                            \
    char **argv = alloca((n_ + 1) * sizeof(char *));                         \
    argv[0] = (char *)(first);                                               \
    for (size_t i_ = 1; i_ <= n_; i_++) argv[i_] = va_arg(ap, char *)

FY_EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    GATHER_ARGS(arg, ap, argv);
    va_end(ap);
    return execve(path, argv, environ);
}

FY_EXPORT int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    GATHER_ARGS(arg, ap, argv);
    va_end(ap);
    return execvpe(file, argv, environ);
}

FY_EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    GATHER_ARGS(arg, ap, argv);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

static int spawn_common(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[], int search)
{
    FY_REAL(int, posix_spawn, pid_t *, const char *, const posix_spawn_file_actions_t *,
            const posix_spawnattr_t *, char *const[], char *const[]);
    FY_REAL(int, posix_spawnp, pid_t *, const char *, const posix_spawn_file_actions_t *,
            const posix_spawnattr_t *, char *const[], char *const[]);
    if (fy_cfg.mode == FY_MODE_OFF)
        return (search ? real_posix_spawnp : real_posix_spawn)(pid, path, fa, attr, argv, envp);
    char found[PATH_MAX];
    if (search && !strchr(path, '/')) {
        const char *pathvar = search_path();
        if (!path_has_ferry(pathvar)) {
            char **env = fy_env_for_exec(envp);
            if (!env) return ENOMEM;
            int rc = real_posix_spawnp(pid, path, fa, attr, argv, env);
            free_env(env, envp);
            return rc;
        }
        if (!*path) return ENOENT;
        /* The first executable regular file along PATH, through the ferry hooks. */
        int rc = ENOENT;
        for (const char *s = pathvar;; s++) {
            const char *e = strchrnul(s, ':');
            struct stat st;
            if (join_elem(found, sizeof found, s, e, path) == 0 && stat(found, &st) == 0 && S_ISREG(st.st_mode)) {
                if (access(found, X_OK) == 0) { rc = 0; break; }
                rc = EACCES;
            }
            if (!*e) break;
            s = e;
        }
        if (rc) return rc;
        path = found;
    }
    struct exec_plan pl;
    int rc = ENOMEM;
    if (plan_exec(&pl, path, argv) < 0) {
        rc = errno;
    } else {
        char **env = fy_env_for_exec(envp);
        if (env) {
            rc = real_posix_spawn(pid, pl.run, fa, attr, pl.argv, env);
            free_env(env, envp);
        }
    }
    plan_free(&pl);
    return rc;
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

/* system() and popen() spawn through glibc internals with `environ`: put the current
 * state there for the duration of the call. */
static char **swap_environ(void)
{
    char **saved = environ;
    char **env = fy_env_for_exec(environ);
    if (env) environ = env;
    return saved;
}

static void restore_environ(char **saved)
{
    char **env = environ;
    if (env == saved) return;
    environ = saved;
    free_env(env, saved);
}

FY_EXPORT int system(const char *cmd)
{
    FY_REAL(int, system, const char *);
    if (fy_cfg.mode == FY_MODE_OFF) return real_system(cmd);
    char **saved = swap_environ();
    int rc = real_system(cmd);
    restore_environ(saved);
    return rc;
}

FY_EXPORT FILE *popen(const char *cmd, const char *mode)
{
    FY_REAL(FILE *, popen, const char *, const char *);
    if (fy_cfg.mode == FY_MODE_OFF) return real_popen(cmd, mode);
    char **saved = swap_environ();
    FILE *f = real_popen(cmd, mode);
    restore_environ(saved);
    return f;
}

FY_EXPORT pid_t vfork(void) { return fork(); }
