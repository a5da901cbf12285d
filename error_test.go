package herd_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

func TestError(t *testing.T) {
	t.Run("WrapKeepsCause", func(t *testing.T) {
		err := fmt.Errorf("find device: %w", herd.WrapError(context.DeadlineExceeded, herd.ENOTFOUND, "device %d not found", 7))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("errors.Is does not see the cause through %v", err)
		}
		var pe *fs.PathError
		wrapped := herd.WrapError(&fs.PathError{Op: "open", Path: "/x", Err: fs.ErrNotExist}, herd.EINVALID, "bad file")
		if !errors.As(wrapped, &pe) || !errors.Is(wrapped, fs.ErrNotExist) {
			t.Fatalf("errors.As does not see the cause through %v", wrapped)
		}
		if got := herd.ErrorCode(err); got != herd.ENOTFOUND {
			t.Fatalf("code %q, want %q", got, herd.ENOTFOUND)
		}
		// The caller sees the message, never the cause.
		if got := herd.ErrorMessage(err); got != "device 7 not found" {
			t.Fatalf("message %q", got)
		}
		if !strings.Contains(err.Error(), context.DeadlineExceeded.Error()) {
			t.Fatalf("Error() %q drops the cause, which the logs need", err.Error())
		}
	})
	t.Run("NoCause", func(t *testing.T) {
		err := herd.Errorf(herd.EINVALID, "name is required")
		if errors.Unwrap(err) != nil {
			t.Fatalf("an error without a cause unwraps to %v", errors.Unwrap(err))
		}
		if err.Error() != "herd error: code=invalid_request message=name is required" {
			t.Fatalf("Error() %q", err.Error())
		}
	})
	t.Run("OuterCodeWins", func(t *testing.T) {
		err := herd.WrapError(herd.Errorf(herd.ECONFLICT, "inner"), herd.EINVALID, "outer")
		if herd.ErrorCode(err) != herd.EINVALID || herd.ErrorMessage(err) != "outer" {
			t.Fatalf("got %s %q", herd.ErrorCode(err), herd.ErrorMessage(err))
		}
	})
}
