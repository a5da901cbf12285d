package stream_test

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
	"github.com/herd-iot/herd/stream"
)

// TestStream_DisabledUserClosed: disabling a user closes its open streams
// with 1008 at once, on the user.updated event, not at the next periodic
// reauthentication (a minute away here).
func TestStream_DisabledUserClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(h *stream.Hub) { h.Reauth = time.Hour })
	c := dial(t, e.url, e.bob, nil)
	d := e.device(t, e.inside)
	if hs := c.hints(1); hs[0].SubjectID != d.ID {
		t.Fatalf("first hint %+v, want device %d", hs[0], d.ID)
	}
	bob := herd.ActorFromContext(asUser(t, e, e.bob))
	if _, err := sqldb.NewUserService(e.db).UpdateUser(e.super, bob.UserID, herd.UserUpdate{Disabled: new(true)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _, err := c.ws.Read(ctx)
	var ce websocket.CloseError
	if !asClose(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "token revoked" {
		t.Fatalf("after the user was disabled: %v, want 1008 token revoked", err)
	}
}
