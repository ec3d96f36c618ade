/* A broken checker: it dies by SIGSEGV. Its verdict must be IE, never WA. */
int main(void) { volatile int *p = 0; return *p; }
