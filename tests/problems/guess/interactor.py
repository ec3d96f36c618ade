# Interactor for "guess": the secret X (1..1000) is the test's input. The solution
# asks "? Y" and hears "<" (X < Y), ">" (X > Y) or "="; it ends with "! X".
# At most 12 questions. testlib order: interactor input output answer.
import sys
from pathlib import Path

secret = int(Path(sys.argv[1]).read_text())
print(1000, flush=True)
for asked in range(13):
    line = sys.stdin.readline()
    if not line:
        print("the solution ended without an answer", file=sys.stderr)
        sys.exit(1)
    kind, _, value = line.strip().partition(" ")
    if kind == "!":
        if int(value) == secret:
            print(f"ok after {asked} questions", file=sys.stderr)
            sys.exit(0)
        print(f"wrong answer {value}, the secret was {secret}", file=sys.stderr)
        sys.exit(1)
    if kind != "?" or not value.lstrip("-").isdigit():
        print(f"unexpected line {line.strip()!r}", file=sys.stderr)
        sys.exit(2)
    if asked == 12:
        print("more than 12 questions", file=sys.stderr)
        sys.exit(1)
    guess = int(value)
    print("<" if secret < guess else ">" if secret > guess else "=", flush=True)
