/* Attacks 2, 3 and 15, host files: read or write paths, one result line each.
 *   adv_paths read PATH...    "PATH: ESCAPED read N bytes: <first bytes>" or "PATH: blocked errno=N"
 *   adv_paths stat PATH...    "PATH: ESCAPED exists" or "PATH: blocked errno=N"
 *   adv_paths write PATH...   open(O_WRONLY|O_CREAT) and write a line:
 *                             "PATH: written" or "PATH: blocked errno=N"
 *   adv_paths openw PATH...   open(O_WRONLY) only, writing nothing (for files where any
 *                             write acts, like /proc/sysrq-trigger):
 *                             "PATH: ESCAPED opened for writing" or "PATH: blocked errno=N"
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char LINE[] = "cellblock-adversarial\n";

static void do_read(const char *path) {
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        printf("%s: blocked errno=%d\n", path, errno);
        return;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0 && errno == EISDIR) { /* a directory is there: that is visibility too */
        printf("%s: ESCAPED exists (directory)\n", path);
    } else if (n < 0) {
        printf("%s: blocked errno=%d (read)\n", path, errno);
    } else {
        buf[n] = 0;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n' || buf[i] == 0)
                buf[i] = ' ';
        printf("%s: ESCAPED read %zd bytes: %.200s\n", path, n, buf);
    }
    close(fd);
}

static void do_stat(const char *path) {
    struct stat st;
    if (lstat(path, &st) == 0)
        printf("%s: ESCAPED exists\n", path);
    else
        printf("%s: blocked errno=%d\n", path, errno);
}

static void do_write(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) {
        printf("%s: blocked errno=%d\n", path, errno);
        return;
    }
    if (write(fd, LINE, strlen(LINE)) < 0)
        printf("%s: blocked errno=%d (write)\n", path, errno);
    else
        printf("%s: written\n", path);
    close(fd);
}

static void do_openw(const char *path) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        printf("%s: blocked errno=%d\n", path, errno);
        return;
    }
    printf("%s: ESCAPED opened for writing\n", path);
    close(fd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 3)
        return 2;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[1], "read"))
            do_read(argv[i]);
        else if (!strcmp(argv[1], "stat"))
            do_stat(argv[i]);
        else if (!strcmp(argv[1], "write"))
            do_write(argv[i]);
        else if (!strcmp(argv[1], "openw"))
            do_openw(argv[i]);
        else
            return 2;
    }
    return 0;
}
