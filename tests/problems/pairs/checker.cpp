// Checker for "pairs" (testlib exit codes, without testlib): the output must be two
// non-negative integers a b with a + b = N. Balanced answers (|a - b| <= 1) score
// fully; other valid answers get half (exit 7, "0.5" on stderr's first line).
#include <cstdio>
#include <cstdlib>

int main(int argc, char **argv) {
    if (argc != 4) return 3;
    FILE *in = fopen(argv[1], "r"), *out = fopen(argv[2], "r");
    long n, a, b;
    char extra;
    if (!in || fscanf(in, "%ld", &n) != 1) { fputs("bad input file\n", stderr); return 3; }
    if (!out || fscanf(out, "%ld %ld", &a, &b) != 2) { fputs("expected two integers\n", stderr); return 2; }
    if (fscanf(out, " %c", &extra) == 1) { fputs("extra output after the pair\n", stderr); return 2; }
    if (a < 0 || b < 0 || a + b != n) { fprintf(stderr, "%ld + %ld != %ld\n", a, b, n); return 1; }
    if (labs(a - b) > 1) { fprintf(stderr, "0.5 valid but unbalanced: %ld %ld\n", a, b); return 7; }
    fprintf(stderr, "ok %ld %ld\n", a, b);
    return 0;
}
