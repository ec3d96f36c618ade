low, high = 1, int(input())
while low < high:
    mid = (low + high) // 2
    print("?", mid, flush=True)
    reply = input()
    if reply == "=":
        low = high = mid
    elif reply == "<":
        high = mid - 1
    else:
        low = mid + 1
print("!", low, flush=True)
