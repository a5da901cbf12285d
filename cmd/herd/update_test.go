package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// TestObjects_Update: herd devices|nodes|users|tenants update changes the
// fields given and only those, honours --if-version, and a disabled
// user's token stops working.
func TestObjects_Update(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	ctx := context.Background()
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	ten := &herd.Tenant{Name: "objects"}
	if err := api.CreateTenant(ctx, ten); err != nil {
		t.Fatal(err)
	}
	d := &herd.Device{NodeID: ten.RootNodeID, Key: "cli-update-1", Model: "th-200"}
	if err := api.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	u := &herd.User{TenantID: ten.ID, Name: "una"}
	if err := api.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	tok, err := api.CreateToken(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	herdRun := func(args ...string) (string, error) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append(args, "--api", m.HTTPServer.URL(), "--token", testAdminToken)
		err := run(ctx, args, &stdout, &stderr)
		return stdout.String(), err
	}
	id := strconv.FormatInt(d.ID, 10)
	t.Run("Device", func(t *testing.T) {
		out, err := herdRun("devices", "update", id, "--name", "Boiler", "--if-version", "1")
		if err != nil || out != "device "+id+" is at version 2 (name given)\n" {
			t.Fatalf("output %q, err %v", out, err)
		}
		got, err := api.FindDeviceByID(ctx, d.ID)
		if err != nil || got.Name != "Boiler" || got.Model != "th-200" || got.Version != 2 {
			t.Fatalf("device %+v, %v", got, err)
		}
		// Flags first, the id last, as the flag package likes it.
		out, err = herdRun("devices", "update", "--model", "", "--json", id)
		var back herd.Device
		if err != nil || json.Unmarshal([]byte(out), &back) != nil || back.Model != "" || back.Name != "Boiler" || back.Version != 3 {
			t.Fatalf("output %q, err %v", out, err)
		}
	})
	t.Run("DeviceLabels", func(t *testing.T) {
		out, err := herdRun("devices", "update", id, "--label", "ring=canary", "--label", "floor=3", "--if-version", "3")
		if err != nil || out != "device "+id+" is at version 4 (labels given)\n" {
			t.Fatalf("output %q, err %v", out, err)
		}
		if _, err := herdRun("devices", "update", id, "--unlabel", "floor", "--label", "ring=beta"); err != nil {
			t.Fatal(err)
		}
		got, err := api.FindDeviceByID(ctx, d.ID)
		if err != nil || len(got.Labels) != 1 || got.Labels["ring"] != "beta" || got.Version != 5 {
			t.Fatalf("device %+v, %v", got, err)
		}
		if _, err := herdRun("devices", "update", id, "--label", "ring"); err == nil || !strings.Contains(err.Error(), "not KEY=VALUE") {
			t.Fatalf("--label without =: %v", err)
		}
		if _, err := herdRun("devices", "update", id, "--label", "Ring=x"); herd.ErrorCode(err) != herd.EINVALID {
			t.Fatalf("--label with a bad key: %v, want %s", err, herd.EINVALID)
		}
	})
	t.Run("ErrStale", func(t *testing.T) {
		_, err := herdRun("devices", "update", id, "--name", "late", "--if-version", "1")
		if herd.ErrorCode(err) != herd.EPRECONDITION || !strings.Contains(err.Error(), "devices update") {
			t.Fatalf("err %v, want %s", err, herd.EPRECONDITION)
		}
	})
	t.Run("NodeAndTenant", func(t *testing.T) {
		if _, err := herdRun("nodes", "update", strconv.FormatInt(ten.RootNodeID, 10), "--kind", "org"); err != nil {
			t.Fatal(err)
		}
		if _, err := herdRun("tenants", "update", strconv.FormatInt(ten.ID, 10), "--name", "Objects AS"); err != nil {
			t.Fatal(err)
		}
		n, err := api.FindNodeByID(ctx, ten.RootNodeID)
		if err != nil || n.Kind != "org" || n.Name != "objects" {
			t.Fatalf("root node %+v, %v", n, err)
		}
		got, err := api.FindTenantByID(ctx, ten.ID)
		if err != nil || got.Name != "Objects AS" || got.Version != 2 {
			t.Fatalf("tenant %+v, %v", got, err)
		}
	})
	t.Run("UserPassword", func(t *testing.T) {
		// The password comes from standard input, never the command line.
		stdin = strings.NewReader("una's first passphrase\n")
		defer func() { stdin = os.Stdin }()
		uid := strconv.FormatInt(u.ID, 10)
		out, err := herdRun("users", "password", uid)
		if err != nil || !strings.Contains(out, "user "+uid+" has a new password") {
			t.Fatalf("output %q, err %v", out, err)
		}
		body, _ := json.Marshal(map[string]string{"tenant_id": strconv.FormatInt(ten.ID, 10), "name": "UNA", "password": "una's first passphrase"})
		req, _ := http.NewRequest("POST", m.HTTPServer.URL()+"/v1/sessions", bytes.NewReader(body))
		req.Header.Set("Origin", m.HTTPServer.URL())
		req.Header.Set(httpapi.HeaderHerdRequest, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("sign-in with the password set: %d", resp.StatusCode)
		}
		// Too short, and none at all: each an error, nothing set.
		stdin = strings.NewReader("short\n")
		if _, err := herdRun("users", "password", uid); herd.ErrorCode(err) != herd.EINVALID {
			t.Fatalf("a short password: %v", err)
		}
		stdin = strings.NewReader("")
		if _, err := herdRun("users", "password", uid); err == nil || !strings.Contains(err.Error(), "no password on standard input") {
			t.Fatalf("no password: %v", err)
		}
		// A link: printed once, it sets a password without signing in.
		out, err = herdRun("users", "password-link", uid)
		secret, _, _ := strings.Cut(out, "\n")
		if err != nil || !herd.IsPasswordLinkSecret(secret) {
			t.Fatalf("output %q, err %v", out, err)
		}
	})
	t.Run("UserDisabled", func(t *testing.T) {
		uid := strconv.FormatInt(u.ID, 10)
		if _, err := herdRun("users", "update", uid, "--disabled"); err != nil {
			t.Fatal(err)
		}
		_, err := api.WithToken(tok.Secret).FindUserByID(ctx, u.ID)
		if herd.ErrorCode(err) != herd.EUNAUTHORIZED {
			t.Fatalf("a disabled user's token: %v, want %s", err, herd.EUNAUTHORIZED)
		}
		if _, err := herdRun("users", "update", uid, "--disabled=false"); err != nil {
			t.Fatal(err)
		}
		if _, err := api.WithToken(tok.Secret).FindUserByID(ctx, u.ID); err != nil {
			t.Fatalf("enabled again: %v", err)
		}
	})
	t.Run("ErrUsage", func(t *testing.T) {
		for _, tt := range []struct {
			args []string
			want string
		}{
			{[]string{"devices", "update", id}, "changes nothing without --name or --model or --label or --unlabel"},
			{[]string{"devices", "update", "x", "--name", "y"}, `needs the id of a device`},
			{[]string{"devices", "update", id, "--key", "k"}, "flag provided but not defined: -key"},
			{[]string{"nodes"}, "takes a subcommand: update"},
		} {
			var ue *usageError
			_, err := herdRun(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%q: err %v, want %q", tt.args, err, tt.want)
			} else if !errors.As(err, &ue) && !strings.Contains(tt.want, "not defined") {
				t.Errorf("%q: %v is not a usage error (exit 2)", tt.args, err)
			}
		}
	})
}
