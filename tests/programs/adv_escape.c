/* Attack 6, namespaces, mounts and the root: each mode makes one system call.
 *   adv_escape mount          mount a tmpfs on /tmp
 *   adv_escape unshare_user   unshare(CLONE_NEWUSER)
 *   adv_escape setns          setns() into our own network namespace
 *   adv_escape chroot         chroot(".")
 *   adv_escape pivot_root     pivot_root(".", ".")
 * Prints "ESCAPED MODE" when the call succeeded, "blocked errno=N" when it
 * failed; a seccomp kill shows up as death by SIGSYS instead. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static long attempt(const char *mode) {
    if (!strcmp(mode, "mount"))
        return mount("cellblock-adv", "/tmp", "tmpfs", 0, "size=64k");
    if (!strcmp(mode, "unshare_user"))
        return unshare(CLONE_NEWUSER);
    if (!strcmp(mode, "setns")) {
        int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            printf("setup failed errno=%d\n", errno);
            return -2;
        }
        return setns(fd, CLONE_NEWNET);
    }
    if (!strcmp(mode, "chroot"))
        return chroot(".");
    if (!strcmp(mode, "pivot_root"))
        return syscall(SYS_pivot_root, ".", ".");
    return -3;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 2)
        return 2;
    long ret = attempt(argv[1]);
    if (ret == 0)
        printf("ESCAPED %s\n", argv[1]);
    else if (ret == -1)
        printf("blocked errno=%d\n", errno);
    else
        return 2;
    return 0;
}
