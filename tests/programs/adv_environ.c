/* Attack 16, the supervisor's environment.
 *   adv_environ NEEDLE
 * Reads /proc/self/environ, /proc/PPID/environ and /proc/1/environ and prints
 * for each "WHICH: ESCAPED contains NEEDLE", "WHICH: clean (N bytes)" or
 * "WHICH: blocked errno=N". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void probe(const char *which, const char *path, const char *needle) {
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("%s: blocked errno=%d\n", which, errno);
        return;
    }
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    if (n < 0 && len == 0) {
        printf("%s: blocked errno=%d (read)\n", which, errno);
        close(fd);
        return;
    }
    close(fd);
    if (memmem(buf, len, needle, strlen(needle)))
        printf("%s: ESCAPED contains %s\n", which, needle);
    else
        printf("%s: clean (%zu bytes)\n", which, len);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 2)
        return 2;
    char parent[64];
    snprintf(parent, sizeof parent, "/proc/%d/environ", getppid());
    probe("self", "/proc/self/environ", argv[1]);
    probe("parent", parent, argv[1]);
    probe("init", "/proc/1/environ", argv[1]);
    return 0;
}
