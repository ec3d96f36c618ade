/* Attack 13, signals to the init.
 *   adv_kill_init PID
 * Sends SIGTERM, SIGINT, SIGHUP, SIGSTOP and SIGKILL to PID, printing
 * "SIGTERM ret=R errno=E" and so on for each, waits 200 ms, writes "survived"
 * to ./after (so a copy-out after the run shows the init still did its job),
 * prints "still here" and exits 3: the run's verdict must be this exit. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 2)
        return 2;
    pid_t pid = (pid_t)atoi(argv[1]);
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGSTOP, SIGKILL};
    const char *names[] = {"SIGTERM", "SIGINT", "SIGHUP", "SIGSTOP", "SIGKILL"};
    for (int i = 0; i < 5; i++) {
        int ret = kill(pid, sigs[i]);
        printf("%s ret=%d errno=%d\n", names[i], ret, ret ? errno : 0);
    }
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    FILE *f = fopen("after", "w");
    if (f) {
        fputs("survived\n", f);
        fclose(f);
    }
    printf("still here\n");
    return 3;
}
