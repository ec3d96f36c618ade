/*
 * The cell's init (sandbox/init.c) and its parts: what it is told (wire.c),
 * the root it builds (mounts.c), the files it moves across the cell's wall
 * (boxfiles.c).
 */
#ifndef CELLBLOCK_INIT_H
#define CELLBLOCK_INIT_H

#include <stddef.h>
#include <stdint.h>

/* The record tags of sandbox/wire.py (Tag), by value. */
enum cb_tag {
    T_LAYER = 1,
    T_HOST_DIR = 2,
    T_SYMLINK = 3,
    T_TMPFS_SIZE = 4,
    T_TMPFS_INODES = 5,
    T_BOX_UID = 6,
    T_BOX_GID = 7,
    T_HIDDEN = 8,
    T_DENY_SETGROUPS = 9,
    T_MOUNT_POINT = 10,
    T_NS_LIMIT = 11,
    T_LOCK_CAP = 12,
    T_DENY_RUN = 13,
    T_ARGV = 20,
    T_ENV = 21,
    T_RLIMIT = 22,
    T_RUN_UID = 23,
    T_RUN_GID = 24,
    T_CLEAR_GROUPS = 25,
    T_BPF = 26,
    T_BPF_UNSUPERVISED = 27,
    T_LANDLOCK_ATTR = 28,
    T_LANDLOCK_RULE = 29,
    T_NOTIFY = 30,
    T_SOCKETS_NOTED = 31,
    T_CWD = 32,
    T_COPY_IN = 33,
    T_READONLY = 34,
    T_COPY_OUT = 35,
    T_FILE_SIZE = 36,
    T_CGROUP_FDS = 37,
    T_CGROUP_DIR = 38,
    T_RECYCLE = 39,
    T_FD_COUNT = 40,
    T_LAST_CAP = 41,
    T_SECUREBITS = 42,
    T_NAME = 60,
    T_TARGET = 61,
    T_VALUE = 62,
    T_RESOURCE = 63,
    T_SOFT = 64,
    T_HARD = 65,
};

/* A list of strings, or of pairs (name, target) / (name, value). */
struct cb_item {
    char *name;
    char *target;
    uint64_t value, soft, hard;
};
struct cb_list {
    struct cb_item *items;
    int count;
};

struct cb_birth {
    struct cb_list layers, host_dirs, symlinks, hidden, mount_points, ns_limits;
    uint64_t tmpfs_size, tmpfs_inodes;
    unsigned int box_uid, box_gid;
    int deny_setgroups;
    int lock_cap, deny_run; /* sandbox/locks.py */
};

struct cb_launch {
    struct cb_list argv, env, rlimits, landlock_rules, copy_in, readonly, copy_out;
    unsigned int run_uid, run_gid;
    int clear_groups, notify, sockets_noted, cgroup_dir, recycle;
    const void *bpf, *bpf_unsupervised, *landlock_attr;
    size_t bpf_size, bpf_unsupervised_size, landlock_attr_size;
    char *cwd;
    uint64_t file_size;
    int cgroup_fds, fd_count, last_cap;
    unsigned int securebits;
    void *buffer; /* the record everything above points into */
};

/* wire.c */
int cb_read_birth(int fd, struct cb_birth *birth);
int cb_read_launch(int fd, struct cb_launch *launch);
void cb_free_launch(struct cb_launch *launch);

/* Messages to the host: 'J' and a JSON object. */
struct cb_message {
    char text[16384];
    size_t length;
    int first;
};
void msg_begin(struct cb_message *m, const char *kind);
void msg_string(struct cb_message *m, const char *key, const char *value);
void msg_int(struct cb_message *m, const char *key, long long value);
void msg_double(struct cb_message *m, const char *key, double value);
void msg_strings(struct cb_message *m, const char *key, char **values, int count);
int msg_send(int channel, struct cb_message *m);

/* What went wrong, for the "error" message (set by the failing step). */
extern char cb_error[1024];
int cb_fail(const char *what, ...) __attribute__((format(printf, 1, 2)));
void cb_die(void) __attribute__((noreturn)); /* report cb_error, end the init */
int cb_fail_errno(int error, const char *what, ...) __attribute__((format(printf, 2, 3)));

/* mounts.c */
int cb_hold(const struct cb_birth *birth, const int *layers);
int cb_build_root(const struct cb_birth *birth, int last_pid, char ***bound, int *nbound);
int cb_bind_read_only(int box, const char *relative);
extern const unsigned long long cb_read_only; /* MOUNT_ATTR_RDONLY | NOSUID | NODEV */

/* boxfiles.c */
int cb_copy_into_box(int box, const struct cb_launch *launch, const int *fds);
int cb_send_box_files(int box, int channel, const struct cb_launch *launch);

#endif
