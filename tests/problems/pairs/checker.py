# The same checker in Python (a checker program needs no compile).
import sys
from pathlib import Path

n = int(Path(sys.argv[1]).read_text())
words = Path(sys.argv[2]).read_text().split()
if len(words) != 2 or not all(w.isdigit() for w in words):
    print("expected two non-negative integers", file=sys.stderr)
    sys.exit(2)
a, b = map(int, words)
if a + b != n:
    print(f"{a} + {b} != {n}", file=sys.stderr)
    sys.exit(1)
if abs(a - b) > 1:
    print(f"0.5 valid but unbalanced: {a} {b}", file=sys.stderr)
    sys.exit(7)
print(f"ok {a} {b}", file=sys.stderr)
