/*
 * The mount namespace: a fresh root for the cell, then pivot_root into it.
 *
 * Runs in the cell's init (PID 1 of the new PID namespace, root of the new
 * user namespace) before anything untrusted starts. In order:
 *
 * 1. make every mount private, so nothing propagates to or from the host;
 * 2. a per-run tmpfs (size and inode capped, nosuid, nodev) holds the
 *    overlay's upper and work dirs: writes land here and die with the cell;
 * 3. the root is an overlay: lower = skeleton (mount points, made once per
 *    cell by cb_hold) + image layers (read-only), upper = the tmpfs, with
 *    `userxattr` (required for unprivileged overlay);
 * 4. host directories of the image appear through read-only overlays of their
 *    own (the host directory below a small "mask" layer), made once per cell
 *    in the init's first mount namespace (cb_hold) and bound into each of its
 *    roots: the program's files are overlay inodes of its cell, never the
 *    host's, so a lock it takes on /etc/passwd, or a watch it sets on
 *    /etc/hostname, reaches no process outside its cell; the mask layer hides
 *    what the program may not see (sandbox/images.py, private_entries). A host
 *    directory with mounts beneath it cannot be an overlay's layer in a user
 *    namespace (the kernel refuses to reveal what they cover): it is bound
 *    read-only instead (recursive, nosuid, nodev), and the run's `degraded`
 *    says so;
 * 5. a minimal read-only /dev (null zero full random urandom) with a fresh
 *    shm, and a /proc of the cell's PID namespace with the writable corners
 *    covered: both made once per cell (cb_hold) and bound, the shm mounted for
 *    each root;
 * 6. pivot_root and detach the old root: the host's tree is unreachable.
 *
 * After copy-in, cb_bind_read_only covers chosen /box files with read-only
 * binds of themselves (a judged program's own executable, say).
 *
 * No host directory is created or left behind: the staging tmpfs is mounted
 * over /tmp inside the private namespace and vanishes with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "init.h"

#define STAGING "/tmp"
/* Where the init's first mount namespace holds the image's layers and the
 * host directories' read-only views (cb_hold); in each root's namespace the
 * staging tmpfs covers it, once they are open. */
#define LAYER_HOLD "/tmp"
#define HOST_HOLD LAYER_HOLD "/host"
#define MASK_HOLD LAYER_HOLD "/mask"
/* The skeleton (the root's first lower layer), /dev without its shm, and the
 * cell's /proc, made once per cell and bound into each of its roots: nothing
 * of them can be written by a program. */
#define SKELETON_HOLD LAYER_HOLD "/skel"
#define DEV_HOLD LAYER_HOLD "/dev"
#define PROC_HOLD LAYER_HOLD "/proc"

static const char *const devices[] = {"null", "zero", "full", "random", "urandom"};
static const char *const dev_symlinks[][2] = {
    {"fd", "/proc/self/fd"},
    {"stdin", "/proc/self/fd/0"},
    {"stdout", "/proc/self/fd/1"},
    {"stderr", "/proc/self/fd/2"},
};
/* procfs entries a cell never needs to write (bubblewrap's --proc covers the same). */
static const char *const proc_covered[] = {"sys", "sysrq-trigger", "irq", "bus"};

const unsigned long long cb_read_only = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

/* Resolution of a /box file from the init's /box fd: nothing but plain names below it. */
#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
/* The same, but into a mount on the way (to look at a bind mount just made). */
#define BENEATH_XDEV (BENEATH & ~RESOLVE_NO_XDEV)

#define PATH_SIZE 4200

/* A path or mount option made from a format: one that does not fit ends the
 * init (a cut path could name another place). */
static void pathf(char *buffer, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void pathf(char *buffer, size_t size, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int n = vsnprintf(buffer, size, format, args);
    va_end(args);
    if (n < 0 || (size_t)n >= size) {
        cb_fail("a path or mount option longer than %zu bytes", size);
        cb_die();
    }
}

static int do_mount(const char *source, const char *target, const char *type,
                    unsigned long flags, const char *data)
{
    if (mount(source, target, type, flags, data) < 0)
        return cb_fail_errno(errno, "mount %s", target);
    return 0;
}

static int set_attr(int dirfd, const char *path, unsigned long long attr, int recursive)
{
    struct mount_attr a = {.attr_set = attr};
    unsigned flags = (recursive ? AT_RECURSIVE : 0) | (*path ? 0 : AT_EMPTY_PATH);
    if (syscall(SYS_mount_setattr, dirfd, path, flags, &a, sizeof a) < 0)
        return cb_fail_errno(errno, "mount_setattr %s", path);
    return 0;
}

static int open_beneath(int dirfd, const char *path, int flags, unsigned long long resolve)
{
    struct open_how how = {.flags = flags, .resolve = resolve};
    int fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0)
        return cb_fail_errno(errno, "openat2 %s", path);
    return fd;
}

static int open_dir(const char *path)
{
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return cb_fail_errno(errno, "open %s", path);
    return fd;
}

static char *fd_path(char *buffer, int fd)
{
    sprintf(buffer, "/proc/self/fd/%d", fd);
    return buffer;
}

static int make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0)
        return cb_fail_errno(errno, "mkdir %s", path);
    return 0;
}

/* Like `mkdir -p -m 0755`, whatever the umask: the mask's directories are the
 * merged ones' attributes in the cell. */
static int make_dirs(const char *path)
{
    char partial[PATH_SIZE];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    pathf(partial, sizeof partial, "%s", path);
    char *slash = strrchr(partial, '/');
    if (slash && slash != partial) {
        *slash = 0;
        if (make_dirs(partial) < 0)
            return -1;
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return cb_fail_errno(errno, "mkdir %s", path);
    if (chmod(path, 0755) < 0)
        return cb_fail_errno(errno, "chmod %s", path);
    return 0;
}

static int make_skeleton(const struct cb_birth *b)
{
    char path[PATH_SIZE];
    for (int i = 0; i < b->mount_points.count; i++) {
        pathf(path, sizeof path, SKELETON_HOLD "/%s", b->mount_points.items[i].name);
        if (make_dir(path, 0755) < 0)
            return -1;
    }
    if (chown(SKELETON_HOLD "/box", b->box_uid, b->box_gid) < 0)
        return cb_fail_errno(errno, "chown the skeleton's /box");
    if (chmod(SKELETON_HOLD "/tmp", 01777) < 0)
        return cb_fail_errno(errno, "chmod the skeleton's /tmp");
    for (int i = 0; i < b->host_dirs.count; i++) {
        pathf(path, sizeof path, SKELETON_HOLD "%s", b->host_dirs.items[i].name);
        if (make_dirs(path) < 0)
            return -1;
    }
    for (int i = 0; i < b->symlinks.count; i++) {
        pathf(path, sizeof path, SKELETON_HOLD "/%s", b->symlinks.items[i].name);
        if (symlink(b->symlinks.items[i].target, path) < 0)
            return cb_fail_errno(errno, "symlink %s", path);
    }
    return 0;
}

/* A minimal /dev, read-only: the host's harmless devices bound, the usual
 * symlinks, and an empty shm directory (mount_shm). */
static int make_dev(void)
{
    char node[64], host[64];
    if (do_mount("cellblock-dev", DEV_HOLD, "tmpfs", MS_NOSUID | MS_NOEXEC,
                 "size=64k,nr_inodes=64,mode=0755") < 0)
        return -1;
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++) {
        pathf(node, sizeof node, DEV_HOLD "/%s", devices[i]);
        pathf(host, sizeof host, "/dev/%s", devices[i]);
        int fd = open(node, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0)
            return cb_fail_errno(errno, "creating %s", node);
        close(fd);
        if (do_mount(host, node, NULL, MS_BIND, NULL) < 0)
            return -1;
    }
    for (size_t i = 0; i < sizeof dev_symlinks / sizeof *dev_symlinks; i++) {
        pathf(node, sizeof node, DEV_HOLD "/%s", dev_symlinks[i][0]);
        if (symlink(dev_symlinks[i][1], node) < 0)
            return cb_fail_errno(errno, "symlink %s", node);
    }
    if (make_dir(DEV_HOLD "/shm", 0755) < 0)
        return -1;
    return set_attr(AT_FDCWD, DEV_HOLD, MOUNT_ATTR_RDONLY, 0);
}

static int mount_shm(const char *shm, uint64_t size)
{
    /* A fresh shm per root: a shared one is a side channel between runs (isolate 2.6). */
    char data[96];
    pathf(data, sizeof data, "size=%llu,nr_inodes=1024,mode=1777", (unsigned long long)size);
    return do_mount("cellblock-shm", shm, "tmpfs", MS_NOSUID | MS_NODEV, data);
}

static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return cb_fail_errno(errno, "open %s", path);
    ssize_t n = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    if (n < 0)
        return cb_fail_errno(saved, "write %s", path);
    return 0;
}

/* A procfs of the cell's PID namespace, its writable corners covered
 * read-only; the cell's user namespace limited first (sandbox/userns.py,
 * CELL_NAMESPACE_LIMITS, while /proc/sys is still writable for us: once per
 * cell, the limits are its user namespace's, which a recycled cell keeps).
 * Returns its ns_last_pid, open for writing. */
static int make_proc(const struct cb_birth *b)
{
    char path[PATH_SIZE], value[32];
    /* The kernel lets a user namespace mount procfs only while a fully visible
     * procfs is in its mount namespace (the host's /proc here). */
    if (do_mount("proc", PROC_HOLD, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 "hidepid=invisible") < 0)
        return -1;
    for (int i = 0; i < b->ns_limits.count; i++) {
        const struct cb_item *limit = &b->ns_limits.items[i];
        pathf(path, sizeof path, PROC_HOLD "/sys/user/%s", limit->name);
        /* A limit this kernel does not have is skipped (older kernels lack
         * fanotify's); max_user_namespaces every kernel here has: it must hold. */
        if (strcmp(limit->name, "max_user_namespaces") != 0 && access(path, F_OK) < 0)
            continue;
        pathf(value, sizeof value, "%llu", (unsigned long long)limit->value);
        if (write_text(path, value) < 0)
            return -1;
    }
    int last_pid = open(PROC_HOLD "/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
    if (last_pid < 0)
        return cb_fail_errno(errno, "open ns_last_pid");
    for (size_t i = 0; i < sizeof proc_covered / sizeof *proc_covered; i++) {
        pathf(path, sizeof path, PROC_HOLD "/%s", proc_covered[i]);
        if (access(path, F_OK) < 0)
            continue;
        if (do_mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0
            || set_attr(AT_FDCWD, path, cb_read_only | MOUNT_ATTR_NOEXEC, 1) < 0)
            return -1;
    }
    return last_pid;
}

/* The host directory pinned at `source`, read-only at `target`: an overlay of
 * it below `mask` (made here, with a whiteout for each entry to hide). 1 done,
 * 0 if it cannot be one (mounts beneath it: see bind_host_dir), -1 failed. */
static int overlay_host_dir(const struct cb_birth *b, const char *host_dir, int source,
                            const char *target, const char *mask)
{
    char path[PATH_SIZE], options[PATH_SIZE], fd_name[64];
    if (make_dirs(mask) < 0)
        return -1;
    for (int i = 0; i < b->hidden.count; i++) {
        if (strcmp(b->hidden.items[i].name, host_dir) != 0)
            continue;
        pathf(path, sizeof path, "%s/%s", mask, b->hidden.items[i].target);
        char *slash = strrchr(path, '/');
        *slash = 0;
        if (make_dirs(path) < 0)
            return -1;
        *slash = '/';
        /* A whiteout: the char device 0/0, which any user namespace may make. */
        if (mknod(path, S_IFCHR, makedev(0, 0)) < 0)
            return cb_fail_errno(errno, "mknod %s", path);
    }
    pathf(options, sizeof options, "lowerdir=%s:%s,userxattr", mask, fd_path(fd_name, source));
    if (mount("cellblock-host", target, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, options) == 0)
        return 1;
    if (errno != EINVAL)
        return cb_fail_errno(errno, "mount %s", target);
    return 0;
}

/* Cover `top`/`relative` (a host file or directory, no symlink on the way:
 * private_entries lists none) with an empty one of mode 0, bound read-only. */
static int cover(const char *top, const char *relative, const char *scratch)
{
    char empty[PATH_SIZE], path[PATH_SIZE], fd_name[64];
    int top_fd = open_dir(top);
    if (top_fd < 0)
        return -1;
    int where = open_beneath(top_fd, relative, O_PATH | O_NOFOLLOW | O_CLOEXEC, BENEATH_XDEV);
    close(top_fd);
    if (where < 0)
        return -1;
    struct stat st;
    int ok = -1;
    if (fstat(where, &st) < 0) {
        cb_fail_errno(errno, "fstat %s", relative);
        goto out;
    }
    int directory = S_ISDIR(st.st_mode);
    pathf(empty, sizeof empty, "%s/.cover-%s", scratch, directory ? "dir" : "file");
    if (access(empty, F_OK) < 0) {
        if (directory ? mkdir(empty, 0) : mknod(empty, S_IFREG, 0)) {
            cb_fail_errno(errno, "creating %s", empty);
            goto out;
        }
        chmod(empty, 0);
    }
    if (do_mount(empty, fd_path(fd_name, where), NULL, MS_BIND, NULL) < 0)
        goto out;
    /* By path: the fd still names what is now covered. Nothing of the cell
     * has run yet, and the walk above found no symlink on the way. */
    pathf(path, sizeof path, "%s/%s", top, relative);
    ok = do_mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
out:
    close(where);
    return ok;
}

/* The host directory pinned at `source` (one with mounts beneath it),
 * read-only at `target` by a recursive bind; the entries to hide are covered
 * by empty read-only binds (made beneath `mask`). */
static int bind_host_dir(const struct cb_birth *b, const char *host_dir, int source,
                         const char *target, const char *mask)
{
    char fd_name[64];
    if (make_dirs(mask) < 0 || do_mount(fd_path(fd_name, source), target, NULL, MS_BIND | MS_REC, NULL) < 0
        || set_attr(AT_FDCWD, target, cb_read_only, 1) < 0)
        return -1;
    for (int i = 0; i < b->hidden.count; i++)
        if (strcmp(b->hidden.items[i].name, host_dir) == 0
            && cover(target, b->hidden.items[i].target, mask) < 0)
            return -1;
    return 0;
}

/* In the init's first mount namespace (the one every root of its life is
 * copied from), on a tmpfs of ours at LAYER_HOLD:
 *
 * - each layer opened by the outer process with the caller's rights
 *   (`layers`), bound at LAYER_HOLD/<i>. In every copy of this namespace the
 *   layers are then mounts reached by path without passing through the store
 *   (an overlay takes only lower dirs of the mount namespace it is made in,
 *   so a descriptor from another namespace would not do), and a layer is the
 *   root of its mount: no submounts beneath it.
 * - each host directory's read-only view (an overlay of it below a mask that
 *   hides what the program may not see), at HOST_HOLD/<dir>. Every root of
 *   the cell binds this one overlay instead of mounting its own, so the names
 *   a program looked up stay looked up for the next run of a recycled cell:
 *   through a new overlay, a Python program's start-up lookups cost it 1-2 ms
 *   of CPU (bench/README.md). Nothing of it can be written (no upper layer,
 *   read-only); what a run leaves in it is the kernel's cache of names, as the
 *   host's own page cache is shared by every process. That cache keeps a file
 *   the host replaces as it was, so a recycled cell lives
 *   warm.RECYCLED_LIFETIME. A host directory with mounts beneath it cannot be
 *   an overlay lower dir: it is not held, and each root binds it
 *   (cb_build_root).
 * - the skeleton, at SKELETON_HOLD, /dev but its shm, at DEV_HOLD, and the
 *   cell's procfs, at PROC_HOLD: each the same for every root of the cell (a
 *   recycled cell keeps its PID namespace, which is what its procfs shows).
 *   Made here once, they are only bound at a recycled cell's renewal.
 *
 * Returns a descriptor of the cell's ns_last_pid, open for writing (the
 * procfs' /proc/sys is covered read-only, and each root sets it), or -1. */
int cb_hold(const struct cb_birth *b, const int *layers)
{
    char path[PATH_SIZE], mask[PATH_SIZE], fd_name[64];
    if (do_mount("cellblock-hold", LAYER_HOLD, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0
        || make_dir(SKELETON_HOLD, 0755) < 0 || make_skeleton(b) < 0
        || make_dir(DEV_HOLD, 0755) < 0 || make_dev() < 0 || make_dir(PROC_HOLD, 0755) < 0)
        return -1;
    int last_pid = make_proc(b);
    if (last_pid < 0)
        return -1;
    for (int i = 0; i < b->layers.count; i++) {
        pathf(path, sizeof path, LAYER_HOLD "/%d", i);
        if (make_dir(path, 0755) < 0 || do_mount(fd_path(fd_name, layers[i]), path, NULL, MS_BIND, NULL) < 0
            || set_attr(AT_FDCWD, path, cb_read_only, 0) < 0)
            return -1;
    }
    for (int i = 0; i < b->host_dirs.count; i++) {
        const char *host_dir = b->host_dirs.items[i].name;
        pathf(path, sizeof path, HOST_HOLD "%s", host_dir);
        pathf(mask, sizeof mask, MASK_HOLD "%s", host_dir);
        if (make_dirs(path) < 0)
            return -1;
        int source = open_dir(host_dir);
        if (source < 0)
            return -1;
        int done = overlay_host_dir(b, host_dir, source, path, mask);
        close(source);
        if (done < 0)
            return -1;
        if (!done && rmdir(path) < 0)
            return cb_fail_errno(errno, "rmdir %s", path);
    }
    return last_pid;
}

static int pivot_into(const char *root)
{
    char cwd[16];
    /* pivot_root(".", ".") stacks the old root on top of the new one;
     * detaching "." then removes it (the runc/bubblewrap idiom). */
    if (chdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0
        || chdir("/box") < 0)
        return cb_fail_errno(errno, "pivot_root into %s", root);
    /* SECURITY.md rule 5: verify where we are after chdir. */
    if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, "/box") != 0)
        return cb_fail("the cell's working directory is not /box after pivot_root");
    return 0;
}

/* Build the cell's root and pivot into it; afterwards cwd is /box. `bound`
 * gets the host directories that had to be bound (their inodes are the
 * host's): a list of the birth's strings, to free. */
int cb_build_root(const struct cb_birth *b, int last_pid, char ***bound, int *nbound)
{
    enum { SKELETON, DEV, PROC, FIXED };
    char path[PATH_SIZE], options[PATH_SIZE * 2], fd_name[64];
    int count = FIXED + b->layers.count + b->host_dirs.count;
    int *fds = calloc(count, sizeof *fds), *held = calloc(b->host_dirs.count + 1, sizeof *held);
    int result = -1, opened = 0;
    *bound = calloc(b->host_dirs.count + 1, sizeof **bound);
    *nbound = 0;
    if (!fds || !held || !*bound) {
        cb_fail_errno(ENOMEM, "build_root");
        goto out;
    }
    /* Pin what cb_hold made by fd before the staging tmpfs hides it; a host
     * directory that is not held (mounts beneath it) is pinned itself, to be bound. */
    const char *fixed[FIXED] = {SKELETON_HOLD, DEV_HOLD, PROC_HOLD};
    for (; opened < FIXED; opened++)
        if ((fds[opened] = open_dir(fixed[opened])) < 0)
            goto out;
    for (int i = 0; i < b->layers.count; i++, opened++) {
        pathf(path, sizeof path, LAYER_HOLD "/%d", i);
        if ((fds[opened] = open_dir(path)) < 0)
            goto out;
    }
    for (int i = 0; i < b->host_dirs.count; i++, opened++) {
        const char *host_dir = b->host_dirs.items[i].name;
        pathf(path, sizeof path, HOST_HOLD "%s", host_dir);
        fds[opened] = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        held[i] = fds[opened] >= 0;
        if (!held[i]) {
            if (errno != ENOENT) {
                cb_fail_errno(errno, "open %s", path);
                goto out;
            }
            if ((fds[opened] = open_dir(host_dir)) < 0)
                goto out;
            (*bound)[(*nbound)++] = b->host_dirs.items[i].name;
        }
    }
    char size_options[96];
    pathf(size_options, sizeof size_options, "size=%llu,nr_inodes=%llu,mode=0755",
             (unsigned long long)b->tmpfs_size, (unsigned long long)b->tmpfs_inodes);
    if (do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0
        || do_mount("cellblock", STAGING, "tmpfs", MS_NOSUID | MS_NODEV, size_options) < 0
        || make_dir(STAGING "/upper", 0755) < 0 || make_dir(STAGING "/work", 0755) < 0
        || make_dir(STAGING "/root", 0755) < 0)
        goto out;
    pathf(options, sizeof options, "lowerdir=%s", fd_path(fd_name, fds[SKELETON]));
    for (int i = 0; i < b->layers.count; i++) {
        size_t used = strlen(options);
        pathf(options + used, sizeof options - used, ":%s", fd_path(fd_name, fds[FIXED + i]));
    }
    size_t used = strlen(options);
    pathf(options + used, sizeof options - used,
          ",upperdir=" STAGING "/upper,workdir=" STAGING "/work,userxattr");
    if (do_mount("cellblock-root", STAGING "/root", "overlay", MS_NOSUID | MS_NODEV, options) < 0)
        goto out;
    for (int i = 0; i < b->host_dirs.count; i++) {
        const char *host_dir = b->host_dirs.items[i].name;
        int fd = fds[FIXED + b->layers.count + i];
        pathf(path, sizeof path, STAGING "/root%s", host_dir);
        if (held[i]) {
            if (do_mount(fd_path(fd_name, fd), path, NULL, MS_BIND, NULL) < 0
                || set_attr(AT_FDCWD, path, cb_read_only, 0) < 0)
                goto out;
        } else {
            char mask[PATH_SIZE];
            pathf(mask, sizeof mask, STAGING "/mask%s", host_dir);
            if (bind_host_dir(b, host_dir, fd, path, mask) < 0)
                goto out;
        }
    }
    /* /box is a mount point of its own: the program (cell root in a size-1
     * map owns /) cannot remove, rename or replace it (EBUSY) before copy-out. */
    if (do_mount(STAGING "/root/box", STAGING "/root/box", NULL, MS_BIND, NULL) < 0
        /* The held /dev with its device binds: a bind keeps each mount's flags. */
        || do_mount(fd_path(fd_name, fds[DEV]), STAGING "/root/dev", NULL, MS_BIND | MS_REC, NULL) < 0
        || do_mount(fd_path(fd_name, fds[PROC]), STAGING "/root/proc", NULL, MS_BIND | MS_REC, NULL) < 0)
        goto out;
    for (int i = 0; i < opened; i++)
        close(fds[i]);
    opened = 0;
    if (mount_shm(STAGING "/root/dev/shm", b->tmpfs_size) < 0)
        goto out;
    /* The PID counter starts again: a recycled cell's next program gets the
     * pids the last one got, so it cannot learn how many processes ran before. */
    if (pwrite(last_pid, "1", 1, 0) < 0) {
        cb_fail_errno(errno, "ns_last_pid");
        goto out;
    }
    result = pivot_into(STAGING "/root");
out:
    for (int i = 0; i < opened; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    free(held);
    return result;
}

/* With mount(2), where a seccomp profile refuses the new mount API
 * (cellblock's Docker worker profile, by design). By path, which is safe only
 * because nothing but the init has run in this cell yet. The result is
 * checked through a fresh fd. */
static int bind_read_only_by_path(int box, const char *relative)
{
    char path[PATH_SIZE];
    struct statvfs st;
    pathf(path, sizeof path, "/box/%s", relative);
    if (do_mount(path, path, NULL, MS_BIND, NULL) < 0
        || do_mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        return -1;
    int check = open_beneath(box, relative, O_PATH | O_NOFOLLOW | O_CLOEXEC, BENEATH_XDEV);
    if (check < 0)
        return -1;
    int ok = fstatvfs(check, &st) == 0 && st.f_flag & ST_RDONLY;
    close(check);
    return ok ? 0 : cb_fail("read-only %s: the bind mount is not read-only", relative);
}

/* In the init, after copy-in and before the program: cover /box/`relative`
 * with a read-only, nosuid, nodev bind mount of itself.
 *
 * The program owns the file (cell root in a size-1 map, or the run uid), so
 * permissions cannot keep it from writing or chmod-ing it; a read-only mount
 * can (EROFS), and a mount point cannot be renamed over or removed (EBUSY).
 * The program has no capabilities and seccomp kills the mount calls, so the
 * bind stays. Every step works on fds: the file is opened once beneath /box,
 * cloned as a detached mount, made read-only, and moved onto that same file. */
int cb_bind_read_only(int box, const char *relative)
{
    struct stat st;
    int target = open_beneath(box, relative, O_PATH | O_NOFOLLOW | O_CLOEXEC, BENEATH);
    if (target < 0)
        return -1;
    int result = -1;
    if (fstat(target, &st) < 0 || !S_ISREG(st.st_mode)) {
        cb_fail("read-only %s: not a regular file", relative);
        goto out;
    }
    int tree = syscall(SYS_open_tree, target, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (tree < 0) {
        if (errno != EPERM && errno != ENOSYS) {
            cb_fail_errno(errno, "open_tree %s", relative);
            goto out;
        }
        result = bind_read_only_by_path(box, relative);
        goto out;
    }
    result = set_attr(tree, "", cb_read_only, 0);
    if (result == 0 && syscall(SYS_move_mount, tree, "", target, "",
                               MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        result = cb_fail_errno(errno, "move_mount %s", relative);
    close(tree);
out:
    close(target);
    return result;
}
