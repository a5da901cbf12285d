package herd_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

// TestDeviceCursor_Signature: a cursor is taken only as the key's holder
// made it. Editing any part of it, or bringing one signed with another key,
// is EINVALIDCURSOR.
func TestDeviceCursor_Signature(t *testing.T) {
	q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "name"}, Filters: []herd.DeviceFilter{{Field: "online", Op: "eq", Values: []any{true}}}}
	cursor := q.EncodeCursor(testKey, &herd.Device{ID: 9, Name: "pump 7"}, 120, false)
	i := strings.LastIndexByte(cursor, '.')
	payload, mac := cursor[:i], cursor[i+1:]
	// resign re-encodes an edited body and keeps the cursor's signature, as
	// a client that edits a cursor must.
	resign := func(edit func([]byte) []byte) string {
		return base64.RawURLEncoding.EncodeToString(edit(cursorPayload(t, cursor))) + "." + mac
	}
	t.Run("OK", func(t *testing.T) {
		c, err := q.DecodeCursor(testKey, cursor)
		if err != nil || c.Count != 120 || c.ID != 9 || c.Value != "pump 7" {
			t.Fatalf("got %+v, %v", c, err)
		}
	})
	desc := q
	desc.Sort.Desc = true
	otherKey := herd.CursorKey(bytes.Repeat([]byte{1}, herd.CursorKeySize))
	for name, s := range map[string]string{
		"ErrCountEdited":     resign(func(b []byte) []byte { return bytes.Replace(b, []byte(`"c":120`), []byte(`"c":9999`), 1) }),
		"ErrCappedAdded":     resign(func(b []byte) []byte { return bytes.Replace(b, []byte(`"c":120`), []byte(`"c":120,"cc":true`), 1) }),
		"ErrPositionEdited":  resign(func(b []byte) []byte { return bytes.Replace(b, []byte(`pump 7`), []byte(`pump 1`), 1) }),
		"ErrSortEdited":      strings.Split(desc.EncodeCursor(testKey, &herd.Device{ID: 9, Name: "pump 7"}, 120, false), ".")[0] + "." + mac,
		"ErrSignatureEdited": payload + "." + flip(mac),
		// The unused low bits of the signature's last character: a lenient
		// decoder reads the same bytes, so only a strict one refuses it.
		"ErrSignatureUnusedBits": payload + "." + mac[:len(mac)-1] + base64Flip(mac[len(mac)-1]),
		"ErrSignatureGone":       payload,
		"ErrSignatureEmpty":      payload + ".",
		"ErrSignatureShort":      payload + "." + mac[:len(mac)-2],
		"ErrTruncated":           cursor[:len(cursor)-1],
		"ErrTruncatedHalf":       cursor[:len(cursor)/2],
		"ErrOtherKey":            q.EncodeCursor(otherKey, &herd.Device{ID: 9, Name: "pump 7"}, 120, false),
	} {
		t.Run(name, func(t *testing.T) {
			if s == cursor {
				t.Fatal("the edit changed nothing")
			}
			_, err := q.DecodeCursor(testKey, s)
			mustFail(t, err, herd.EINVALIDCURSOR)
		})
	}
	t.Run("ErrNoKey", func(t *testing.T) {
		// A store without a key takes no cursor, not even one signed with
		// the empty key.
		_, err := q.DecodeCursor(nil, q.EncodeCursor(nil, &herd.Device{ID: 9, Name: "pump 7"}, 120, false))
		mustFail(t, err, herd.EINVALIDCURSOR)
	})
}

// base64Flip returns the base64url character whose value differs from c's
// in the lowest bit.
func base64Flip(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return string(alphabet[strings.IndexByte(alphabet, c)^1])
}

// flip changes the first character of a base64 text to another.
func flip(s string) string {
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

// TestCursorKey_For: a cursor signed for one scope is taken in that scope
// only: another tenant, or other covering paths, refuse it.
func TestCursorKey_For(t *testing.T) {
	q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}}
	scope := herd.Scope{TenantID: 1, Paths: []string{"/1/2/", "/1/5/"}}
	cursor := q.EncodeCursor(testKey.For(scope), &herd.Device{ID: 9}, 120, false)
	if c, err := q.DecodeCursor(testKey.For(herd.Scope{TenantID: 1, Paths: []string{"/1/2/", "/1/5/"}}), cursor); err != nil || c.Count != 120 {
		t.Fatalf("the same scope: %+v, %v", c, err)
	}
	for name, other := range map[string]herd.Scope{
		"ErrOtherTenant": {TenantID: 2, Paths: scope.Paths},
		"ErrFewerPaths":  {TenantID: 1, Paths: []string{"/1/2/"}},
		"ErrOtherPaths":  {TenantID: 1, Paths: []string{"/1/2/", "/1/6/"}},
		"ErrJoinedPaths": {TenantID: 1, Paths: []string{"/1/2//1/5/"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := q.DecodeCursor(testKey.For(other), cursor)
			mustFail(t, err, herd.EINVALIDCURSOR)
		})
	}
	if len(herd.CursorKey(nil).For(scope)) != 0 {
		t.Fatal("a store without a key got a key for a scope")
	}
}
