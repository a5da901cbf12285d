package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/herd-iot/herd"
)

// runVersion prints the version of the binary and the Go release that
// built it, which is what a bug report needs.
func runVersion(w io.Writer) error {
	_, err := fmt.Fprintf(w, "herd %s %s %s/%s\n", herd.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
