import sys

input()
print("? 500", flush=True)
input()
sys.exit(3)
