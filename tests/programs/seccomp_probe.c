/* Probes for tests/test_seccomp.py: each mode makes one attempt the default
 * seccomp profile must stop, or one thing it must keep working, and prints
 * "ret=<return value> errno=<errno>". A filter that kills shows up as death by
 * SIGSYS instead of output.
 *
 *   seccomp_probe MODE [ARG]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(long ret) {
    printf("ret=%ld errno=%d\n", ret, ret < 0 ? errno : 0);
    return 0;
}

/* struct clone_args of linux/sched.h, as of Linux 5.3 (CLONE_ARGS_SIZE_VER0). */
struct clone_args_v0 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

/* A raw fork-like syscall: the child leaves at once without touching libc. */
static long reap(long pid) {
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return pid;
}

static void *thread_main(void *arg) {
    int *counter = arg;
    __atomic_add_fetch(counter, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* fork() and eight threads: glibc 2.34+ tries clone3 for both and must fall
 * back to clone when the filter answers ENOSYS. */
static int fork_and_threads(void) {
    pid_t pid = fork();
    if (pid < 0)
        return report(-1);
    if (pid == 0)
        _exit(7);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 7) {
        errno = ECHILD;
        return report(-1);
    }
    int counter = 0;
    pthread_t threads[8];
    for (int i = 0; i < 8; i++) {
        int err = pthread_create(&threads[i], NULL, thread_main, &counter);
        if (err) {
            errno = err;
            return report(-1);
        }
    }
    for (int i = 0; i < 8; i++)
        pthread_join(threads[i], NULL);
    return report(counter == 8 ? 0 : -1);
}

/* A pseudo-terminal pair, so TIOCSTI has a terminal to push into. */
static int open_pty(int *master) {
    *master = posix_openpt(O_RDWR | O_NOCTTY);
    if (*master < 0 || grantpt(*master) || unlockpt(*master))
        return -1;
    return open(ptsname(*master), O_RDWR | O_NOCTTY);
}

static int tty_ioctl(const char *mode) {
    int master, slave = open_pty(&master);
    if (slave < 0) {
        printf("setup failed errno=%d\n", errno);
        return 1;
    }
    char c = 'x';
    unsigned char linux_subcode[2] = {12, 0}; /* TIOCL_GETSHIFTSTATE: harmless */
    unsigned int ptn;
    char termios_buf[64];
    if (!strcmp(mode, "tiocsti"))
        return report(syscall(SYS_ioctl, slave, 0x5412UL, &c));
    if (!strcmp(mode, "tiocsti_high")) /* the kernel truncates the request to 32 bits */
        return report(syscall(SYS_ioctl, slave, 0xdeadbeef00005412UL, &c));
    if (!strcmp(mode, "tioclinux"))
        return report(syscall(SYS_ioctl, slave, 0x541CUL, linux_subcode));
    if (!strcmp(mode, "tcgets")) /* an ordinary terminal ioctl must still work */
        return report(syscall(SYS_ioctl, slave, 0x5401UL, termios_buf));
    if (!strcmp(mode, "tiocgptn_signext")) /* TIOCGPTN as a sign-extended int */
        return report(syscall(SYS_ioctl, master, 0xFFFFFFFF80045430UL, &ptn));
    return 2;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    long arg = argc > 2 ? strtol(argv[2], NULL, 0) : 0;

    if (!strcmp(mode, "ptrace"))
        return report(syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0));
    if (!strcmp(mode, "unshare_user"))
        return report(unshare(CLONE_NEWUSER));
    if (!strcmp(mode, "mount"))
        return report(mount("none", "/nonexistent/cellblock-seccomp-probe", "tmpfs", 0, NULL));
    if (!strcmp(mode, "io_uring")) {
        char params[120] = {0}; /* struct io_uring_params */
        return report(syscall(SYS_io_uring_setup, 1, params));
    }
    if (!strcmp(mode, "clone3")) {
        struct clone_args_v0 args = {.exit_signal = SIGCHLD};
        return report(reap(syscall(SYS_clone3, &args, sizeof args)));
    }
    if (!strcmp(mode, "clone_newns"))
        return report(reap(syscall(SYS_clone, (long)(CLONE_NEWNS | SIGCHLD), 0L, 0L, 0L, 0L)));
    if (!strcmp(mode, "clone_plain")) /* fork() spelled as clone: must work */
        return report(reap(syscall(SYS_clone, (long)SIGCHLD, 0L, 0L, 0L, 0L)));
    if (!strcmp(mode, "fork_threads"))
        return fork_and_threads();
    if (!strcmp(mode, "int80")) { /* i386 getpid (20) through the 32-bit entry */
        long ret;
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
        return report(ret);
    }
    if (!strcmp(mode, "x32")) /* x32 getpid: 39 | __X32_SYSCALL_BIT */
        return report(syscall(0x40000000L | SYS_getpid));
    if (!strcmp(mode, "socket")) { /* socket FAMILY [TYPE]; FAMILY may carry high garbage */
        long type = argc > 3 ? strtol(argv[3], NULL, 0) : SOCK_STREAM;
        return report(syscall(SYS_socket, arg, type, 0L));
    }
    if (!strcmp(mode, "socketpair")) {
        int sv[2];
        return report(syscall(SYS_socketpair, arg, (long)SOCK_STREAM, 0L, sv));
    }
    if (!strncmp(mode, "tio", 3) || !strcmp(mode, "tcgets"))
        return tty_ioctl(mode);
    if (!strcmp(mode, "personality"))
        return report(syscall(SYS_personality, arg));
    if (!strcmp(mode, "keyctl")) /* KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING */
        return report(syscall(SYS_keyctl, 0L, -3L, 0L));
    if (!strcmp(mode, "bpf")) /* an invalid command: EINVAL when not filtered */
        return report(syscall(SYS_bpf, 0x7fffL, NULL, 0L));
    if (!strcmp(mode, "userfaultfd"))
        return report(syscall(SYS_userfaultfd, (long)O_CLOEXEC));
    if (!strcmp(mode, "syscall")) /* syscall NR [A0 A1 A2]: anything else by number */
        return report(syscall(arg, argc > 3 ? strtol(argv[3], NULL, 0) : 0L,
                              argc > 4 ? strtol(argv[4], NULL, 0) : 0L,
                              argc > 5 ? strtol(argv[5], NULL, 0) : 0L));
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
