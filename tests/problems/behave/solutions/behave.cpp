// The verdict matrix's program in C++ (see tests/problems/README.md).
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

static void burn() {
    volatile unsigned long n = 0;
    for (;;) n++;
}

int main() {
    std::string mode;
    long a = 0, b = 0;
    std::cin >> mode >> a >> b;
    if (mode == "sum") std::cout << a + b << "\n";
    else if (mode == "wrong") std::cout << a + b + 1 << "\n";
    else if (mode == "trailing") std::cout << a + b << "   \n\n\n";
    else if (mode == "spin") burn();
    else if (mode == "threads") {
        std::vector<std::thread> threads;
        for (int i = 0; i < 4; i++) threads.emplace_back(burn);
        threads[0].join();
    } else if (mode == "sleep") std::this_thread::sleep_for(std::chrono::seconds(100));
    else if (mode == "alloc") {
        std::vector<std::vector<char>> keep;
        for (;;) keep.emplace_back(16 << 20, 1);
    } else if (mode == "flood") {
        for (;;) std::cout << "flood flood flood flood flood flood flood flood\n";
    } else if (mode == "crash") std::abort();
    else if (mode == "exit") return 4;
}
