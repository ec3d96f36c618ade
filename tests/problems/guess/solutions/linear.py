# Asks 1, 2, 3, ...: too many questions for most secrets.
n = int(input())
for y in range(1, n + 1):
    print("?", y, flush=True)
    if input() == "=":
        print("!", y, flush=True)
        break
