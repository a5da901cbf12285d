package stream_test

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/sqldb"
)

// TestStream_Ticket: a stream opened with a ticket, as a browser opens it,
// is the stream of the ticket's token: hints within its grants only, and
// closed with 1008 once the token is deleted.
func TestStream_Ticket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	base := strings.TrimSuffix(strings.Replace(e.url, "ws://", "http://", 1), "/v1/stream")
	tk, err := httpapi.NewClient(base, e.bob).CreateTicket(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, tk.URL, "", nil)
	e.device(t, e.outside)
	d := e.device(t, e.inside)
	if hs := c.hints(1); hs[0].SubjectID != d.ID {
		t.Fatalf("first hint %+v, want device %d inside bob's grants", hs[0], d.ID)
	}
	bob := asUser(t, e, e.bob)
	if err := sqldb.NewUserService(e.db).DeleteToken(e.super, herd.ActorFromContext(bob).TokenID); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.ws.Read(context.Background())
	var ce websocket.CloseError
	if !asClose(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "token revoked" {
		t.Fatalf("after the token's delete: %v, want 1008 token revoked", err)
	}
}
