/* Attack 12, a daemon that tries to outlive the run.
 *   adv_daemon MARKER SECONDS
 * fork; the child calls setsid and forks again (the classic double fork); the
 * grandchild ignores SIGHUP, detaches its stdio and forks once more: one
 * process stays as this program sleeping (MARKER in its argv), the other runs
 * `nohup sleep SECONDS` (SECONDS is a unique number: the marker of that one).
 * The original process waits until the daemon is set up, prints
 * "DAEMONIZED pid=P" and exits 0. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 3)
        return 2;
    int ready[2];
    if (pipe(ready))
        return 1;
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child > 0) { /* the original: wait for the daemon's word, then leave */
        close(ready[1]);
        pid_t daemon_pid = 0;
        if (read(ready[0], &daemon_pid, sizeof daemon_pid) != sizeof daemon_pid) {
            printf("daemon set-up failed\n");
            return 1;
        }
        printf("DAEMONIZED pid=%d\n", daemon_pid);
        return 0;
    }
    close(ready[0]);
    setsid();
    if (fork() != 0)
        _exit(0); /* the session leader leaves: the grandchild can never get a terminal */
    signal(SIGHUP, SIG_IGN);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2)
        close(null);
    chdir("/");
    pid_t sleeper = fork();
    if (sleeper == 0) {
        close(ready[1]);
        execlp("nohup", "nohup", "sleep", argv[2], (char *)NULL);
        _exit(127);
    }
    pid_t self = getpid();
    write(ready[1], &self, sizeof self);
    close(ready[1]);
    for (int i = 0; i < 600; i++)
        sleep(1);
    return 0;
}
