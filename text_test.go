package herd_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/configschema"
)

// storable is the rule written a second way: text every store holds.
func storable(s string, max int) bool {
	return utf8.ValidString(s) && !strings.Contains(s, "\x00") && len(s) <= max
}

func TestCheckText(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // "" when accepted, else a part of the message
	}{
		{"pump 7", ""},
		{"ø東🐄", ""},
		{"", ""},
		{strings.Repeat("x", 10), ""},
		{strings.Repeat("x", 11), "longer than 10 bytes"},
		{"a\x00b", "NUL"},
		{"a\xffb", "not valid UTF-8"},
		{"\xed\xa0\x80", "not valid UTF-8"}, // a surrogate, which UTF-8 may not encode
	} {
		err := herd.CheckText("model", tt.in, 10)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.in, err)
			}
			continue
		}
		if herd.ErrorCode(err) != herd.EINVALID || !strings.Contains(herd.ErrorMessage(err), tt.want) || !strings.HasPrefix(herd.ErrorMessage(err), "model ") {
			t.Errorf("%q: got %v, want EINVALID naming model and saying %q", tt.in, err, tt.want)
		}
	}
}

// FuzzValidateText: whatever the text fields of a create hold, Validate
// either refuses it as EINVALID or accepts only text that every store can
// hold within the field's limit.
func FuzzValidateText(f *testing.F) {
	f.Add("north", "region", "pump-7", "th-200", "https://example.com/h", "reboot")
	f.Add("a\x00b", "k\xff", "key\x00", strings.Repeat("m", 101), "https://example.com/\xff", "c\x00")
	f.Add(" \t", "", "a/b", "ø", "http://[::1]:80/", "a.b-c_d")
	f.Fuzz(func(t *testing.T, name, kind, key, model, hook, command string) {
		check := func(what string, err error, fields map[string]string, limits map[string]int) {
			t.Helper()
			if err != nil {
				if herd.ErrorCode(err) != herd.EINVALID {
					t.Fatalf("%s: code %s: %v", what, herd.ErrorCode(err), err)
				}
				return
			}
			for field, v := range fields {
				if !storable(v, limits[field]) {
					t.Fatalf("%s accepted %s %q, which a store cannot hold", what, field, v)
				}
			}
		}
		tn := &herd.Tenant{Name: name}
		check("tenant", tn.Validate(), map[string]string{"name": tn.Name}, map[string]int{"name": herd.MaxNameLen})
		n := &herd.Node{Name: name, Kind: kind}
		check("node", n.Validate(), map[string]string{"name": n.Name, "kind": n.Kind}, map[string]int{"name": herd.MaxNameLen, "kind": herd.MaxKindLen})
		u := &herd.User{TenantID: 1, Name: name}
		check("user", u.Validate(), map[string]string{"name": u.Name}, map[string]int{"name": herd.MaxNameLen})
		d := &herd.Device{NodeID: 1, Key: key, Name: name, Model: model, Firmware: kind}
		check("device", d.Validate(), map[string]string{"key": d.Key, "name": d.Name, "model": d.Model, "firmware": d.Firmware},
			map[string]int{"key": herd.MaxDeviceKey, "name": herd.MaxNameLen, "model": herd.MaxModelLen, "firmware": herd.MaxFirmwareLen})
		w := &herd.Webhook{NodeID: 1, URL: hook, EventTypes: []string{kind}}
		check("webhook", w.Validate(), map[string]string{"url": w.URL, "event_types[0]": kind}, map[string]int{"url": herd.MaxURLLen, "event_types[0]": 64})
		c := &herd.Command{DeviceID: 1, Name: command, Args: []byte(`{"v":"` + strings.NewReplacer(`"`, "", `\`, "").Replace(model) + `"}`), IdempotencyKey: key}
		check("command", c.Validate(), map[string]string{"name": c.Name, "args": string(c.Args), "idempotency key": c.IdempotencyKey},
			map[string]int{"name": 64, "args": herd.MaxCommandArgs, "idempotency key": herd.MaxIdempotencyKeyLen})
		p := &herd.ConfigProfile{TenantID: 1, Name: name, Schema: []byte(`{"description":"` + strings.NewReplacer(`"`, "", `\`, "").Replace(model) + `"}`)}
		check("config profile", p.Validate(), map[string]string{"name": p.Name, "schema": string(p.Schema)}, map[string]int{"name": herd.MaxNameLen, "schema": herd.MaxConfigSchema})
		doc := []byte(`{"v":"` + strings.NewReplacer(`"`, "", `\`, "").Replace(kind) + `"}`)
		check("config document", configschema.Validate([]byte(`{}`), doc), map[string]string{"document": string(doc)}, map[string]int{"document": herd.MaxConfigDocument})
		fw := &herd.Firmware{TenantID: 1, Model: model, Version: kind, URL: hook, SHA256: strings.Repeat("a", 64), Size: 1}
		check("firmware", fw.Validate(), map[string]string{"model": fw.Model, "version": fw.Version, "url": fw.URL},
			map[string]int{"model": herd.MaxModelLen, "version": herd.MaxFirmwareLen, "url": herd.MaxURLLen})
	})
}
