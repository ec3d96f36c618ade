/* The static "hello, world" of bench/cells.py: built with gcc -static -O2, so
 * its start costs an execve and a few syscalls, with no dynamic loader. */
#include <stdio.h>

int main(void)
{
    puts("hello, world");
    return 0;
}
