package natsbus

import (
	"context"
	"time"
)

// RestartPause is how long Keep waits before it starts a reader again.
const RestartPause = time.Second

// Keep runs a reader of the bus (a Tail or a Consume) until ctx ends. A
// reader stops unasked when the bus fails or its consumer is deleted;
// Keep logs that and starts it again after RestartPause, never in a spin.
// Events wait in the stream meanwhile.
func (b *Bus) Keep(ctx context.Context, what string, run func(context.Context) error) {
	for ctx.Err() == nil {
		err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		b.Logger.Warn(what+" stopped; starting it again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(RestartPause):
		}
	}
}
