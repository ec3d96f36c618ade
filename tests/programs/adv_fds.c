/* Attack 4, leaked descriptors: what the program inherited besides 0, 1, 2.
 * Prints "listing: 0 1 2 ..." (the entries of /proc/self/fd, including the
 * listing's own descriptor), then for every fd 3..64 that is open
 * "ESCAPED fd=N -> TARGET: <first bytes read>", and finally "closed: K" with
 * K the number of fds in 3..64 for which fcntl(F_GETFD) gave EBADF. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) {
        printf("listing failed errno=%d\n", errno);
        return 1;
    }
    int own = dirfd(dir);
    printf("listing:");
    struct dirent *entry;
    while ((entry = readdir(dir)))
        if (entry->d_name[0] != '.')
            printf(" %s", entry->d_name);
    printf(" (own=%d)\n", own);
    int closed = 0;
    for (int fd = 3; fd <= 64; fd++) {
        if (fd == own)
            continue;
        if (fcntl(fd, F_GETFD) < 0) {
            if (errno == EBADF)
                closed++;
            continue;
        }
        char link[64], target[256] = "?", buf[128] = "";
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len >= 0)
            target[len] = 0;
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n < 0)
            n = read(fd, buf, sizeof buf - 1);
        if (n > 0)
            buf[n] = 0;
        for (char *p = buf; *p; p++)
            if (*p == '\n')
                *p = ' ';
        printf("ESCAPED fd=%d -> %s: %s\n", fd, target, n > 0 ? buf : "");
    }
    closedir(dir);
    printf("closed: %d\n", closed);
    return 0;
}
