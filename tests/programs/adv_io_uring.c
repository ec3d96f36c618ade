/* Attack 8, io_uring: io_uring_setup(4, &params).
 * Prints "ESCAPED fd=N" or "blocked errno=N". */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    char params[120] = {0}; /* struct io_uring_params, zeroed */
    long fd = syscall(SYS_io_uring_setup, 4L, params);
    if (fd >= 0)
        printf("ESCAPED fd=%ld\n", fd);
    else
        printf("blocked errno=%d\n", errno);
    return 0;
}
