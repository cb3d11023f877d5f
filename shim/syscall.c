/* syscall(2): the numbers programs call past glibc's wrappers that a ferry fd or path
 * needs.  libuv (so node and npm) calls statx and close this way: without the close, the
 * fd table would keep a closed direct-mode fd and the next file opened at that number —
 * a local one as often as not — would be read through the agent (EBADF: npm ci failed
 * so).  Every other number goes to the kernel as it is (six argument words, as the
 * kernel takes).
 */
#include "fy.h"

#include <stdarg.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

FY_EXPORT long syscall(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    switch (nr) {
    case SYS_statx:
        return statx((int)a[0], (const char *)a[1], (int)a[2], (unsigned int)a[3], (struct statx *)a[4]);
    case SYS_close:
        return fy_close_fd((int)a[0]);
#ifdef SYS_close_range
    case SYS_close_range:
        return close_range((unsigned int)a[0], (unsigned int)a[1], (int)a[2]);
#endif
    }
    return LIBC(syscall)(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}
