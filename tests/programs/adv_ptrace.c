/* Attack 5, looking into other processes.
 *   adv_ptrace traceme        ptrace(PTRACE_TRACEME)
 *   adv_ptrace attach PID     ptrace(PTRACE_ATTACH, PID), then detach
 *   adv_ptrace proc PID       open /proc/PID/mem, read /proc/PID/environ, readlink /proc/PID/root
 * Prints "ESCAPED ..." for what worked and "blocked errno=N" for what did not.
 * A seccomp kill shows up as death by SIGSYS instead of output. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

static void proc_probe(const char *pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%s/mem", pid);
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        printf("mem: ESCAPED opened\n");
        close(fd);
    } else {
        printf("mem: blocked errno=%d\n", errno);
    }
    snprintf(path, sizeof path, "/proc/%s/environ", pid);
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("environ: blocked errno=%d\n", errno);
    } else {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0)
            printf("environ: blocked errno=%d (read)\n", errno);
        else
            printf("environ: ESCAPED read %zd bytes\n", n);
        close(fd);
    }
    snprintf(path, sizeof path, "/proc/%s/root", pid);
    ssize_t len = readlink(path, buf, sizeof buf - 1);
    if (len < 0) {
        printf("root: blocked errno=%d\n", errno);
    } else {
        buf[len] = 0;
        printf("root: ESCAPED -> %s\n", buf);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return 2;
    if (!strcmp(argv[1], "traceme")) {
        long ret = ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        if (ret == 0)
            printf("ESCAPED traceme\n");
        else
            printf("blocked errno=%d\n", errno);
        return 0;
    }
    if (argc < 3)
        return 2;
    if (!strcmp(argv[1], "attach")) {
        pid_t pid = (pid_t)atoi(argv[2]);
        if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) != 0) {
            printf("blocked errno=%d\n", errno);
            return 0;
        }
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
        printf("ESCAPED attached to %d\n", pid);
        return 0;
    }
    if (!strcmp(argv[1], "proc")) {
        proc_probe(argv[2]);
        return 0;
    }
    return 2;
}
