/*
 * The program's last steps before execve, in a vfork-style child of the init.
 *
 * Why C: the init is a Python process. A forked Python child copies the
 * init's page tables and takes copy-on-write faults on the interpreter's
 * memory, and all of it is torn down again at execve. When that child has
 * already joined the run's cgroup (it must, before its first instruction of
 * the user's program), the copy, the faults and the teardown are charged to
 * the cell: milliseconds of CPU and megabytes of memory that the program never
 * used (RESEARCH.md lesson 6). A child made with clone(CLONE_VM|CLONE_VFORK)
 * copies nothing; it runs only the code below, which touches nothing but its
 * own small stack, and the init sleeps until it has called execve or given up.
 *
 * This file holds no policy. The Python modules decide everything (which fds,
 * which rlimits, which ids, which seccomp program, which cgroup) and pass it in
 * one struct; this code applies it in the only order that works:
 *
 *   signals to default, setsid, fds 0..n-1, rlimits, join the run's cgroup,
 *   a new cgroup namespace, the run ids, no capabilities, no_new_privs,
 *   seccomp, an empty signal mask, execve (searching PATH of the cell's env).
 *
 * Rules for code that runs in a CLONE_VM child: no malloc, no stdio, no glibc
 * wrapper that talks to other threads (the set*id wrappers do: raw syscalls
 * here), and no return from the child function (it ends in execve or _exit).
 * A failure is reported through the shared struct (stage and errno), so the
 * report needs no system call: even a seccomp profile that forbids execve is
 * reported exactly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* Where a failed child gave up; mirrored by sandbox/spawn.py. */
enum cb_stage {
    CB_OK = 0,
    CB_SIGNALS,
    CB_SETSID,
    CB_FDS,
    CB_RLIMITS,
    CB_CGROUP,
    CB_CGROUPNS,
    CB_IDS,
    CB_CAPS,
    CB_NO_NEW_PRIVS,
    CB_SECCOMP,
    CB_EXEC,
};

struct cb_rlimit {
    int resource;
    unsigned long soft, hard;
};

struct cb_spawn {
    /* Inputs. */
    const char *file;          /* argv[0]: a path, or a name searched in `path` */
    char *const *argv;
    char *const *envp;
    const char *path;          /* PATH of the cell's environment, or NULL */
    const int *fds;            /* placed at 0..nfds-1, inherited by the program */
    int nfds;
    const int *join_fds;       /* cgroup.procs of the run's cgroups: "0" is written */
    int njoin;
    const struct cb_rlimit *rlimits;
    int nrlimits;
    unsigned int uid, gid;     /* the run ids, inside the cell */
    int clear_groups;          /* setgroups(0) (not allowed in a size-1 map) */
    unsigned short bpf_len;    /* seccomp program: bpf_len sock_filter entries */
    const struct sock_filter *bpf;
    /* Outputs, written by the child before it gives up (the parent is asleep). */
    int err_stage;
    int err_errno;
};

#define CHILD_STACK_SIZE (64 * 1024)
#define HIGH_FD 256 /* fds are moved above this before being placed at 0..n-1 */

static int fail(struct cb_spawn *a, int stage)
{
    a->err_stage = stage;
    a->err_errno = errno;
    _exit(127);
}

static int place_fds(struct cb_spawn *a, int *join_high)
{
    int high[a->nfds];

    /* First out of the way, then into place: a source may sit at 0..n-1. */
    for (int i = 0; i < a->nfds; i++)
        if ((high[i] = fcntl(a->fds[i], F_DUPFD_CLOEXEC, HIGH_FD)) < 0)
            return -1;
    for (int i = 0; i < a->njoin; i++)
        if ((join_high[i] = fcntl(a->join_fds[i], F_DUPFD_CLOEXEC, HIGH_FD)) < 0)
            return -1;
    for (int i = 0; i < a->nfds; i++)
        if (dup3(high[i], i, 0) < 0)
            return -1;
    /* Everything else closes at execve (rule 4); the cgroup fds are still needed. */
    return (int)syscall(SYS_close_range, a->nfds, ~0U, CLOSE_RANGE_CLOEXEC);
}

static void exec_searching(struct cb_spawn *a)
{
    char buf[4096];
    int saved = 0;

    if (strchr(a->file, '/') || !a->path) {
        execve(a->file, a->argv, a->envp);
        return;
    }
    size_t flen = strlen(a->file);
    for (const char *dir = a->path;; dir++) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        if (dlen == 0) { /* an empty entry means the working directory */
            dir = ".";
            dlen = 1;
        }
        if (dlen + 1 + flen + 1 <= sizeof(buf)) {
            memcpy(buf, dir, dlen);
            buf[dlen] = '/';
            memcpy(buf + dlen + 1, a->file, flen + 1);
            execve(buf, a->argv, a->envp);
            /* Like execvp: a file that exists but cannot run is the error to
             * report, not the ENOENT of the directories searched after it. */
            if (errno != ENOENT && errno != ENOTDIR && !saved)
                saved = errno;
        }
        if (*end == '\0')
            break;
        dir = end;
    }
    if (saved)
        errno = saved;
}

static int child(void *arg)
{
    struct cb_spawn *a = arg;
    int join_high[a->njoin > 0 ? a->njoin : 1];
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigset_t empty;

    /* All signals are blocked (by the parent) until the mask is emptied below.
     * Handlers are this child's own copy (no CLONE_SIGHAND): reset them all, so
     * no handler of the init can ever run on the init's memory. */
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* fails only for glibc's reserved ones */
    if (setsid() < 0)
        fail(a, CB_SETSID);
    if (place_fds(a, join_high) < 0)
        fail(a, CB_FDS);
    for (int i = 0; i < a->nrlimits; i++) {
        struct rlimit rl = {a->rlimits[i].soft, a->rlimits[i].hard};
        if (setrlimit(a->rlimits[i].resource, &rl) < 0)
            fail(a, CB_RLIMITS);
    }
    /* As late as possible: nothing this process did before is the program's. */
    for (int i = 0; i < a->njoin; i++)
        if (write(join_high[i], "0", 1) != 1)
            fail(a, CB_CGROUP);
    if (syscall(SYS_unshare, CLONE_NEWCGROUP) < 0)
        fail(a, CB_CGROUPNS);
    if (a->clear_groups && syscall(SYS_setgroups, 0, NULL) < 0)
        fail(a, CB_IDS);
    if (syscall(SYS_setresgid, a->gid, a->gid, a->gid) < 0 ||
        syscall(SYS_setresuid, a->uid, a->uid, a->uid) < 0)
        fail(a, CB_IDS);
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2] = {{0}};
    if (syscall(SYS_capset, &header, none) < 0)
        fail(a, CB_CAPS);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail(a, CB_NO_NEW_PRIVS);
    /* The mask goes before the filter: a profile may forbid rt_sigprocmask. */
    sigemptyset(&empty);
    if (sigprocmask(SIG_SETMASK, &empty, NULL) < 0)
        fail(a, CB_SIGNALS);
    struct sock_fprog prog = {a->bpf_len, (struct sock_filter *)a->bpf};
    if (a->bpf_len && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        fail(a, CB_SECCOMP);
    exec_searching(a);
    return fail(a, CB_EXEC);
}

/* Start the program; its pid, or -errno if no child could be made. Whether the
 * child reached execve is in a->err_stage (CB_OK: it did) once this returns. */
int cb_spawn(struct cb_spawn *a)
{
    sigset_t all, old;
    int pid, saved;

    a->err_stage = CB_OK;
    a->err_errno = 0;
    void *stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return -errno;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = clone(child, (char *)stack + CHILD_STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, a);
    saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, CHILD_STACK_SIZE);
    return pid < 0 ? -saved : pid;
}
