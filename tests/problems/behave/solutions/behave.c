/* One program per language for the verdict matrix: the first input token says
 * how to behave (see tests/problems/README.md). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *burn(void *arg) {
    volatile unsigned long n = 0;
    for (;;) n++;
    return arg;
}

int main(void) {
    char mode[32];
    long a = 0, b = 0;
    if (scanf("%31s %ld %ld", mode, &a, &b) < 1) return 9;
    if (!strcmp(mode, "sum")) printf("%ld\n", a + b);
    else if (!strcmp(mode, "wrong")) printf("%ld\n", a + b + 1);
    else if (!strcmp(mode, "trailing")) printf("%ld   \n\n\n", a + b);
    else if (!strcmp(mode, "spin")) burn(NULL);
    else if (!strcmp(mode, "threads")) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, burn, NULL);
        pthread_join(t[0], NULL);
    } else if (!strcmp(mode, "sleep")) sleep(100);
    else if (!strcmp(mode, "alloc")) {
        for (;;) {
            char *p = malloc(16 << 20);
            if (p) memset(p, 1, 16 << 20);
        }
    } else if (!strcmp(mode, "flood")) {
        for (;;) fputs("flood flood flood flood flood flood flood flood\n", stdout);
    } else if (!strcmp(mode, "crash")) {
        volatile int *p = NULL;
        *p = 1;
    } else if (!strcmp(mode, "exit")) return 4;
    return 0;
}
