/* Attack 1b, network: connect to a host's abstract unix socket (no file, just a
 * name: dbus, X11, systemd and container runtimes listen on such names). Abstract
 * names belong to the network namespace, so a cell sees none of the host's.
 *   adv_abstract NAME
 * Prints "ESCAPED connected to @NAME" or "blocked errno=N". */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2 || strlen(argv[1]) >= sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
        return 2;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("blocked errno=%d (socket)\n", errno);
        return 0;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(argv[1]);
    memcpy(addr.sun_path + 1, argv[1], len); /* sun_path[0] == 0: abstract */
    socklen_t size = offsetof(struct sockaddr_un, sun_path) + 1 + len;
    if (connect(fd, (struct sockaddr *)&addr, size) == 0)
        printf("ESCAPED connected to @%s\n", argv[1]);
    else
        printf("blocked errno=%d\n", errno);
    close(fd);
    return 0;
}
