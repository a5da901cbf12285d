package main

import (
	"context"
	"errors"
	"io"
)

// runSummary (herd summary: the latest state of a scope) is not built yet.
func runSummary(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
