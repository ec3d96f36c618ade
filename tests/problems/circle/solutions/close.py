# 8 significant digits: relative error below 1e-7, absolute error large for big areas.
import math

r = float(input())
print(f"{math.pi * r * r:.8g}")
