/* A program's own SIGSEGV/SIGBUS handling, which ferry's fault handler (shim/fault.c) must
 * leave as it is: each case runs in a child, and the parent prints what it printed and
 * how it ended.  tests/test_wild_pointers.py compares a run under ferry with one without.
 *
 *   wild_signals            every case
 *   wild_signals --report   print this image's SIGSEGV disposition (after an exec)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define W ((volatile int *)0xDEADC0DEUL)

static const char *self;
static volatile int calls;
static sigjmp_buf back;

static void say(const char *s) { if (write(1, s, strlen(s)) < 0) _exit(3); }

static const char *disposition(int sig)
{
    struct sigaction o;
    if (sigaction(sig, NULL, &o) < 0) return "error";
    if (o.sa_handler == SIG_DFL) return "default";
    if (o.sa_handler == SIG_IGN) return "ignored";
    return "handler";
}

static void info_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char line[160];
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    snprintf(line, sizeof line, "handler sig=%d addr=%p code=%d segv-blocked=%d usr1-blocked=%d\n", sig, si->si_addr,
             si->si_code, sigismember(&now, SIGSEGV), sigismember(&now, SIGUSR1));
    say(line);
    _exit(0);
}

static void plain_handler(int sig)
{
    char line[64];
    snprintf(line, sizeof line, "plain handler sig=%d\n", sig);
    say(line);
    _exit(0);
}

static void counting_handler(int sig)
{
    (void)sig;
    calls++;
    siglongjmp(back, 1);
}

static void case_no_handler(void) { (void)*W; }

static void case_info_handler(void)
{
    struct sigaction a, o;
    memset(&a, 0, sizeof a);
    a.sa_sigaction = info_handler;
    a.sa_flags = SA_SIGINFO;
    sigemptyset(&a.sa_mask);
    sigaddset(&a.sa_mask, SIGUSR1);
    sigaction(SIGSEGV, &a, NULL);
    sigaction(SIGSEGV, NULL, &o);
    printf("oldact is ours=%d siginfo=%d usr1-in-mask=%d\n", o.sa_sigaction == info_handler,
           !!(o.sa_flags & SA_SIGINFO), sigismember(&o.sa_mask, SIGUSR1));
    fflush(stdout);
    (void)*W;
}

static void case_nodefer(void)
{
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_sigaction = info_handler;
    a.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &a, NULL);
    (void)*W;
}

static void case_signal(void)
{
    __sighandler_t first = signal(SIGSEGV, plain_handler);
    __sighandler_t second = signal(SIGSEGV, plain_handler);
    printf("signal returned default=%d then ours=%d, now %s\n", first == SIG_DFL, second == plain_handler,
           disposition(SIGSEGV));
    fflush(stdout);
    (void)*W;
}

static void case_resethand(void)
{
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_handler = counting_handler;
    a.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigaction(SIGSEGV, &a, NULL);
    if (sigsetjmp(back, 1) == 0) (void)*W;
    printf("handled %d, now %s\n", calls, disposition(SIGSEGV));
    fflush(stdout);
    (void)*W;  /* default now: dies */
}

static void case_ignored(void)
{
    signal(SIGSEGV, SIG_IGN);
    raise(SIGSEGV);
    printf("alive after raise, %s\n", disposition(SIGSEGV));
    fflush(stdout);
    (void)*W;  /* a fault cannot be ignored */
}

static void case_raise_default(void)
{
    printf("%s\n", disposition(SIGSEGV));
    fflush(stdout);
    raise(SIGSEGV);
}

/* The program's handler stays out of the shim's own probes. */
static void case_handler_and_wild_call(void)
{
    signal(SIGSEGV, counting_handler);
    int fd = open((const char *)W, O_RDONLY);
    int err = errno;
    printf("open %d %s, handler calls %d\n", fd, strerrorname_np(err), calls);
    fflush(stdout);
    if (sigsetjmp(back, 1) == 0) (void)*W;
    printf("then handler calls %d\n", calls);
}

static char altstack[1 << 16];
static volatile int forever = 1;
static int depth(int n)
{
    volatile char pad[1024];
    pad[0] = (char)n;
    return forever ? depth(n + 1) + pad[0] : 0;
}

static void case_overflow_altstack(void)
{
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_handler = plain_handler;
    a.sa_flags = SA_ONSTACK;
    sigaction(SIGSEGV, &a, NULL);
    printf("%d\n", depth(0));
}

static void case_sigbus(void)
{
    char tmpl[] = "/tmp/wild_signals.XXXXXX";
    int fd = mkstemp(tmpl);
    unlink(tmpl);
    if (fd < 0 || ftruncate(fd, 4096) < 0) { perror("mkstemp"); _exit(2); }
    volatile char *m = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); _exit(2); }
    printf("%s\n", disposition(SIGBUS));
    fflush(stdout);
    (void)m[4096];  /* past the end of the file */
}

static void case_exec_ignored(void)
{
    signal(SIGSEGV, SIG_IGN);
    fflush(stdout);
    execl(self, self, "--report", (char *)NULL);
    perror("execl");
}

static void run(const char *name, void (*fn)(void))
{
    printf("== %s\n", name);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        fn();
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) printf("killed by signal %d\n", WTERMSIG(status));
    else printf("exit %d\n", WEXITSTATUS(status));
}

int main(int argc, char **argv)
{
    self = argv[0];
    if (argc > 1 && strcmp(argv[1], "--report") == 0) {
        printf("after exec: SIGSEGV %s, SIGBUS %s\n", disposition(SIGSEGV), disposition(SIGBUS));
        return 0;
    }
    printf("start: SIGSEGV %s, SIGBUS %s\n", disposition(SIGSEGV), disposition(SIGBUS));
    run("no handler", case_no_handler);
    run("SA_SIGINFO handler", case_info_handler);
    run("SA_NODEFER", case_nodefer);
    run("signal()", case_signal);
    run("SA_RESETHAND", case_resethand);
    run("SIG_IGN", case_ignored);
    run("raise with SIG_DFL", case_raise_default);
    run("handler and a wild call", case_handler_and_wild_call);
    run("stack overflow on an altstack", case_overflow_altstack);
    run("SIGBUS", case_sigbus);
    run("exec keeps SIG_IGN", case_exec_ignored);
    return 0;
}
