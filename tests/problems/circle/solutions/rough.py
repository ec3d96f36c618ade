# 4 significant digits: off by more than 1e-6, absolutely and relatively.
import math

r = float(input())
print(f"{math.pi * r * r:.4g}")
