#include <stdio.h>
int main(void) { double r; scanf("%lf", &r); printf("area %.12f\n", 3.14159265358979 * r * r); }
