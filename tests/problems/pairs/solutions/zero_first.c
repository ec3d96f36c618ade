/* Valid but unbalanced: partial credit (0.5 per test, except N = 0 where 0 0 is balanced). */
#include <stdio.h>
int main(void) { long n; scanf("%ld", &n); printf("0 %ld\n", n); }
