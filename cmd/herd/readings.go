package main

import (
	"context"
	"errors"
	"io"
)

// runReadings (herd readings: one device's history) is not built yet.
func runReadings(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not built yet")
}
