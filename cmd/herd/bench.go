package main

import (
	"context"
	"errors"
)

// runBench runs `herd bench`.
func runBench(ctx context.Context, args []string) error {
	return errors.New("bench: not implemented yet")
}
