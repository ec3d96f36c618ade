#include <iostream>
#include <string>
int main() {
    int low = 1, high;
    std::cin >> high;
    while (low < high) {
        int mid = (low + high + 1) / 2;
        std::cout << "? " << mid << std::endl;
        std::string reply;
        std::cin >> reply;
        if (reply == "=") { low = high = mid; }
        else if (reply == "<") high = mid - 1;
        else low = mid;
    }
    std::cout << "! " << low << std::endl;
}
