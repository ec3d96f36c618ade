// The verdict matrix's program in Go (see tests/problems/README.md).
package main

import (
	"bufio"
	"fmt"
	"os"
	"syscall"
	"time"
)

var sink uint64

func burn() {
	for {
		sink++
	}
}

func main() {
	var mode string
	var a, b int64
	in := bufio.NewReader(os.Stdin)
	fmt.Fscan(in, &mode, &a, &b)
	switch mode {
	case "sum":
		fmt.Println(a + b)
	case "wrong":
		fmt.Println(a + b + 1)
	case "trailing":
		fmt.Printf("%d   \n\n\n", a+b)
	case "spin":
		burn()
	case "threads":
		for i := 0; i < 3; i++ {
			go burn()
		}
		burn()
	case "sleep":
		time.Sleep(100 * time.Second)
	case "alloc":
		var keep [][]byte
		for {
			chunk := make([]byte, 16<<20)
			for i := range chunk {
				chunk[i] = 1
			}
			keep = append(keep, chunk)
		}
	case "flood":
		out := bufio.NewWriter(os.Stdout)
		for {
			out.WriteString("flood flood flood flood flood flood flood flood\n")
		}
	case "crash": // the Go runtime turns SIGSEGV and SIGABRT into exit 2; SIGKILL is a signal
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Second)
	case "exit":
		os.Exit(4)
	}
}
