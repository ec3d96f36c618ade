# The verdict matrix's program in Python (see tests/problems/README.md).
import os
import signal
import sys
import time

mode, *args = sys.stdin.read().split()
a, b = (int(x) for x in (args + ["0", "0"])[:2])
if mode == "sum":
    print(a + b)
elif mode == "wrong":
    print(a + b + 1)
elif mode == "trailing":
    print(f"{a + b}   \n\n")
elif mode == "spin":
    while True:
        pass
elif mode == "threads":  # the GIL: processes burn in parallel, threads would not
    for _ in range(3):
        if os.fork() == 0:
            break
    while True:
        pass
elif mode == "sleep":
    time.sleep(100)
elif mode == "alloc":
    keep = []
    while True:
        keep.append(bytearray(16 << 20))
elif mode == "flood":
    while True:
        sys.stdout.write("flood flood flood flood flood flood flood flood\n")
elif mode == "crash":
    os.kill(os.getpid(), signal.SIGSEGV)
elif mode == "exit":
    sys.exit(4)
