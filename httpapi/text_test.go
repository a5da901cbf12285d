package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// rowCounts counts the rows of every table a create writes to, so a test can
// tell that a refused request left nothing behind.
func rowCounts(t *testing.T, db *sqldb.DB) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"tenants", "nodes", "users", "tokens", "devices", "device_credentials", "grants", "webhooks", "commands", "events", "config_profiles", "config_versions", "firmware", "device_configs", "rollouts", "rollout_members"} {
		fmt.Fprintf(&b, "%s=%d ", table, countRows(t, db, table))
	}
	return b.String()
}

// countRows counts a table's rows, every tenant's.
func countRows(t *testing.T, db *sqldb.DB, table string) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTextFields: every text field of every create takes only what every
// store can hold. A NUL byte, bytes that are not UTF-8 and a value over the
// field's limit are each a 400 naming the field, on SQLite (which would
// store them) and on PostgreSQL (which would answer 500), and nothing is
// written.
func TestTextFields(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) {
			s.WebhookService = sqldb.NewWebhookService(db)
			s.CommandService = sqldb.NewCommandService(db)
			s.Idempotency = sqldb.NewIdempotencyService(db)
		})
		f := e.mustCreateFleet()
		dev := f.devices["n1-a"]
		long := func(n int) string { return strings.Repeat("x", n+1) }
		// Each body holds one %s, the value under test, inside a JSON
		// string; NUL travels as the escape \u0000, which decodes to a NUL
		// byte, and invalid UTF-8 as the raw byte 0xFF.
		for _, tc := range []struct {
			name, path, body string
			field            []string // what the message must name
			long             string   // a value over the limit
			key              bool     // the route requires an Idempotency-Key
		}{
			{"TenantName", "/v1/tenants", `{"name":"t%s"}`, []string{"name"}, long(herd.MaxNameLen), false},
			{"NodeName", "/v1/nodes", `{"parent_id":"` + fmt.Sprint(f.n1.ID) + `","kind":"room","name":"r%s"}`, []string{"name"}, long(herd.MaxNameLen), false},
			{"NodeKind", "/v1/nodes", `{"parent_id":"` + fmt.Sprint(f.n1.ID) + `","kind":"k%s","name":"room"}`, []string{"kind"}, long(herd.MaxKindLen), false},
			{"UserName", "/v1/users", `{"tenant_id":"` + fmt.Sprint(f.tenant.ID) + `","name":"u%s"}`, []string{"name"}, long(herd.MaxNameLen), false},
			{"DeviceKey", "/v1/devices", `{"node_id":"` + fmt.Sprint(f.n1.ID) + `","key":"k%s"}`, []string{"key"}, long(herd.MaxDeviceKey), false},
			{"DeviceName", "/v1/devices", `{"node_id":"` + fmt.Sprint(f.n1.ID) + `","key":"text-1","name":"n%s"}`, []string{"name"}, long(herd.MaxNameLen), false},
			{"DeviceModel", "/v1/devices", `{"node_id":"` + fmt.Sprint(f.n1.ID) + `","key":"text-1","model":"m%s"}`, []string{"model"}, long(herd.MaxModelLen), false},
			{"DeviceFirmware", "/v1/devices", `{"node_id":"` + fmt.Sprint(f.n1.ID) + `","key":"text-1","firmware":"f%s"}`, []string{"firmware"}, long(herd.MaxFirmwareLen), false},
			{"BatchDeviceKey", "/v1/devices/batch", `{"devices":[{"node_id":"` + fmt.Sprint(f.n1.ID) + `","key":"text-1"},{"node_id":"` + fmt.Sprint(f.n1.ID) + `","key":"k%s"}]}`, []string{"devices[1]", "key"}, long(herd.MaxDeviceKey), false},
			{"WebhookURL", "/v1/webhooks", `{"node_id":"` + fmt.Sprint(f.n1.ID) + `","event_types":["*"],"url":"https://example.com/%s"}`, []string{"url"}, long(herd.MaxURLLen), false},
			{"WebhookEventType", "/v1/webhooks", `{"node_id":"` + fmt.Sprint(f.n1.ID) + `","event_types":["device.online","device%s"],"url":"https://example.com/"}`, []string{"event_types[1]"}, long(64), false},
			{"CommandName", fmt.Sprintf("/v1/devices/%d/commands", dev.ID), `{"name":"c%s"}`, []string{"name"}, long(64), true},
		} {
			for _, v := range []struct{ name, value string }{
				{"NUL", `a\u0000b`},
				{"NotUTF8", "a\xffb"},
				{"TooLong", tc.long},
			} {
				t.Run(tc.name+"/"+v.name, func(t *testing.T) {
					before := rowCounts(t, db)
					body := fmt.Sprintf(tc.body, v.value)
					var r response
					if tc.key {
						r = e.doKey("POST", tc.path, adminSecret, "text-"+tc.name+"-"+v.name, body)
					} else {
						r = e.do("POST", tc.path, adminSecret, body)
					}
					r.wantError(t, http.StatusBadRequest, herd.EINVALID, tc.field...)
					if after := rowCounts(t, db); after != before {
						t.Fatalf("a refused request wrote: before %s, after %s", before, after)
					}
				})
			}
		}
		t.Run("CommandArgsNotUTF8", func(t *testing.T) {
			before := rowCounts(t, db)
			r := e.doKey("POST", fmt.Sprintf("/v1/devices/%d/commands", dev.ID), adminSecret, "text-args", "{\"name\":\"reboot\",\"args\":{\"note\":\"a\xffb\"}}")
			r.wantError(t, http.StatusBadRequest, herd.EINVALID, "args.note")
			if after := rowCounts(t, db); after != before {
				t.Fatalf("a refused request wrote: before %s, after %s", before, after)
			}
		})
		t.Run("IdempotencyKeyNotUTF8", func(t *testing.T) {
			// A header may carry bytes above 0x7F; the key is stored as text.
			before := rowCounts(t, db)
			r := e.doKey("POST", "/v1/nodes", adminSecret, "key-\xff", `{"parent_id":"`+fmt.Sprint(f.n1.ID)+`","kind":"room","name":"r"}`)
			r.wantError(t, http.StatusBadRequest, herd.EINVALID, httpapi.HeaderIdempotencyKey)
			if after := rowCounts(t, db); after != before {
				t.Fatalf("a refused request wrote: before %s, after %s", before, after)
			}
		})
		t.Run("OK", func(t *testing.T) {
			// Text up to the limits, in any script, is stored as sent.
			name := strings.Repeat("ø", herd.MaxNameLen/2)
			r := e.do("POST", "/v1/nodes", adminSecret, map[string]any{"parent_id": fmt.Sprint(f.n1.ID), "kind": strings.Repeat("k", herd.MaxKindLen), "name": name})
			r.wantStatus(t, http.StatusCreated)
			var n herd.Node
			r.decode(t, &n)
			if n.Name != name {
				t.Fatalf("name %q, want %q", n.Name, name)
			}
		})
	})
}

// FuzzInvalidUTF8Field: whatever bytes sit in one string of a request body,
// the field named for bytes that are not UTF-8 is that string's field.
func FuzzInvalidUTF8Field(f *testing.F) {
	f.Add("a\xffb", uint8(1), "name")
	f.Add("\xc3", uint8(0), "key")
	f.Add("ok", uint8(2), "n\xffame")
	f.Fuzz(func(t *testing.T, value string, at uint8, key string) {
		// Keep the body JSON: no quote, backslash or control byte in the
		// fuzzed parts, which are bytes inside a string.
		for _, s := range []string{value, key} {
			if strings.ContainsAny(s, "\"\\") || strings.IndexFunc(s, func(r rune) bool { return r < 0x20 }) >= 0 {
				return
			}
		}
		i := int(at % 3)
		items := make([]string, 3)
		for j := range items {
			items[j] = `{"node_id":"1","tags":["x",{"y":true}],"key":"k` + fmt.Sprint(j) + `"}`
		}
		items[i] = `{"node_id":"1","tags":[],"` + key + `":"` + value + `"}`
		body := `{"devices":[` + strings.Join(items, ",") + `],"after":"ok"}`
		validKey, validValue := utf8.ValidString(key), utf8.ValidString(value)
		got := httpapi.InvalidUTF8Field([]byte(body))
		switch {
		case !validKey:
			if want := fmt.Sprintf("a field name in devices[%d]", i); got != want {
				t.Fatalf("%q: got %q, want %q", body, got, want)
			}
		case !validValue:
			if want := fmt.Sprintf("devices[%d].%s", i, key); got != want {
				t.Fatalf("%q: got %q, want %q", body, got, want)
			}
		}
	})
}
