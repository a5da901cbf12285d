package main

import (
	"context"
	"errors"
	"io"
)

// runAggregate (herd aggregate: fleet aggregates over a scope) is not built yet.
func runAggregate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
