/* Attack 1c, IPC: attach to a System V shared-memory segment of the host by its
 * key and read it. SysV objects belong to the IPC namespace: a cell has its own.
 *   adv_sysv KEY
 * Prints "ESCAPED read <first bytes>" or "blocked errno=N". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    key_t key = (key_t)strtol(argv[1], NULL, 10);
    int id = shmget(key, 0, 0);
    if (id < 0) {
        printf("blocked errno=%d\n", errno);
        return 0;
    }
    const char *data = shmat(id, NULL, SHM_RDONLY);
    if (data == (void *)-1) {
        printf("blocked errno=%d (shmat)\n", errno);
        return 0;
    }
    printf("ESCAPED read %.16s\n", data);
    return 0;
}
