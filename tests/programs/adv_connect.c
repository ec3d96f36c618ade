/* Attack 1, network: connect to a TCP listener of the host on 127.0.0.1:PORT.
 *   adv_connect PORT
 * Prints "ESCAPED connected to 127.0.0.1:PORT" or "blocked errno=N". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    int port = atoi(argv[1]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("blocked errno=%d (socket)\n", errno);
        return 0;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
        printf("ESCAPED connected to 127.0.0.1:%d\n", port);
    else
        printf("blocked errno=%d\n", errno);
    close(fd);
    return 0;
}
