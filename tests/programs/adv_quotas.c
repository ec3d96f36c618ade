/* Attack 18, per-user kernel quotas: take every queued signal, POSIX timer,
 * inotify instance and watch and pipe buffer page the kernel lets this process
 * have, then wait. While it waits, the host checks that the worker's own uid
 * can still use each of them (`adv_quotas check`).
 *   adv_quotas hog     prints what it took, names itself "quota-hog", waits
 *   adv_quotas check   one line per quota: "NAME ok" or "NAME errno=N" (pipe: its size)
 * Those quotas are counted per user: without a share of its own for the cell,
 * the worker (or every other cell of its user) gets EAGAIN and EMFILE. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FILES 1600

static int queue_signal(void) {
    union sigval value = {0};
    return sigqueue(getpid(), SIGRTMIN, value);
}

static int new_timer(void) {
    timer_t timer;
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_NONE;
    return (int)syscall(SYS_timer_create, CLOCK_MONOTONIC, &event, &timer);
}

static int hog(void) {
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &rt, NULL);
    long timers = 0, signals = 0, instances = 0, watches = 0, pipes = 0;
    while (new_timer() == 0)
        timers++;
    while (queue_signal() == 0)
        signals++;
    /* Watches: every instance watches the same files (one watch each). */
    char name[32];
    for (int i = 0; i < FILES; i++) {
        snprintf(name, sizeof name, "w%d", i);
        close(open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    }
    int fd;
    while ((fd = inotify_init1(IN_CLOEXEC)) >= 0) {
        instances++;
        for (int i = 0; i < FILES; i++) {
            snprintf(name, sizeof name, "w%d", i);
            if (inotify_add_watch(fd, name, IN_OPEN) < 0)
                break;
            watches++;
        }
    }
    /* Pipes, as large as the kernel lets us make them, until no fd is left. */
    int ends[2];
    while (pipe2(ends, O_CLOEXEC) == 0) {
        pipes++;
        fcntl(ends[1], F_SETPIPE_SZ, 1 << 20);
    }
    printf("took timers=%ld signals=%ld inotify=%ld watches=%ld pipes=%ld\n", timers, signals,
           instances, watches, pipes);
    fflush(stdout);
    prctl(PR_SET_NAME, "quota-hog");
    sleep(60);
    return 0;
}

static void report(const char *what, int ret) {
    if (ret < 0)
        printf("%s errno=%d\n", what, errno);
    else
        printf("%s ok\n", what);
}

static int check(void) {
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &rt, NULL);
    report("sigqueue", queue_signal());
    report("timer_create", new_timer());
    int fd = inotify_init1(IN_CLOEXEC);
    report("inotify_init1", fd);
    if (fd >= 0)
        report("inotify_add_watch", inotify_add_watch(fd, "/", IN_OPEN));
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) < 0)
        report("pipe", -1);
    else
        printf("pipe size=%d\n", fcntl(ends[1], F_GETPIPE_SZ));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "hog") == 0)
        return hog();
    if (argc == 2 && strcmp(argv[1], "check") == 0)
        return check();
    return 2;
}
