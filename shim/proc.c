/* Processes: what a new program image must inherit from this one.
 *
 * fork needs nothing here (memory is copied; pthread_atfork in init.c gives the child its
 * own agent connection).  exec loses our memory, so every exec entry writes the ferry
 * fd table and the ferry cwd into the new image's environment, and a ferry path to a
 * program is fetched into the cache and executed from there.  A program that clears its
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

/* Ferry program path -> its cache file, fetched.  0 not ferry's; 1 mapped; -1 error. */
static int program_path(const char *path, struct fy_path *p)
{
    int r = fy_resolve(AT_FDCWD, &path, p);
    if (r <= 0) return r;
    struct fy_enc e = {.len = 0};
    fy_put_str(&e, p->ferry);
    fy_put_u32(&e, O_RDONLY);
    fy_put_u32(&e, 0);
    int rc = fy_call(FY_OP_CACHE_OPEN, 0, &e, NULL, 0, -1, NULL, 0, NULL);
    return rc < 0 ? fy_fail(rc) : 1;
}

FY_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    FY_REAL(int, execve, const char *, char *const[], char *const[]);
    if (fy_cfg.mode == FY_MODE_OFF) return real_execve(path, argv, envp);
    struct fy_path p;
    int r = program_path(path, &p);
    if (r < 0) return -1;
    char **env = fy_env_for_exec(envp);
    if (!env) { errno = ENOMEM; return -1; }
    real_execve(r ? p.cache : path, argv, env);
    int e = errno;
    free_env(env, envp);
    errno = e;
    return -1;
}

FY_EXPORT int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

FY_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    FY_REAL(int, execvpe, const char *, char *const[], char *const[]);
    if (fy_cfg.mode == FY_MODE_OFF) return real_execvpe(file, argv, envp);
    if (strchr(file, '/')) return execve(file, argv, envp);
    char **env = fy_env_for_exec(envp);
    if (!env) { errno = ENOMEM; return -1; }
    real_execvpe(file, argv, env);
    int e = errno;
    free_env(env, envp);
    errno = e;
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
    struct fy_path p;
    int r = (!search || strchr(path, '/')) ? program_path(path, &p) : 0;
    if (r < 0) return errno;
    char **env = fy_env_for_exec(envp);
    if (!env) return ENOMEM;
    int rc = (search && !r ? real_posix_spawnp : real_posix_spawn)(pid, r ? p.cache : path, fa, attr, argv, env);
    free_env(env, envp);
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
