/* Reading the program's pointers without crashing it (issue 10).
 *
 * The kernel answers a system call given a bad pointer with EFAULT; the program lives on.
 * A preload library that reads that pointer first (the prefix compare of every path, a
 * stat buffer it fills for a ferry path) would die by SIGSEGV instead.  So the shim reads
 * program memory only through the probes written in assembly below: fy_probe_str
 * (strnlen), fy_probe_copy (memcpy), and fy_probe_rd/fy_probe_wr (can a buffer be read,
 * written?).  A fault inside them reaches our SIGSEGV/SIGBUS
 * handler, which sees the faulting instruction lies in the probes' code and moves the
 * program counter to a landing point that returns -1 (the Linux kernel's exception-table
 * trick, for its own copy_from_user).  The fast path thus costs a few loads and no setup:
 * no sigsetjmp, no per-thread flag, no system call.
 *
 * The handler must be invisible otherwise.  sigaction, signal and their relatives are
 * virtualised for SIGSEGV and SIGBUS only: the program's action is kept here (and is what
 * sigaction reports back), while the kernel keeps ours, installed with the program's
 * sa_mask and SA_ONSTACK/SA_NODEFER/SA_RESTART so a chained handler runs on the stack
 * and with the mask it asked for.  A fault outside the probes goes to the program's
 * handler (SA_SIGINFO or not, SA_RESETHAND honoured), is ignored when the program
 * ignores a signal sent to it, and for SIG_DFL (or a fault the program "ignores", which
 * the kernel never lets it) restores the default action and lets the fault happen again,
 * so the process dies as it would have: same signal, same si_addr, same core.
 *
 * Only x86-64 has the probes so far; elsewhere they read without protection and no
 * handler is installed (docs/calls.md, "Wild pointers").
 */
#include "fy.h"

#include <pthread.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__x86_64__)
#define FY_HAVE_PROBES 1
/* Leaf routines that never touch the stack, so the landing point can simply return to
 * their caller with -1.  The byte loop of fy_probe_str is as fast as a word-at-a-time one
 * for the dozen bytes the fast path reads (the longest mount prefix + 1). */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl fy_probe_begin_\n .hidden fy_probe_begin_\n"
        "fy_probe_begin_:\n"
        ".globl fy_probe_str\n .hidden fy_probe_str\n .type fy_probe_str,@function\n"
        "fy_probe_str:\n"          /* long fy_probe_str(const char *s %rdi, size_t max %rsi) */
        "    xorl %eax, %eax\n"
        "1:  cmpq %rsi, %rax\n"
        "    jae 2f\n"
        "    cmpb $0, (%rdi,%rax)\n" /* may fault */
        "    je 2f\n"
        "    incq %rax\n"
        "    jmp 1b\n"
        "2:  ret\n"
        ".size fy_probe_str, .-fy_probe_str\n"
        ".globl fy_probe_copy\n .hidden fy_probe_copy\n .type fy_probe_copy,@function\n"
        "fy_probe_copy:\n"         /* int fy_probe_copy(void *dst %rdi, const void *src %rsi, size_t n %rdx) */
        "    movq %rdx, %rcx\n"
        "    rep movsb\n"            /* may fault, on either side */
        "    xorl %eax, %eax\n"
        "    ret\n"
        ".size fy_probe_copy, .-fy_probe_copy\n"
        /* int fy_probe_rd(const void *p %rdi, size_t n %rsi): one load in each page of the
         * range; fy_probe_wr the same with a store that changes nothing (an atomic or of 0,
         * safe against other threads writing there). */
        ".globl fy_probe_rd\n .hidden fy_probe_rd\n .type fy_probe_rd,@function\n"
        "fy_probe_rd:\n"
        "    xorl %eax, %eax\n"
        "    testq %rsi, %rsi\n"
        "    je 2f\n"
        "    leaq -1(%rdi,%rsi), %rdx\n"  /* the last byte */
        "1:  movb (%rdi), %cl\n"           /* may fault */
        "    andq $-4096, %rdi\n"
        "    addq $4096, %rdi\n"
        "    jc 2f\n"
        "    cmpq %rdx, %rdi\n"
        "    jbe 1b\n"
        "2:  ret\n"
        ".size fy_probe_rd, .-fy_probe_rd\n"
        ".globl fy_probe_wr\n .hidden fy_probe_wr\n .type fy_probe_wr,@function\n"
        "fy_probe_wr:\n"
        "    xorl %eax, %eax\n"
        "    testq %rsi, %rsi\n"
        "    je 2f\n"
        "    leaq -1(%rdi,%rsi), %rdx\n"
        "1:  lock orb $0, (%rdi)\n"        /* may fault */
        "    andq $-4096, %rdi\n"
        "    addq $4096, %rdi\n"
        "    jc 2f\n"
        "    cmpq %rdx, %rdi\n"
        "    jbe 1b\n"
        "2:  ret\n"
        ".size fy_probe_wr, .-fy_probe_wr\n"
        ".globl fy_probe_end_\n .hidden fy_probe_end_\n"
        "fy_probe_end_:\n"
        ".globl fy_probe_fixup_\n .hidden fy_probe_fixup_\n"
        "fy_probe_fixup_:\n"
        "    movq $-1, %rax\n"
        "    ret\n");
extern const char fy_probe_begin_[], fy_probe_end_[], fy_probe_fixup_[];
#else
#define FY_HAVE_PROBES 0
long fy_probe_str(const char *s, size_t max) { return (long)strnlen(s, max); }
int fy_probe_copy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); return 0; }
int fy_probe_rd(const void *p, size_t n) { (void)p; (void)n; return 0; }
int fy_probe_wr(void *p, size_t n) { (void)p; (void)n; return 0; }
#endif

/* The program's action for SIGSEGV (0) and SIGBUS (1).  The handler may run at any time
 * in any thread, so an update never writes the entry it may be reading: it fills the
 * next of a small ring and publishes the pointer (a reader would need four updates
 * during its copy to see a torn one). */
#define RING 4
static struct sigaction ring[2][RING];
static struct sigaction *cur[2];
static int ring_next[2];
static struct sigaction dfl[2];  /* SIG_DFL, published by SA_RESETHAND from the handler */
static pthread_mutex_t act_lock = PTHREAD_MUTEX_INITIALIZER;
static int installed;
/* What glibc's sigaction adds to every action it hands the kernel (reported back, as
 * glibc reports what the kernel holds). */
static int restorer_flag;
static void (*restorer)(void);

static int slot(int sig) { return sig == SIGSEGV ? 0 : sig == SIGBUS ? 1 : -1; }

static void handler(int sig, siginfo_t *si, void *ucv);

/* Our handler as the kernel should hold it for program action `a`. */
static struct sigaction kernel_action(const struct sigaction *a)
{
    struct sigaction k;
    memset(&k, 0, sizeof k);
    k.sa_sigaction = handler;
    k.sa_flags = SA_SIGINFO;
    if (a->sa_handler != SIG_DFL && a->sa_handler != SIG_IGN) {
        k.sa_mask = a->sa_mask;
        k.sa_flags |= a->sa_flags & (SA_ONSTACK | SA_NODEFER | SA_RESTART);
    } else {
        sigemptyset(&k.sa_mask);
    }
    return k;
}

static void publish(int i, const struct sigaction *a)
{
    struct sigaction *s = &ring[i][ring_next[i]++ % RING];
    *s = *a;
    __atomic_store_n(&cur[i], s, __ATOMIC_RELEASE);
}

static void handler(int sig, siginfo_t *si, void *ucv)
{
#if FY_HAVE_PROBES
    ucontext_t *uc = ucv;
    uintptr_t ip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    if (ip >= (uintptr_t)fy_probe_begin_ && ip < (uintptr_t)fy_probe_end_) {
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)fy_probe_fixup_;
        return;  /* sigreturn restores the mask the probe ran with */
    }
#endif
    int i = slot(sig);
    struct sigaction a = *__atomic_load_n(&cur[i], __ATOMIC_ACQUIRE);
    /* si_code > 0: raised by the kernel for a fault, which no program can ignore. */
    if (a.sa_handler == SIG_DFL || (a.sa_handler == SIG_IGN && si->si_code > 0)) {
        struct sigaction d;
        memset(&d, 0, sizeof d);
        d.sa_handler = SIG_DFL;
        LIBC(sigaction)(sig, &d, NULL);
        /* A fault happens again when we return; a signal sent by kill or raise is sent
         * again, and comes once the handler's mask is lifted.  Either way the default
         * action ends the process as it would have without ferry. */
        if (si->si_code <= 0) raise(sig);
        return;
    }
    if (a.sa_handler == SIG_IGN) return;
    if (a.sa_flags & SA_RESETHAND) __atomic_store_n(&cur[i], &dfl[i], __ATOMIC_RELEASE);
    if (a.sa_flags & SA_SIGINFO) a.sa_sigaction(sig, si, ucv);
    else a.sa_handler(sig);
}

void fy_fault_init(void)
{
    if (!FY_HAVE_PROBES) return;
    static const int sigs[2] = {SIGSEGV, SIGBUS};
    for (int i = 0; i < 2; i++) {
        dfl[i].sa_handler = SIG_DFL;
        struct sigaction prev, k;
        memset(&prev, 0, sizeof prev);
        /* What the kernel held (SIG_DFL, SIG_IGN inherited across exec, or a handler that a
         * constructor run before ours installed) is the program's action from now on. */
        if (LIBC(sigaction)(sigs[i], NULL, &prev) < 0) return;
        publish(i, &prev);  /* before the handler can run and read it */
        k = kernel_action(&prev);
        if (LIBC(sigaction)(sigs[i], &k, NULL) < 0) return;
    }
    struct sigaction back;
    if (LIBC(sigaction)(SIGSEGV, NULL, &back) == 0) {
        restorer_flag = back.sa_flags & 0x04000000;  /* SA_RESTORER, which glibc keeps private */
        restorer = back.sa_restorer;
    }
    __atomic_store_n(&installed, 1, __ATOMIC_RELEASE);
}

/* Does the shim keep the program's action for `sig`? */
static int owned(int sig) { return slot(sig) >= 0 && __atomic_load_n(&installed, __ATOMIC_ACQUIRE); }

/* sigaction for SIGSEGV/SIGBUS.  act and old are read and written as glibc's sigaction
 * does, in user space (a wild one crashes the program there as it would here). */
static int virtual_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    int i = slot(sig);
    struct sigaction a;
    if (act) a = *act;
    pthread_mutex_lock(&act_lock);
    struct sigaction prev = *cur[i];
    if (act) {
        struct sigaction k = kernel_action(&a);
        if (LIBC(sigaction)(sig, &k, NULL) < 0) {
            pthread_mutex_unlock(&act_lock);
            return -1;
        }
        a.sa_flags |= restorer_flag;
        if (restorer_flag) a.sa_restorer = restorer;
        publish(i, &a);
    }
    pthread_mutex_unlock(&act_lock);
    if (old) *old = prev;
    return 0;
}

FY_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!owned(sig)) return LIBC(sigaction)(sig, act, old);
    return virtual_sigaction(sig, act, old);
}
FY_EXPORT int __sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    return sigaction(sig, act, old);
}

/* signal() and its kin are built on glibc's internal sigaction, which no hook sees, so
 * each is redone on ours with the flags glibc gives it. */
static __sighandler_t set_simple(int sig, __sighandler_t h, int flags, int self_masked)
{
    struct sigaction a, old;
    memset(&a, 0, sizeof a);
    a.sa_handler = h;
    sigemptyset(&a.sa_mask);
    if (self_masked) sigaddset(&a.sa_mask, sig);
    a.sa_flags = flags;
    if (h == SIG_ERR) { errno = EINVAL; return SIG_ERR; }
    return virtual_sigaction(sig, &a, &old) < 0 ? SIG_ERR : old.sa_handler;
}

/* BSD semantics: the handler stays, the signal is blocked while it runs, calls restart. */
FY_EXPORT __sighandler_t signal(int sig, __sighandler_t h)
{
    return owned(sig) ? set_simple(sig, h, SA_RESTART, 1) : LIBC(signal)(sig, h);
}
FY_EXPORT __sighandler_t bsd_signal(int sig, __sighandler_t h) { return signal(sig, h); }
FY_EXPORT __sighandler_t ssignal(int sig, __sighandler_t h) { return signal(sig, h); }

/* System V semantics: one shot, not blocked while it runs. */
FY_EXPORT __sighandler_t sysv_signal(int sig, __sighandler_t h)
{
    return owned(sig) ? set_simple(sig, h, SA_RESETHAND | SA_NODEFER, 0) : LIBC(sysv_signal)(sig, h);
}
FY_EXPORT __sighandler_t __sysv_signal(int sig, __sighandler_t h) { return sysv_signal(sig, h); }

FY_EXPORT __sighandler_t sigset(int sig, __sighandler_t disp)
{
    if (!owned(sig)) return LIBC(sigset)(sig, disp);
    sigset_t one, was;
    sigemptyset(&one);
    sigaddset(&one, sig);
    struct sigaction old;
    if (disp == SIG_HOLD) {
        if (virtual_sigaction(sig, NULL, &old) < 0 || sigprocmask(SIG_BLOCK, &one, &was) < 0) return SIG_ERR;
        return sigismember(&was, sig) ? SIG_HOLD : old.sa_handler;
    }
    __sighandler_t prev = set_simple(sig, disp, 0, 0);
    if (prev == SIG_ERR || sigprocmask(SIG_UNBLOCK, &one, &was) < 0) return SIG_ERR;
    return sigismember(&was, sig) ? SIG_HOLD : prev;
}

/* Before an exec: an ignored SIGSEGV/SIGBUS stays ignored in the new image, as the kernel
 * keeps SIG_IGN across exec (a handler, ours, would become SIG_DFL).  fy_fault_after_exec
 * puts ours back when the exec failed. */
void fy_fault_before_exec(void)
{
    if (!__atomic_load_n(&installed, __ATOMIC_ACQUIRE)) return;
    static const int sigs[2] = {SIGSEGV, SIGBUS};
    for (int i = 0; i < 2; i++) {
        if (__atomic_load_n(&cur[i], __ATOMIC_ACQUIRE)->sa_handler != SIG_IGN) continue;
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        LIBC(sigaction)(sigs[i], &ign, NULL);
    }
}

void fy_fault_after_exec(void)
{
    if (!__atomic_load_n(&installed, __ATOMIC_ACQUIRE)) return;
    static const int sigs[2] = {SIGSEGV, SIGBUS};
    for (int i = 0; i < 2; i++) {
        struct sigaction *a = __atomic_load_n(&cur[i], __ATOMIC_ACQUIRE);
        if (a->sa_handler != SIG_IGN) continue;
        struct sigaction k = kernel_action(a);
        LIBC(sigaction)(sigs[i], &k, NULL);
    }
}
