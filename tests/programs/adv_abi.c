/* Attack 9, other system call ABIs of an x86_64 kernel.
 *   adv_abi int80   getpid through the i386 entry: int $0x80 with eax=20
 *   adv_abi x32     getpid as an x32 call: 39 | __X32_SYSCALL_BIT
 * Prints "ESCAPED MODE ret=R pid=P" when the call returned our pid,
 * "blocked errno=N" when it failed; a seccomp kill is death by SIGSYS. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 2)
        return 2;
    long ret;
    if (!strcmp(argv[1], "int80")) {
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
        if (ret < 0) {
            errno = (int)-ret;
            ret = -1;
        }
    } else if (!strcmp(argv[1], "x32")) {
        ret = syscall(0x40000000L | SYS_getpid);
    } else {
        return 2;
    }
    if (ret == (long)getpid())
        printf("ESCAPED %s ret=%ld pid=%d\n", argv[1], ret, getpid());
    else
        printf("blocked errno=%d ret=%ld\n", errno, ret);
    return 0;
}
