/*
 * The init's answer to the program's byte-range lock requests: a thread of
 * the init (sandbox/init.c) reading the seccomp listener (sandbox/locks.py
 * says why and decides the numbers; this file only applies them).
 *
 * Each request the filter sends here (fcntl F_SETLK, F_SETLKW, F_OFD_SETLK,
 * F_OFD_SETLKW) is let through (SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel
 * then does exactly what it would have done) while the cell may hold fewer
 * than `cap` locks, and answered ENOLCK beyond. Every request is counted as up
 * to two new locks (an unlock in the middle of a lock splits it in two); when
 * that estimate reaches the cap, the real locks are counted: the lines of the
 * cell's /proc/locks. At the cap, `deny_run` requests are refused before the
 * next count, so a program that hammers the cap costs this thread less than it
 * costs the program.
 *
 * The filter also sends socket and socketpair here (the family already
 * checked): those are let through as they are, and counted. A run that made
 * no socket left its network namespace as it found it, and a recycled cell
 * keeps it for the next run (sandbox/init.c, renew).
 *
 * A thread of its own because every request waits for its answer (SQLite
 * takes and drops a few locks per transaction), while the init's own loop
 * waits for the program's end; it runs with every signal blocked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spawn.h"

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS _IOW('!', 4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif


/* Locks in the cell's /proc/locks: its lines, but for requests waiting ("->"). */
static long count_locks(const char *path)
{
    char buf[65536];
    long lines = 0;
    int waiting = 0, at_start = 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1L << 30; /* cannot count: assume the worst */
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (at_start)
                waiting = 0;
            at_start = buf[i] == '\n';
            if (buf[i] == '>' && i > 0 && buf[i - 1] == '-')
                waiting = 1;
            if (buf[i] == '\n' && !waiting)
                lines++;
        }
    }
    close(fd);
    return lines;
}

static int allowed(struct cb_locks *s)
{
    if (s->known + 2 * (s->since + 1) <= s->cap)
        return 1;
    if (s->denying > 0) {
        s->denying--;
        return 0;
    }
    s->known = count_locks(s->proc_locks);
    s->since = 0;
    s->counts++;
    if (s->known + 2 <= s->cap)
        return 1;
    s->denying = s->deny_run;
    return 0;
}

static void answer_one(struct cb_locks *s)
{
    struct seccomp_notif request;
    struct seccomp_notif_resp reply;

    memset(&request, 0, sizeof request);
    /* ENOENT: the caller was killed, or interrupted, before we read it. */
    if (ioctl(s->listener, SECCOMP_IOCTL_NOTIF_RECV, &request) < 0)
        return;
    memset(&reply, 0, sizeof reply);
    reply.id = request.id;
    if (request.data.nr != SYS_fcntl) { /* socket, socketpair (the filter sends no other) */
        s->sockets++;
        reply.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    } else if (allowed(s)) {
        s->since++;
        s->allowed++;
        reply.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    } else {
        s->refused++;
        reply.error = -ENOLCK;
    }
    ioctl(s->listener, SECCOMP_IOCTL_NOTIF_SEND, &reply); /* ENOENT: gone meanwhile */
}

static void *serve(void *arg)
{
    struct cb_locks *s = arg;
    struct pollfd fds[2] = {{s->listener, POLLIN, 0}, {s->stop_r, POLLIN, 0}};

    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents)
            break;
        /* Only what poll says is pending is read: the read waits otherwise. */
        if (fds[0].revents & POLLIN)
            answer_one(s);
        else if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            break; /* no process of the cell can ask any more */
    }
    return NULL;
}

/* Start answering; 0, or -errno. */
int cb_locks_start(struct cb_locks *s)
{
    int pipefd[2], err;
    sigset_t all, old;

    s->allowed = s->refused = s->counts = s->sockets = 0;
    s->known = s->since = s->denying = 0;
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;
    s->stop_r = pipefd[0];
    s->stop_w = pipefd[1];
    /* Linux 6.6+: the program and this thread take turns on one CPU instead of
     * waking each other across CPUs (faster); older kernels refuse it. */
    __u64 flags = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
    ioctl(s->listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&s->thread, NULL, serve, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -err;
    }
    return 0;
}

/* Stop answering (the program's processes are dead or dying) and wait. */
void cb_locks_stop(struct cb_locks *s)
{
    char byte = 1;
    while (write(s->stop_w, &byte, 1) < 0 && errno == EINTR)
        ;
    pthread_join(s->thread, NULL);
    close(s->stop_r);
    close(s->stop_w);
}

