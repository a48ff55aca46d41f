// A tiny HTTP-less program: prints a greeting and the Go version it was built with.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	name := "world"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	fmt.Printf("hello, %s (built with %s)\n", name, runtime.Version())
}
