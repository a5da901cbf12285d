package main

import (
	"context"
	"errors"
)

// runSeed runs `herd seed`.
func runSeed(ctx context.Context, args []string) error {
	return errors.New("seed: not implemented yet")
}
