/* Attack 10, TIOCSTI: push input into a terminal (bubblewrap CVE-2017-5226).
 *   adv_tiocsti pty [high]  a new pty as controlling terminal, TIOCSTI 'Z' into it
 *                           (with "high": garbage in the request's upper 32 bits,
 *                           which the kernel ignores), then read it back:
 *                           "ESCAPED injected Z", "blocked errno=N" or "setup failed errno=N"
 *   adv_tiocsti std         TIOCSTI on fds 0, 1, 2, plain and with garbage high bits:
 *                           "fd=N low errno=E" / "fd=N high errno=E" (or "ESCAPED fd=N ...")
 *   adv_tiocsti devs        open /dev/tty and /dev/ptmx: "PATH: errno=E" or "PATH: ESCAPED opened"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#define HIGH_GARBAGE 0xdeadbeef00000000UL

static long sti(int fd, int high, char *c) {
    unsigned long request = (unsigned long)TIOCSTI | (high ? HIGH_GARBAGE : 0);
    return syscall(SYS_ioctl, (long)fd, request, c);
}

static int pty(int high) {
    setsid(); /* so that the slave becomes our controlling terminal */
    int master = posix_openpt(O_RDWR);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        printf("setup failed errno=%d\n", errno);
        return 0;
    }
    int slave = open(ptsname(master), O_RDWR);
    if (slave < 0) {
        printf("setup failed errno=%d\n", errno);
        return 0;
    }
    struct termios t;
    tcgetattr(slave, &t);
    cfmakeraw(&t);
    tcsetattr(slave, TCSANOW, &t);
    char c = 'Z';
    if (sti(slave, high, &c) != 0) {
        printf("blocked errno=%d\n", errno);
        return 0;
    }
    struct pollfd p = {.fd = slave, .events = POLLIN};
    char got = 0;
    if (poll(&p, 1, 1000) == 1 && read(slave, &got, 1) == 1 && got == 'Z')
        printf("ESCAPED injected %c\n", got);
    else
        printf("ioctl returned 0 but nothing was injected\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return 2;
    if (!strcmp(argv[1], "pty"))
        return pty(argc > 2 && !strcmp(argv[2], "high"));
    if (!strcmp(argv[1], "std")) {
        for (int fd = 0; fd <= 2; fd++)
            for (int high = 0; high <= 1; high++) {
                char c = 'Z';
                const char *what = high ? "high" : "low";
                if (sti(fd, high, &c) == 0)
                    printf("ESCAPED fd=%d %s\n", fd, what);
                else
                    printf("fd=%d %s errno=%d\n", fd, what, errno);
            }
        return 0;
    }
    if (!strcmp(argv[1], "devs")) {
        const char *paths[] = {"/dev/tty", "/dev/ptmx"};
        for (int i = 0; i < 2; i++) {
            int fd = open(paths[i], O_RDWR | O_NOCTTY);
            if (fd >= 0) {
                printf("%s: ESCAPED opened\n", paths[i]);
                close(fd);
            } else {
                printf("%s: errno=%d\n", paths[i], errno);
            }
        }
        return 0;
    }
    return 2;
}
