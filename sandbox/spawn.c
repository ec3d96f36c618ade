/*
 * The program's process, from clone to execve (called by the cell's init,
 * sandbox/init.c).
 *
 * Why a clone(CLONE_VM) child: a forked child copies the init's page tables
 * and takes copy-on-write faults on its memory, and all of it is torn down
 * again at execve. Once that child has joined the run's cgroup (it must,
 * before the first instruction of the user's program), the copy, the faults
 * and the teardown are charged to the cell (a page is charged to the cgroup
 * of the process that touches it). A clone(CLONE_VM) child copies nothing; it
 * runs only the code below, on its own small stack, and touches no other
 * memory of the init but the struct it was given (pages of a shared mm are
 * charged to the mm's owner, the init, outside the cell).
 *
 * Two phases, so that the slow part overlaps the init's work:
 *
 *   cb_start (the init calls it first thing): the child resets its signals,
 *     puts its fds in place, calls setsid and joins the run's cgroup(s) --
 *     a task migration, which waits for an RCU grace period (milliseconds) --
 *     then sleeps on a futex in the shared struct, while the init builds the
 *     root, copies files in and so on.
 *   cb_go (the init, when the cell is ready): wakes it. The child checks that
 *     its root is the cell's, enters /box, applies rlimits, a new cgroup
 *     namespace, the run ids, no capabilities, no_new_privs, the Landlock
 *     ruleset, an empty signal mask and the seccomp filter, and calls execve
 *     (searching the cell's PATH). cb_go returns once the child has called execve or given up.
 *     A filter that sends calls to a supervisor (SECCOMP_RET_USER_NOTIF,
 *     sandbox/locks.py) is loaded with a listener fd, which the child sends
 *     to the init over a socket (SCM_RIGHTS) before its execve: the program
 *     never holds it (close-on-exec), the child need not wait for the init,
 *     and the fd in flight keeps the listener alive until the init takes it.
 *
 * This file holds no policy: the Python modules decide every value (rlimits,
 * userns, caps, seccomp, landlock: sandbox/spawn.py's ProgramStart, sent in
 * the run's launch); this code applies them in the only order that works. Rules for code that runs in a CLONE_VM child: no malloc, no stdio,
 * no glibc but its pure string functions -- only the raw system calls below,
 * which leave the init's errno alone -- and no return from the child function. A failure is reported
 * in the shared struct (stage and errno) before _exit(127), so even a seccomp
 * profile that forbids execve is reported exactly. x86_64 only (so is
 * sandbox/libc.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "spawn.h"

#if !defined(__x86_64__)
#error "sandbox/spawn.c: x86_64 only (raw system calls)"
#endif

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif


#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#define CB_LANDLOCK_RULE_PATH_BENEATH 1

/* struct landlock_path_beneath_attr of <linux/landlock.h> (packed there too). */
struct cb_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

#define CHILD_STACK_SIZE (64 * 1024)
#define HIGH_FD 256 /* our fds are moved above this before 0..n-1 are filled */

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define sys(n, a, b, c) sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

static void fail(struct cb_spawn *a, int stage, long ret)
{
    a->err_errno = (int)-ret;
    __atomic_store_n(&a->err_stage, stage, __ATOMIC_RELEASE);
    for (;;)
        sys(SYS_exit, 127, 0, 0);
}
#define check(a, stage, expr) do { long r_ = (expr); if (r_ < 0) fail(a, stage, r_); } while (0)

/* The kernel's struct k_sigaction on x86_64: SIG_DFL needs no restorer. */
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

static void reset_signals(struct cb_spawn *a)
{
    struct kernel_sigaction dfl = {0};
    /* Handlers are this child's own copy (no CLONE_SIGHAND): every one goes,
     * so no handler of the init can ever run on the init's memory. All signals
     * stay blocked (the init blocked them around clone) until just before the
     * seccomp filter. */
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            check(a, CB_SIGNALS, sys6(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0, 0));
}

/* stdin/stdout/stderr at 0..nfds-1; the cgroup fds, the status pipe and the
 * listener's socket kept (close-on-exec) at `keep`; every other descriptor of
 * the init closed. Returns how many are kept. */
static int place_fds(struct cb_spawn *a, int status_w, int *keep)
{
    int high[a->nfds + a->njoin + 2];
    int kept = a->njoin + 1;
    int n = 0;

    /* First out of the way (a source may sit at 0..n-1), then into place. */
    for (int i = 0; i < a->nfds; i++)
        check(a, CB_FDS, high[n++] = (int)sys(SYS_fcntl, a->fds[i], F_DUPFD_CLOEXEC, HIGH_FD));
    for (int i = 0; i < a->njoin; i++)
        check(a, CB_FDS, keep[i] = high[n++] =
                  (int)sys(SYS_fcntl, a->join_fds[i], F_DUPFD_CLOEXEC, HIGH_FD));
    check(a, CB_FDS, keep[a->njoin] = high[n++] =
              (int)sys(SYS_fcntl, status_w, F_DUPFD_CLOEXEC, HIGH_FD));
    if (a->listener_sock >= 0)
        check(a, CB_FDS, keep[kept++] = high[n++] =
                  (int)sys(SYS_fcntl, a->listener_sock, F_DUPFD_CLOEXEC, HIGH_FD));
    for (int i = 0; i < a->nfds; i++)
        check(a, CB_FDS, sys(SYS_dup3, high[i], i, 0));
    /* Close everything from nfds up but the kept ones (ascending: F_DUPFD
     * hands out the lowest free numbers in order). */
    unsigned int from = (unsigned int)a->nfds;
    for (int i = 0; i < kept; i++) {
        unsigned int fd = (unsigned int)keep[i];
        if (fd > from)
            check(a, CB_FDS, sys(SYS_close_range, from, fd - 1, 0));
        from = fd + 1;
    }
    check(a, CB_FDS, sys(SYS_close_range, from, ~0U, 0));
    return kept;
}

static void exec_searching(struct cb_spawn *a)
{
    char buf[4096];
    long ret, saved = 0;

    if (strchr(a->file, '/') || !a->path)
        fail(a, CB_EXEC, sys(SYS_execve, a->file, a->argv, a->envp));
    size_t flen = strlen(a->file);
    for (const char *dir = a->path;;) {
        const char *end = dir;
        while (*end && *end != ':')
            end++;
        size_t dlen = (size_t)(end - dir);
        const char *d = dlen ? dir : ".";  /* an empty entry is the working directory */
        if (!dlen)
            dlen = 1;
        if (dlen + 1 + flen + 1 <= sizeof(buf)) {
            memcpy(buf, d, dlen);
            buf[dlen] = '/';
            memcpy(buf + dlen + 1, a->file, flen + 1);
            ret = sys(SYS_execve, buf, a->argv, a->envp);
            /* Like execvp: a file that exists but cannot run is the error to
             * report, not the ENOENT of the directories searched after it. */
            if (ret != -ENOENT && ret != -ENOTDIR && !saved)
                saved = ret;
        }
        if (!*end)
            break;
        dir = end + 1;
    }
    fail(a, CB_EXEC, saved ? saved : -ENOENT);
}

/* Landlock (after no_new_privs, which it needs unprivileged): a ruleset of
 * the given rules, enforced on this process and everything it starts. */
static void restrict_paths(struct cb_spawn *a)
{
    long ruleset = sys(SYS_landlock_create_ruleset, a->landlock_attr, a->landlock_attr_size, 0);
    check(a, CB_LANDLOCK, ruleset);
    for (int i = 0; i < a->nlandlock_rules; i++) {
        long fd = sys6(SYS_openat, AT_FDCWD, (long)a->landlock_rules[i].path,
                       O_PATH | O_CLOEXEC, 0, 0, 0);
        check(a, CB_LANDLOCK, fd);
        struct cb_path_beneath rule = {a->landlock_rules[i].access, (int32_t)fd};
        check(a, CB_LANDLOCK, sys6(SYS_landlock_add_rule, ruleset,
                                   CB_LANDLOCK_RULE_PATH_BENEATH, (long)&rule, 0, 0, 0));
        check(a, CB_LANDLOCK, sys(SYS_close, fd, 0, 0));
    }
    check(a, CB_LANDLOCK, sys(SYS_landlock_restrict_self, ruleset, 0, 0));
    check(a, CB_LANDLOCK, sys(SYS_close, ruleset, 0, 0));
}

/* sendmsg of one fd (SCM_RIGHTS) and one byte, by raw system call. */
static long send_fd(int sock, int fd)
{
    char byte = 'L';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    memset(&control, 0, sizeof control);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    return sys(SYS_sendmsg, sock, &msg, MSG_NOSIGNAL);
}

static int child(void *arg)
{
    struct cb_spawn *a = arg;
    int keep[a->njoin + 2];

    reset_signals(a);
    check(a, CB_SETSID, sys(SYS_setsid, 0, 0, 0));
    int kept = place_fds(a, a->status_w, keep);

    /* Nothing gained at execve, ever: the bounding and ambient sets emptied,
     * the securebits set and locked, while we still hold CAP_SETPCAP. */
    for (int cap = 0; cap <= a->last_cap; cap++)
        check(a, CB_BOUNDING_SET, sys6(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0, 0));
    check(a, CB_BOUNDING_SET,
          sys6(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0));
    check(a, CB_BOUNDING_SET, sys6(SYS_prctl, PR_SET_SECUREBITS, a->securebits, 0, 0, 0, 0));

    /* Phase 1 ends in the run's cgroup(s): joined now, while the init still
     * works, unless clone3 made us there. */
    for (int i = 0; i < a->njoin; i++) {
        if (!a->born_in_cgroup)
            check(a, CB_CGROUP, sys(SYS_write, keep[i], "0", 1));
        check(a, CB_CGROUP, sys(SYS_close, keep[i], 0, 0));
    }
    while (__atomic_load_n(&a->go, __ATOMIC_ACQUIRE) == 0)
        sys6(SYS_futex, (long)&a->go, FUTEX_WAIT_PRIVATE, 0, 0, 0, 0);

    /* Phase 2: the cell is ready. SECURITY.md rule 5: check where we are. The root moved
     * with the init's pivot_root; make sure, then enter the working directory. */
    struct stat st;
    check(a, CB_ROOT, sys6(SYS_newfstatat, AT_FDCWD, (long)"/", (long)&st, 0, 0, 0));
    if (st.st_dev != a->root_dev || st.st_ino != a->root_ino)
        fail(a, CB_ROOT, -EXDEV);
    check(a, CB_ROOT, sys(SYS_chdir, a->cwd, 0, 0));
    for (int i = 0; i < a->nrlimits; i++) {
        uint64_t limit[2] = {a->rlimits[i].soft, a->rlimits[i].hard};
        check(a, CB_RLIMITS, sys6(SYS_prlimit64, 0, a->rlimits[i].resource, (long)limit, 0, 0, 0));
    }
    check(a, CB_CGROUPNS, sys(SYS_unshare, CLONE_NEWCGROUP, 0, 0));
    if (a->clear_groups)
        check(a, CB_IDS, sys(SYS_setgroups, 0, 0, 0));
    check(a, CB_IDS, sys(SYS_setresgid, a->gid, a->gid, a->gid));
    check(a, CB_IDS, sys(SYS_setresuid, a->uid, a->uid, a->uid));
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2];
    memset(none, 0, sizeof(none));
    check(a, CB_CAPS, sys(SYS_capset, &header, none, 0));
    check(a, CB_NO_NEW_PRIVS, sys6(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0));
    if (a->landlock_attr)
        restrict_paths(a);
    /* The mask goes before the filter: a profile may forbid rt_sigprocmask. */
    uint64_t empty = 0;
    check(a, CB_SIGNALS, sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&empty, 0, 8, 0, 0));
    struct sock_fprog prog = {a->bpf_len, (struct sock_filter *)a->bpf};
    if (a->bpf_len && a->notify && a->listener_sock >= 0) {
        long fd = sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                      &prog);
        if (fd == -EBUSY) { /* a filter of the worker's has a listener: calls get ENOSYS */
            a->listener_error = EBUSY;
            if (a->unsupervised_len) { /* ... but for sockets, which this one allows */
                prog.len = a->unsupervised_len;
                prog.filter = (struct sock_filter *)a->unsupervised;
            }
            check(a, CB_SECCOMP, sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
        } else {
            check(a, CB_SECCOMP, fd);
            /* To the init; our copy closes at execve. A profile that refuses
             * sendmsg leaves the calls unanswered (ENOSYS), and the init says so. */
            long sent = send_fd(keep[kept - 1], (int)fd);
            if (sent < 0)
                a->listener_error = (int)-sent;
        }
    } else if (a->bpf_len) {
        check(a, CB_SECCOMP, sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
    }
    exec_searching(a);
    return 0; /* not reached */
}

/* clone3 with a stack of our own: the child starts on it in `fn`, as with
 * glibc's clone(), which has no clone3 form in glibc 2.36. Returns the
 * child's pid, or -errno. */
static long clone3_on_stack(struct clone_args *args, int (*fn)(void *), void *arg)
{
    long ret;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        /* The child: rsp is the top of its stack (16-byte aligned). */
        "xor %%ebp, %%ebp\n\t"
        "mov %[arg], %%rdi\n\t"
        "call *%[fn]\n\t"
        "mov %%eax, %%edi\n\t"
        "mov %[exit], %%eax\n\t"
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "a"((long)SYS_clone3), "D"(args), "S"(sizeof(*args)), [fn] "r"(fn), [arg] "r"(arg),
          [exit] "i"(SYS_exit)
        : "rcx", "r11", "memory");
    return ret;
}


/* Phase 1: make the child; it waits for cb_go. Its pid, or -errno. */
int cb_start(struct cb_spawn *a)
{
    sigset_t all, old;
    int pipefd[2], pid, saved;

    a->err_stage = CB_OK;
    a->err_errno = 0;
    a->go = 0;
    a->listener_error = 0;
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -errno;
    a->status_r = pipefd[0];
    a->status_w = pipefd[1];
    a->stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (a->stack == MAP_FAILED) {
        saved = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        return -saved;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = -1;
    saved = 0;
    a->born_in_cgroup = 0;
    if (a->cgroup_dirfd >= 0) {
        /* Born in the run's cgroup: no task migration, which waits for an RCU
         * grace period (milliseconds). Needs cgroup v2, Linux 5.7 and write
         * access to the common ancestor's cgroup.procs with the init's own
         * credentials: true for a delegated subtree run rootless. Otherwise
         * (EACCES, ENOSYS, ...) the child joins by writing cgroup.procs. */
        struct clone_args args = {
            .flags = CLONE_VM | CLONE_INTO_CGROUP,
            .exit_signal = SIGCHLD,
            .stack = (uint64_t)(uintptr_t)a->stack,
            .stack_size = CHILD_STACK_SIZE,
            .cgroup = (uint64_t)a->cgroup_dirfd,
        };
        a->born_in_cgroup = 1;
        long ret = clone3_on_stack(&args, child, a);
        if (ret > 0)
            pid = (int)ret;
        else
            a->born_in_cgroup = 0;
    }
    if (pid < 0) {
        pid = clone(child, (char *)a->stack + CHILD_STACK_SIZE, CLONE_VM | SIGCHLD, a);
        saved = errno;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(pipefd[1]); /* the child has its own copy, closed at its execve */
    if (pid < 0) {
        close(pipefd[0]);
        munmap(a->stack, CHILD_STACK_SIZE);
        return -saved;
    }
    return pid;
}

/* Phase 2: let the child go; returns when it has called execve (err_stage
 * CB_OK) or given up (err_stage says where), 0, or -errno of our own read. */
int cb_go(struct cb_spawn *a)
{
    char byte;
    ssize_t n;

    __atomic_store_n(&a->go, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &a->go, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    /* EOF once the child's copy of the write end is gone: at execve or exit. */
    do
        n = read(a->status_r, &byte, 1);
    while (n > 0 || (n < 0 && errno == EINTR));
    int saved = n < 0 ? errno : 0;
    close(a->status_r);
    /* The child no longer runs on this stack: it has a new mm, or is dead. */
    munmap(a->stack, CHILD_STACK_SIZE);
    return -saved;
}
