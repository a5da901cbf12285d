package appsocket_test

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd/httpapi"
)

// TestAppSocket_Ticket: an app in a browser opens the socket with a ticket
// of its token (the ticket's url names the stream; the same ticket opens
// the apps socket) and gets the events within its grants; the ticket of a
// super-admin's token opens no apps socket, as the token does not.
func TestAppSocket_Ticket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	base := strings.TrimSuffix(strings.Replace(e.url, "ws://", "http://", 1), "/v1/apps/socket")
	tk, err := httpapi.NewClient(base, e.bob).CreateTicket(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(context.Background(), e.url+"?ticket="+tk.Secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, ws: ws}
	t.Cleanup(func() { ws.CloseNow() })
	if f := c.read(); f.Type != "hello" {
		t.Fatalf("first frame %+v, want hello", f)
	}
	e.device(t, e.outside)
	d := e.device(t, e.inside)
	if f := c.read(); f.Type != "event" || f.Event.SubjectID != d.ID {
		t.Fatalf("frame %+v, want the event of device %d inside bob's grants", f, d.ID)
	}

	tk, err = httpapi.NewClient(base, adminSecret).CreateTicket(context.Background(), e.tenant.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, resp, err := websocket.Dial(context.Background(), e.url+"?ticket="+tk.Secret, nil)
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("super-admin's ticket: %v %v, want 403", resp, err)
	}
}
