/* Attack 20: change the limits of the cell's init (PID 1) with prlimit. Where the
 * program shares its host uid with the init (a rootless cell without subordinate
 * ids), the kernel alone allows it.
 *   adv_prlimit PID   prints "ESCAPED set RLIMIT_NOFILE of PID" or "blocked errno=N" */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    pid_t pid = (pid_t)atoi(argv[1]);
    struct rlimit limit = {16, 16};
    if (prlimit(pid, RLIMIT_NOFILE, &limit, NULL) < 0) {
        printf("blocked errno=%d\n", errno);
        return 0;
    }
    printf("ESCAPED set RLIMIT_NOFILE of %d\n", pid);
    return 0;
}
