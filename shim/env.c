/* The environment a new program image gets: ferry's state now (FERRY_FDS, FERRY_CWD), and
 * LD_PRELOAD and the FERRY_* settings put back when the program dropped them (env -i,
 * execle with a small envp), so its children stay under ferry.  Every other variable is
 * the program's choice.
 */
#include "fy.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

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
    /* The kernel reads envp and each string (EFAULT when it cannot); so does this copy,
     * through the probes, so a wild one fails the exec instead of the program. */
    for (char *v; envp; n++) {
        if (fy_probe_copy(&v, &envp[n], sizeof v) < 0 || (v && fy_probe_str(v, (size_t)-1) < 0)) {
            errno = EFAULT;
            return NULL;
        }
        if (!v) break;
    }
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

void fy_env_free(char **env, char *const orig[])
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

char **fy_environ_swap(void)
{
    char **saved = environ;
    char **env = fy_env_for_exec(environ);
    if (env) environ = env;
    return saved;
}

void fy_environ_restore(char **saved)
{
    char **env = environ;
    if (env == saved) return;
    environ = saved;
    fy_env_free(env, saved);
}
