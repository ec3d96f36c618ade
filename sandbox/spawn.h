/*
 * What sandbox/spawn.c (the program's process) and sandbox/locks.c (the lock
 * supervisor) take from their caller, the cell's init (sandbox/init.c).
 */
#ifndef CELLBLOCK_SPAWN_H
#define CELLBLOCK_SPAWN_H

#include <linux/filter.h>
#include <pthread.h>
#include <stdint.h>

/* Where a failed child gave up (init.c names them in the run's error). */
enum cb_stage {
    CB_OK = 0,
    CB_SIGNALS,
    CB_SETSID,
    CB_FDS,
    CB_BOUNDING_SET,
    CB_CGROUP,
    CB_ROOT,
    CB_RLIMITS,
    CB_CGROUPNS,
    CB_IDS,
    CB_CAPS,
    CB_NO_NEW_PRIVS,
    CB_SECCOMP,
    CB_EXEC,
    CB_LANDLOCK,
};

struct cb_landlock_rule {
    const char *path;          /* in the cell */
    uint64_t access;           /* allowed beneath it */
};

struct cb_rlimit {
    int resource;
    uint64_t soft, hard;
};

struct cb_spawn {
    /* Inputs, set before cb_start. */
    const char *file;          /* argv[0]: a path, or a name searched in `path` */
    char *const *argv;
    char *const *envp;
    const char *path;          /* PATH of the cell's environment, or NULL */
    const char *cwd;           /* the working directory, in the cell's root */
    const int *fds;            /* placed at 0..nfds-1, inherited by the program */
    int nfds;
    const int *join_fds;       /* cgroup.procs of the run's cgroups: "0" is written */
    int njoin;
    int cgroup_dirfd;          /* v2: the run's cgroup, to be born in (clone3), or -1 */
    int last_cap;              /* the bounding set is emptied up to this one */
    unsigned int securebits;   /* set (and locked) before the ids change */
    const struct cb_rlimit *rlimits;
    int nrlimits;
    unsigned int uid, gid;     /* the run ids, inside the cell */
    int clear_groups;          /* setgroups(0) (not allowed in a size-1 map) */
    unsigned short bpf_len;    /* seccomp program: bpf_len sock_filter entries */
    const struct sock_filter *bpf;
    unsigned short unsupervised_len; /* ... the one to load where no listener can be */
    const struct sock_filter *unsupervised;   /* made (0: the same one) */
    const void *landlock_attr; /* struct landlock_ruleset_attr, or NULL: no Landlock */
    unsigned int landlock_attr_size;
    const struct cb_landlock_rule *landlock_rules;
    int nlandlock_rules;
    int notify;                /* the filter has user notifications: load it with a listener */
    int listener_sock;         /* ... and send the listener over this socket (-1: none) */
    /* Set by the init right before cb_go: what "/" must be for the child. */
    uint64_t root_dev, root_ino;
    /* Shared state. */
    int born_in_cgroup;        /* clone3(CLONE_INTO_CGROUP) worked: no join needed */
    int go;                    /* futex: 0 wait, 1 go */
    int status_r, status_w;    /* a pipe whose write end closes at the child's execve */
    void *stack;
    /* Outputs, written by the child. */
    int err_stage;             /* where it gave up */
    int err_errno;
    int listener_error;        /* errno: the listener could not be made or sent (0: sent) */
};

struct cb_locks {
    /* Inputs. */
    int listener;              /* the seccomp filter's listener fd */
    int cap;                   /* locks the cell may hold */
    int deny_run;              /* requests refused at the cap before the next count */
    const char *proc_locks;    /* the cell's /proc/locks */
    /* Outputs (read after cb_locks_stop). */
    long allowed, refused, counts;
    long sockets;              /* socket and socketpair calls let through */
    /* Ours. */
    int stop_r, stop_w;
    long known, since, denying;
    pthread_t thread;
};

int cb_start(struct cb_spawn *a);
int cb_go(struct cb_spawn *a);
int cb_locks_start(struct cb_locks *s);
void cb_locks_stop(struct cb_locks *s);

#endif
