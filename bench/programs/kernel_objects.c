/* kernel_objects KIND N: make N kernel objects of one kind (in the working
 * directory where it needs files), print "made N" (or the errno that stopped
 * it first), then hold them for 4 seconds. bench/kernel_memory.py runs it in a
 * memory cgroup of its own and compares what the cgroup was charged with how
 * much the kernel's slabs grew. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
int main(int argc, char **argv) {
    const char *mode = argv[1];
    long n = atol(argv[2]), made = 0;
    static char buf[8192];
    if (!strcmp(mode, "locks")) {
        int per = 200;
        for (long f = 0; made < n; f++) {
            char name[64]; snprintf(name, sizeof name, "lk%ld", f);
            int fd = open(name, O_RDWR | O_CREAT, 0600); if (fd < 0) break;
            unlink(name);
            for (int i = 0; i < per && made < n; i++, made++) {
                struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2 * i, .l_len = 1};
                if (fcntl(fd, F_SETLK, &fl) < 0) { printf("err %d ", errno); goto done; }
            }
        }
    } else if (!strcmp(mode, "msg")) {
        for (;;) {
            int q = msgget(IPC_PRIVATE, 0600 | IPC_CREAT); if (q < 0) { printf("msgget %d ", errno); break; }
            struct { long t; char d[4096]; } m = {1};
            int k; for (k = 0; k < 4 && made < n; k++, made++) if (msgsnd(q, &m, sizeof m.d, IPC_NOWAIT) < 0) break;
            if (made >= n) break;
        }
    } else if (!strcmp(mode, "sem")) {
        for (; made < n; made += 250) if (semget(IPC_PRIVATE, 250, 0600 | IPC_CREAT) < 0) { printf("semget %d ", errno); break; }
    } else if (!strcmp(mode, "epoll")) {
        int ep = epoll_create1(0), ev = eventfd(0, 0);
        for (; made < n; made++) {
            int d = dup(ev); if (d < 0) { printf("dup %d ", errno); break; }
            struct epoll_event e = {.events = EPOLLIN};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, d, &e) < 0) { printf("epoll %d ", errno); break; }
        }
    } else if (!strcmp(mode, "timers")) {
        for (; made < n; made++) { timer_t t; struct sigevent se = {.sigev_notify = SIGEV_NONE};
            if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &se, &t) < 0) { printf("timer %d ", errno); break; } }
    } else if (!strcmp(mode, "signals")) {
        sigset_t s; sigfillset(&s); sigprocmask(SIG_BLOCK, &s, 0);
        for (; made < n; made++) { union sigval v = {0}; if (sigqueue(getpid(), SIGRTMIN, v) < 0) { printf("sigqueue %d ", errno); break; } }
    } else if (!strcmp(mode, "inotify")) {
        int in = inotify_init1(0);
        for (; made < n; made++) {
            char name[64]; snprintf(name, sizeof name, "in%ld", made);
            close(open(name, O_CREAT | O_WRONLY, 0600));
            if (inotify_add_watch(in, name, IN_ALL_EVENTS) < 0) { printf("watch %d ", errno); break; }
        }
    } else if (!strcmp(mode, "unix")) {
        for (; made < n; made += 1) { int sv[2]; if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) { printf("sp %d ", errno); break; }
            while (write(sv[0], buf, sizeof buf) > 0) {} }
    } else if (!strcmp(mode, "pipes")) {
        for (; made < n; made++) { int p[2]; if (pipe2(p, O_NONBLOCK) < 0) { printf("pipe %d ", errno); break; }
            while (write(p[1], buf, sizeof buf) > 0) {} }
    }
done:
    printf("made %ld\n", made); fflush(stdout);
    sleep(4);
    return 0;
}
