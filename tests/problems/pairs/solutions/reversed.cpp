// Balanced, larger first: another valid answer that differs from the answer file.
#include <iostream>
int main() { long n; std::cin >> n; std::cout << n - n / 2 << " " << n / 2 << "\n"; }
