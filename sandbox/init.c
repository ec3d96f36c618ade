/*
 * cellblock-init: the cell's PID 1, an executable of its own.
 *
 * The caller (sandbox/making.py) starts it with posix_spawn, so nothing of
 * the caller's memory is copied, faulted or carried into the cell: no page
 * tables of a large Python process to copy (a clone of the caller cost ~3 ms
 * of a cold cell, bench/README.md), and no copy of the caller's secrets in a
 * process that lives beside the program. Descriptors: 3 is the cell's end of
 * the channel (sandbox/channel.py), 4 a memfd holding the cell's Birth
 * (sandbox/wire.py), 5 its set-up socket (for the id maps). Its command
 * line is its name alone: the cell's processes may read it.
 *
 * In order:
 *   1. the outer process (the one spawned) unshares the user, mount, PID,
 *      network, IPC and UTS namespaces and says "unshared"; the caller writes
 *      the id maps from outside, as only it may (sandbox/userns.py), and says
 *      "mapped";
 *   2. it opens the image's layers with its own host rights (the layer store
 *      is its owner's alone), becomes the cell's root and forks the init:
 *      PID 1 of the new PID namespace. The outer process waits for it and
 *      exits with its status, or kills it when the caller's process has
 *      ended (a pidfd: a caller's thread may end before the cell it made);
 *      if the outer process dies, so does the init (PR_SET_PDEATHSIG);
 *   3. the init builds the cell before any run is known (a warm cell waits
 *      here): cb_hold in the mount namespace it was born with, which stays
 *      as it is (a recycled cell's next root is built from it too), then
 *      cb_build_root in a copy of it, the host name, the loopback interface;
 *   4. for each launch (the run: a memfd holding the record, and its
 *      descriptors): the program's process (sandbox/spawn.c) first, so it
 *      joins the run's cgroup while the init copies files in; read-only
 *      binds; go; "started"; supervision until the program has exited, then
 *      every process of the cell killed and reaped; files copied out;
 *      "exited" with the figures;
 *   5. a recycled cell's init then renews every namespace but the user and
 *      PID ones (renew) and says "ready"; any other exits.
 *
 * It cannot be killed from inside: a PID namespace's init ignores signals
 * from its own namespace for which it has no handler, and it has none
 * (SIGCHLD is blocked and read from a signalfd). It is not dumpable, and the
 * cell's /proc (hidepid) does not show it.
 *
 * Any failure is reported as an "error" message (the run's IE) and ends the
 * init, and with it every process of its PID namespace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

#include "init.h"
#include "spawn.h"

#define CHANNEL 3
#define BIRTH 4
#define SETUP 5
#define HOSTNAME "cellblock"
#define NAMESPACES \
    (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
#define FDS_PER_MESSAGE 250 /* sandbox/channel.py's _FDS_PER_MESSAGE */

/* Names of enum cb_stage (spawn.h), for the run's error message. */
static const char *const stage_names[] = {
    "", "signals", "setsid", "file descriptors", "bounding set", "joining the cgroup",
    "checking the root", "rlimits", "cgroup namespace", "ids", "capabilities",
    "no_new_privs", "seccomp", "execve", "landlock",
};

static void die(const char *who) __attribute__((noreturn));
static void die(const char *who)
{
    struct cb_message m;
    char text[1100];
    snprintf(text, sizeof text, "%s: %s", who, cb_error);
    msg_begin(&m, "error");
    msg_string(&m, "message", text);
    msg_send(CHANNEL, &m);
    _exit(1);
}

void cb_die(void)
{
    die("init");
}

static double monotonic(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int send_simple(const char *kind)
{
    struct cb_message m;
    msg_begin(&m, kind);
    return msg_send(CHANNEL, &m);
}

/* One datagram from the host into `buffer`, with up to `max_fds` descriptors.
 * Returns its length (0: EOF), or -1. */
static ssize_t receive(char *buffer, size_t size, int *fds, int max_fds, int *nfds)
{
    char control[CMSG_SPACE(sizeof(int) * FDS_PER_MESSAGE)];
    struct iovec iov = {buffer, size};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t n;
    *nfds = 0;
    do
        n = recvmsg(CHANNEL, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && (errno == EINTR || errno == ECONNRESET));
    if (n < 0)
        return cb_fail_errno(errno, "receiving from the host");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *in = (int *)CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            if (*nfds < max_fds)
                fds[(*nfds)++] = in[i];
            else
                close(in[i]);
        }
    }
    return n;
}

static int is_kill(const char *message, ssize_t length)
{
    return length > 0 && message[0] == 'J' && memmem(message, length, "\"kind\": \"kill\"", 14);
}

/* The next launch and its descriptors (*fds, malloc'd). 0 on EOF (the host
 * has gone: a warm cell nobody used), 1 with a launch, -1 on failure. A kill
 * request still queued is skipped: it was sent for a run that had already
 * ended (a recycled cell's last run), never for one not launched. */
static int receive_launch(struct cb_launch *launch, int **fds)
{
    char kind[256];
    int got[FDS_PER_MESSAGE], n;
    ssize_t length;
    do {
        length = receive(kind, sizeof kind, got, FDS_PER_MESSAGE, &n);
        if (length <= 0)
            return (int)length;
        if (kind[0] == 'J')
            for (int i = 0; i < n; i++)
                close(got[i]);
    } while (kind[0] == 'J');
    if (kind[0] != 'P' || n < 1) {
        for (int i = 0; i < n; i++)
            close(got[i]);
        return cb_fail("expected a launch, got %c", kind[0]);
    }
    int read = cb_read_launch(got[0], launch);
    close(got[0]);
    if (read < 0)
        return -1;
    *fds = calloc(launch->fd_count + 1, sizeof **fds);
    int have = n - 1;
    memcpy(*fds, got + 1, have * sizeof(int));
    while (have < launch->fd_count) {
        length = receive(kind, sizeof kind, got, FDS_PER_MESSAGE, &n);
        if (length <= 0 || kind[0] != 'F' || have + n > launch->fd_count)
            return length < 0 ? -1 : cb_fail("expected more descriptors");
        memcpy(*fds + have, got, n * sizeof(int));
        have += n;
    }
    if (have != launch->fd_count)
        return cb_fail("a launch with %d descriptors, %d expected", have, launch->fd_count);
    return 1;
}

static int loopback_up(void)
{
    struct ifreq request = {0};
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return cb_fail_errno(errno, "bringing up the loopback interface");
    strcpy(request.ifr_name, "lo");
    int ok = ioctl(sock, SIOCGIFFLAGS, &request);
    if (ok == 0) {
        request.ifr_flags |= IFF_UP;
        ok = ioctl(sock, SIOCSIFFLAGS, &request);
    }
    int saved = errno;
    close(sock);
    return ok < 0 ? cb_fail_errno(saved, "bringing up the loopback interface") : 0;
}

/* What this run's reaped processes used (wait4's figures): the fallback
 * figures when there is no cgroup. Per run, not RUSAGE_CHILDREN, which a
 * recycled cell's init sums over all runs. */
struct usage {
    double cpu_time;
    long max_rss;
};

static void add_usage(struct usage *u, const struct rusage *r)
{
    u->cpu_time += r->ru_utime.tv_sec + r->ru_utime.tv_usec / 1e6 + r->ru_stime.tv_sec
                   + r->ru_stime.tv_usec / 1e6;
    if (r->ru_maxrss * 1024 > u->max_rss)
        u->max_rss = r->ru_maxrss * 1024;
}

/* Reap whatever has exited; 1 once the program has (its status in *status). */
static int reap(pid_t program, int *status, struct usage *u, int block)
{
    int found = 0, st;
    struct rusage r;
    pid_t pid;
    while ((pid = wait4(-1, &st, block ? 0 : WNOHANG, &r)) > 0) {
        add_usage(u, &r);
        if (pid == program) {
            *status = st;
            found = 1;
        }
    }
    return found;
}

static void kill_all(void)
{
    kill(-1, SIGKILL); /* every process of the PID namespace but ours */
}

/* Whether a request waits on the seccomp listener (epoll also reports its
 * hang-up, when no process could ask any more, as readable). */
static int pending(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) > 0 && p.revents & POLLIN;
}

struct program_exit {
    int wait_status, killed, locks_on;
    double start, end;
    struct usage usage;
    struct cb_locks locks;
};

/* Wait for the program, reaping orphans meanwhile; start the lock supervisor
 * at its first request (most programs never make one); a kill request or the
 * host's EOF ends the cell early. Then end every process. */
static int supervise(const struct cb_birth *b, pid_t program, int listener, int sigchld,
                     struct program_exit *e)
{
    struct epoll_event events[4], add = {.events = EPOLLIN};
    int poll_fd = epoll_create1(EPOLL_CLOEXEC), pidfd = syscall(SYS_pidfd_open, program, 0);
    int done = 0, channel_open = 1;
    if (poll_fd < 0 || pidfd < 0)
        return cb_fail_errno(errno, "supervising the program");
    int watched[] = {CHANNEL, pidfd, sigchld, listener};
    for (int i = 0; i < 4; i++) {
        if (watched[i] < 0)
            continue;
        add.data.fd = watched[i];
        if (epoll_ctl(poll_fd, EPOLL_CTL_ADD, watched[i], &add) < 0)
            return cb_fail_errno(errno, "supervising the program");
    }
    while (!done) {
        int n = epoll_wait(poll_fd, events, 4, -1);
        if (n < 0 && errno != EINTR)
            return cb_fail_errno(errno, "supervising the program");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == CHANNEL && channel_open) {
                char message[256];
                int fds[FDS_PER_MESSAGE], nfds;
                ssize_t length = receive(message, sizeof message, fds, FDS_PER_MESSAGE, &nfds);
                for (int k = 0; k < nfds; k++)
                    close(fds[k]);
                if (length <= 0) { /* the host is gone: end the cell */
                    epoll_ctl(poll_fd, EPOLL_CTL_DEL, CHANNEL, NULL);
                    channel_open = 0;
                }
                if ((length <= 0 || is_kill(message, length)) && !e->killed) {
                    kill_all();
                    e->killed = 1;
                }
            } else if (fd == sigchld) {
                struct signalfd_siginfo info;
                while (read(sigchld, &info, sizeof info) > 0)
                    ;
            } else if (fd == listener) {
                epoll_ctl(poll_fd, EPOLL_CTL_DEL, listener, NULL);
                if (pending(listener)) {
                    e->locks = (struct cb_locks){.listener = listener, .cap = b->lock_cap,
                                                 .deny_run = b->deny_run, .proc_locks = "/proc/locks"};
                    int error = cb_locks_start(&e->locks);
                    if (error < 0)
                        return cb_fail_errno(-error, "the lock supervisor");
                    e->locks_on = 1;
                }
            }
        }
        done = reap(program, &e->wait_status, &e->usage, 0);
    }
    kill_all();
    reap(program, &e->wait_status, &e->usage, 1);
    e->end = monotonic();
    if (e->locks_on)
        cb_locks_stop(&e->locks);
    close(pidfd);
    close(poll_fd);
    return 0;
}

/* The listener the program's process sent before its execve (-1: none), or
 * why there is none in *why. */
static int take_listener(int sock, const struct cb_spawn *a, const char **why)
{
    char byte, control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    static char reason[160];
    *why = NULL;
    if (a->listener_error) {
        snprintf(reason, sizeof reason, "the program's process could not hand it over: %s",
                 strerror(a->listener_error));
        *why = reason;
        return -1;
    }
    if (recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
        return -1; /* it gave up before its filter (err_stage says where) */
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_type == SCM_RIGHTS)
        return *(int *)CMSG_DATA(c);
    *why = "it was not handed over";
    return -1;
}

/* mkdir -p for the program's working directory (an image's WorkingDir need
 * not exist in it: container engines make it). */
static int make_cwd(const char *cwd)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", cwd);
    for (char *slash = path + 1; (slash = strchr(slash, '/')); slash++) {
        *slash = 0;
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return cb_fail_errno(errno, "mkdir %s", path);
        *slash = '/';
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return cb_fail_errno(errno, "mkdir %s", path);
    return 0;
}

/* One run in the cell as it is: the program, its supervision, copy-out.
 * Sends "started", then "file"s, then "exited". *untouched: whether the run
 * left the network namespace as it found it: the filter sends us every call
 * that makes a socket (the launch says so: seccomp.supervises_sockets), we
 * answered each of them (the listener reached us), and there was none.
 * Without a socket a process can neither send a packet nor leave anything in
 * the namespace (its /proc/sys is read-only, mounts.c's proc_covered;
 * io_uring is refused by the profile). */
static int run(const struct cb_birth *b, const struct cb_launch *l, int *fds, int sigchld, char **bound, int nbound,
               int *untouched)
{
    int *stdio = fds, *cgroup_fds = fds + 3, cgroup_dir = l->cgroup_dir ? fds[3 + l->cgroup_fds] : -1;
    int *copy_in = fds + 3 + l->cgroup_fds + (l->cgroup_dir ? 1 : 0);
    int nlimits = l->rlimits.count, nrules = l->landlock_rules.count;
    char **argv = calloc(l->argv.count + 1, sizeof *argv), **envp = calloc(l->env.count + 1, sizeof *envp);
    struct cb_rlimit *limits = calloc(nlimits + 1, sizeof *limits);
    struct cb_landlock_rule *rules = calloc(nrules + 1, sizeof *rules);
    if (!argv || !envp || !limits || !rules)
        return cb_fail_errno(ENOMEM, "run");
    const char *path = NULL;
    for (int i = 0; i < l->argv.count; i++)
        argv[i] = l->argv.items[i].name;
    for (int i = 0; i < l->env.count; i++) {
        envp[i] = l->env.items[i].name;
        if (strncmp(envp[i], "PATH=", 5) == 0)
            path = envp[i] + 5;
    }
    for (int i = 0; i < nlimits; i++)
        limits[i] = (struct cb_rlimit){(int)l->rlimits.items[i].value, l->rlimits.items[i].soft,
                                       l->rlimits.items[i].hard};
    for (int i = 0; i < nrules; i++)
        rules[i] = (struct cb_landlock_rule){l->landlock_rules.items[i].name,
                                             l->landlock_rules.items[i].value};
    int pair[2] = {-1, -1};
    if (l->notify && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
        return cb_fail_errno(errno, "socketpair");
    struct cb_spawn a = {
        .file = argv[0], .argv = argv, .envp = envp, .path = path, .cwd = l->cwd,
        .fds = stdio, .nfds = 3, .join_fds = cgroup_fds, .njoin = l->cgroup_fds,
        .cgroup_dirfd = cgroup_dir, .last_cap = l->last_cap, .securebits = l->securebits,
        .rlimits = limits, .nrlimits = nlimits, .uid = l->run_uid, .gid = l->run_gid,
        .clear_groups = l->clear_groups,
        .bpf_len = l->bpf_size / 8, .bpf = l->bpf,
        .unsupervised_len = l->bpf_unsupervised_size / 8, .unsupervised = l->bpf_unsupervised,
        .landlock_attr = l->landlock_attr, .landlock_attr_size = l->landlock_attr_size,
        .landlock_rules = rules, .nlandlock_rules = nrules,
        .notify = l->notify, .listener_sock = pair[1],
    };
    /* The program's process, made first: it gets into the run's cgroup while
     * we copy files in. Our copies of its fds go at once. */
    int pid = cb_start(&a);
    if (pair[1] >= 0)
        close(pair[1]);
    if (pid < 0)
        return cb_fail_errno(-pid, "clone");
    for (int i = 0; i < 3 + l->cgroup_fds + (l->cgroup_dir ? 1 : 0); i++)
        close(fds[i]);

    if (strcmp(l->cwd, "/box") != 0 && make_cwd(l->cwd) < 0)
        return -1;
    int box = open("/box", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (box < 0)
        return cb_fail_errno(errno, "open /box");
    if (cb_copy_into_box(box, l, copy_in) < 0)
        return -1;
    for (int i = 0; i < l->copy_in.count; i++)
        close(copy_in[i]);
    for (int i = 0; i < l->readonly.count; i++)
        if (cb_bind_read_only(box, l->readonly.items[i].name) < 0)
            return -1;

    struct stat root;
    if (stat("/", &root) < 0)
        return cb_fail_errno(errno, "stat /");
    a.root_dev = root.st_dev;
    a.root_ino = root.st_ino;
    int error = cb_go(&a);
    if (error < 0)
        return cb_fail_errno(-error, "waiting for the program to start");
    /* The program's clock starts at its execve (cb_go returns then), not
     * before: on cgroup v1 the child may still be waiting to be moved into
     * the run's cgroup (sandbox/cgroups/dynmods.py), which is not its time. */
    struct program_exit e = {.start = monotonic()};
    const char *listener_error = NULL;
    int listener = pair[0] >= 0 ? take_listener(pair[0], &a, &listener_error) : -1;
    if (pair[0] >= 0)
        close(pair[0]);
    if (a.err_stage != CB_OK && listener >= 0) {
        close(listener);
        listener = -1;
    }
    struct cb_message m;
    msg_begin(&m, "started");
    msg_double(&m, "start", e.start);
    msg_int(&m, "pid", pid);
    if (msg_send(CHANNEL, &m) < 0)
        return -1;
    int supervised = supervise(b, pid, listener, sigchld, &e);
    if (listener >= 0)
        close(listener);
    if (supervised < 0 || cb_send_box_files(box, CHANNEL, l) < 0)
        return -1;
    close(box);

    msg_begin(&m, "exited");
    msg_int(&m, "wait_status", e.wait_status);
    msg_double(&m, "start", e.start);
    msg_double(&m, "end", e.end);
    msg_double(&m, "cpu_time", e.usage.cpu_time);
    msg_int(&m, "max_rss", e.usage.max_rss);
    if (nbound)
        msg_strings(&m, "bound_host_dirs", bound, nbound);
    if (e.locks_on && e.locks.refused)
        msg_int(&m, "locks_refused", e.locks.refused);
    if (listener_error)
        msg_string(&m, "locks_unsupervised", listener_error);
    if (a.err_stage != CB_OK) {
        char text[600];
        const char *reason = strerror(a.err_errno);
        if (a.err_stage == CB_EXEC) {
            snprintf(text, sizeof text, "cannot execute '%s': %s", argv[0], reason);
            msg_string(&m, "exec_error", text);
        } else {
            int known = a.err_stage < (int)(sizeof stage_names / sizeof *stage_names);
            snprintf(text, sizeof text, "program set-up: %s: %s",
                     known ? stage_names[a.err_stage] : "?", reason);
            msg_string(&m, "internal_error", text);
        }
    }
    *untouched = l->sockets_noted && listener >= 0 && a.err_stage == CB_OK
                 && !(e.locks_on && e.locks.sockets);
    free(argv);
    free(envp);
    free(limits);
    free(rules);
    return msg_send(CHANNEL, &m);
}

/* After a run, for the next one (a recycled cell): every process of the run
 * is gone (supervise ended them all); the mount, IPC and UTS namespaces are
 * made anew and the root is built again (fresh tmpfs, fresh /box, /tmp and
 * /dev/shm: nothing the run wrote is left), and the PID counter starts again
 * at 1. The network namespace is made anew too, unless the run made no
 * socket (run says when): then nothing in it changed, and keeping it saves
 * its making and its teardown (about 1.5 ms of the machine's time a run:
 * bench/README.md). What the next run shares with this one is the user
 * namespace (its ids; its per-user counts are back to zero with the
 * processes gone), the PID namespace (empty, its counter reset) and its
 * procfs, the root's read-only parts (cb_hold), and at most a network
 * namespace no program touched: nothing a program could write to. */
static int renew(const struct cb_birth *b, int pristine, int last_pid, int new_network,
                 char ***bound, int *nbound)
{
    if (setns(pristine, CLONE_NEWNS) < 0)
        return cb_fail_errno(errno, "setns");
    if (unshare(CLONE_NEWNS | (new_network ? CLONE_NEWNET : 0) | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        return cb_fail_errno(errno, "unshare");
    free(*bound);
    if (cb_build_root(b, last_pid, bound, nbound) < 0)
        return -1;
    if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0)
        return cb_fail_errno(errno, "sethostname");
    return new_network ? loopback_up() : 0;
}

/* The init's life, from the moment its ids are mapped. */
static void live(const struct cb_birth *b, const int *layers, int alive)
{
    char **bound = NULL;
    int nbound = 0;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct pollfd outer = {alive, POLLIN, 0};
    if (poll(&outer, 1, 0) > 0) /* EOF: the outer process already died */
        _exit(1);
    close(alive);
    prctl(PR_SET_DUMPABLE, 0);
    sigset_t child;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child, NULL);
    int sigchld = signalfd(-1, &child, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigchld < 0)
        cb_fail_errno(errno, "signalfd"), die("init");

    /* The cell, before any run is known (a warm cell waits here). */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        cb_fail_errno(errno, "mount /"), die("init");
    int last_pid = cb_hold(b, layers);
    if (last_pid < 0)
        die("init");
    int pristine = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (pristine < 0 || unshare(CLONE_NEWNS) < 0)
        cb_fail_errno(errno, "unshare"), die("init");
    if (cb_build_root(b, last_pid, &bound, &nbound) < 0)
        die("init");
    if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0)
        cb_fail_errno(errno, "sethostname"), die("init");
    if (loopback_up() < 0)
        die("init");
    for (;;) {
        struct cb_launch launch;
        int *fds = NULL, untouched = 0;
        int got = receive_launch(&launch, &fds);
        if (got == 0) /* a warm cell nobody used: the caller has gone */
            _exit(0);
        if (got < 0 || run(b, &launch, fds, sigchld, bound, nbound, &untouched) < 0)
            die("init");
        int recycle = launch.recycle;
        free(fds);
        cb_free_launch(&launch);
        if (!recycle)
            _exit(0);
        /* The run's mount namespace is let go only once the next run may come:
         * its teardown waits for an RCU grace period that the next run need
         * not wait for. */
        int left = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
        if (renew(b, pristine, last_pid, !untouched, &bound, &nbound) < 0 || send_simple("ready") < 0)
            die("init");
        close(left);
    }
}

int main(void)
{
    struct cb_birth birth;
    char mapped[16];

    /* We end with our caller: the process, not the thread that spawned us
     * (PR_SET_PDEATHSIG follows the thread, and a caller's thread may end
     * while the warm cell it made waits). A pidfd of our parent, checked to
     * be it still; a caller that died before took its end of the set-up
     * socket along: we read EOF there below and exit. */
    pid_t caller = getppid();
    int opened = syscall(SYS_pidfd_open, caller, 0);
    /* Above our three (0-2 may be closed: the lowest free fd could be one). */
    int caller_fd = opened < 0 ? -1 : fcntl(opened, F_DUPFD_CLOEXEC, SETUP + 1);
    if (caller_fd < 0 || getppid() != caller)
        _exit(1);
    close(opened);
    /* Nothing of the caller's signal state: an ignored signal stays ignored
     * across execve (Python ignores SIGPIPE; a caller that ignored SIGCHLD
     * would leave the init no child to wait for), and so does the mask. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL); /* the C library's own two refuse: harmless */
    /* SIGTERM alone is ours: the caller's way to end a cell whose init we then
     * kill and reap (so its figures, and its programs', reach the caller). */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_SETMASK, &term, NULL);
    /* Nor its umask: the cell's directories get the modes named here (a
     * service's 077 would make the cell's root 0700, closed to the program),
     * and the program starts with the usual 022. */
    umask(022);
    /* Nor its working directory: a warm cell would hold a host directory busy. */
    if (chdir("/") < 0)
        _exit(1);
    for (int fd = SETUP + 1; fd < caller_fd; fd++)
        close(fd);
    syscall(SYS_close_range, caller_fd + 1, ~0U, 0);
    if (cb_read_birth(BIRTH, &birth) < 0)
        die("outer");
    close(BIRTH);
    if (unshare(NAMESPACES) < 0)
        cb_fail_errno(errno, "unshare"), die("outer");
    if (write(SETUP, "unshared", 8) < 0)
        cb_fail_errno(errno, "set-up socket"), die("outer");
    ssize_t length;
    do
        length = read(SETUP, mapped, sizeof mapped);
    while (length < 0 && errno == EINTR);
    if (length != 6 || memcmp(mapped, "mapped", 6) != 0) /* the caller gave up */
        _exit(1);
    close(SETUP);
    /* With our own rights, still: the layer store is its owner's alone. */
    int *layers = calloc(birth.layers.count + 1, sizeof *layers);
    for (int i = 0; i < birth.layers.count; i++)
        if ((layers[i] = open(birth.layers.items[i].name, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
            cb_fail_errno(errno, "open %s", birth.layers.items[i].name), die("outer");
    /* Take cell uid and gid 0 (started as root, our host ids are not in the
     * map; the capabilities of the namespace stay with us). */
    if ((!birth.deny_setgroups && setgroups(0, NULL) < 0) || setresgid(0, 0, 0) < 0
        || setresuid(0, 0, 0) < 0)
        cb_fail_errno(errno, "becoming the cell's root"), die("outer");
    /* The init must not outlive us; this pipe tells it whether we are still here. */
    int alive[2];
    if (pipe2(alive, O_CLOEXEC) < 0)
        cb_fail_errno(errno, "pipe"), die("outer");
    pid_t init = fork();
    if (init < 0)
        cb_fail_errno(errno, "fork"), die("outer");
    if (init == 0) {
        close(alive[1]);
        close(caller_fd);
        live(&birth, layers, alive[0]);
    }
    close(alive[0]);
    close(CHANNEL);
    for (int i = 0; i < birth.layers.count; i++)
        close(layers[i]);
    /* Until the init ends, or the caller does, or says so (SIGTERM): then the
     * cell ends, its init reaped here. */
    struct pollfd watch[3] = {
        {caller_fd, POLLIN, 0},
        {signalfd(-1, &term, SFD_CLOEXEC), POLLIN, 0},
        {syscall(SYS_pidfd_open, init, 0), POLLIN, 0},
    };
    while (watch[2].fd >= 0 && poll(watch, 3, -1) < 0 && errno == EINTR)
        ;
    if (watch[0].revents & POLLIN || watch[1].revents & POLLIN)
        kill(init, SIGKILL);
    int status;
    while (waitpid(init, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
