package main

import (
	"context"
	"errors"
	"io"
)

// runExport (herd export readings: a scope's readings to a file) is not built yet.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
