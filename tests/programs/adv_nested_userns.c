/* Attack 7, a nested user namespace through clone and clone3.
 *   adv_nested_userns clone | clone3
 * The child (in the new user namespace) exits at once. Prints
 * "ESCAPED MODE child=PID" or "blocked errno=N". */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* struct clone_args of linux/sched.h, version 0 (64 bytes). */
struct clone_args_v0 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 2)
        return 2;
    long pid;
    if (!strcmp(argv[1], "clone")) {
        pid = syscall(SYS_clone, (long)(CLONE_NEWUSER | SIGCHLD), 0L, 0L, 0L, 0L);
    } else if (!strcmp(argv[1], "clone3")) {
        struct clone_args_v0 args = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
        pid = syscall(SYS_clone3, &args, sizeof args);
    } else {
        return 2;
    }
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    if (pid < 0) {
        printf("blocked errno=%d\n", errno);
        return 0;
    }
    waitpid((pid_t)pid, NULL, 0);
    printf("ESCAPED %s child=%ld\n", argv[1], pid);
    return 0;
}
