/* Attack 19, host inodes and file locks.
 *   adv_locks hold KIND PATH SECONDS   takes a lock on PATH (KIND: flock, posix, ofd;
 *                                      waiting for it) and holds it: "locked" or "blocked errno=N"
 *   adv_locks watch PATH SECONDS       inotify on PATH: "events N" seen in SECONDS
 *   adv_locks flood N [SECONDS]        N byte-range locks on files of its own:
 *                                      "locks N" (then "refused errno=E" if it was stopped);
 *                                      then holds them SECONDS, named "lock-flood"
 * A lock on a host file blocks host processes that lock it; a watch on one sees
 * every access to it, the host's and other cells' (a side channel). A flood of
 * byte-range locks is kernel memory no memory limit counts (file_lock_cache). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int hold(const char *kind, const char *path, double seconds) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        printf("blocked errno=%d (open)\n", errno);
        return 0;
    }
    int ret;
    struct flock lock = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    /* Waiting for it: the host may hold it for a moment. */
    if (strcmp(kind, "flock") == 0)
        ret = flock(fd, LOCK_EX);
    else
        ret = fcntl(fd, strcmp(kind, "ofd") == 0 ? F_OFD_SETLKW : F_SETLKW, &lock);
    if (ret < 0) {
        printf("blocked errno=%d\n", errno);
        return 0;
    }
    printf("locked\n");
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    return 0;
}

static int watch(const char *path, double seconds) {
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, path, IN_ALL_EVENTS) < 0) {
        printf("blocked errno=%d\n", errno);
        return 0;
    }
    long events = 0;
    char buf[4096] __attribute__((aligned(8)));
    for (double end = now() + seconds; now() < end;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)((end - now()) * 1000) + 1) > 0) {
            ssize_t n = read(fd, buf, sizeof buf);
            for (char *e = buf; n > 0 && e < buf + n;
                 e += sizeof(struct inotify_event) + ((struct inotify_event *)e)->len)
                events++;
        }
    }
    printf("events %ld\n", events);
    return 0;
}

static int flood(long n, double hold) {
    long made = 0;
    int err = 0;
    for (long f = 0; made < n && !err; f++) {
        char name[32];
        snprintf(name, sizeof name, "/tmp/lk%ld", f);
        int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            err = errno;
            break;
        }
        unlink(name);
        /* 400 disjoint ranges a file (its descriptor stays open: closing it
         * would drop them); the kernel walks a file's list at every lock. */
        for (int i = 0; i < 400 && made < n; i++, made++) {
            struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2 * i,
                                 .l_len = 1};
            if (fcntl(fd, F_SETLK, &lock) < 0) {
                err = errno;
                break;
            }
        }
    }
    printf("locks %ld\n", made);
    if (err)
        printf("refused errno=%d\n", err);
    fflush(stdout);
    if (hold > 0) {
        prctl(PR_SET_NAME, "lock-flood");
        usleep((useconds_t)(hold * 1e6));
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "hold") == 0)
        return hold(argv[2], argv[3], atof(argv[4]));
    if (argc == 4 && strcmp(argv[1], "watch") == 0)
        return watch(argv[2], atof(argv[3]));
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "flood") == 0)
        return flood(atol(argv[2]), argc == 4 ? atof(argv[3]) : 0);
    return 2;
}
