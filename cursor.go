package herd

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

// CursorKey is the secret that authenticates the cursors a store issues.
// A cursor carries state the server trusts on the next page (the first
// page's count, the keyset position), so it is signed: a client may hold
// it and send it back, never make or edit one. The store keeps the key,
// made when it is first opened, so every process on one store takes the
// cursors of every other, and a cursor from another store is refused.
type CursorKey []byte

// CursorKeySize is the length of a generated cursor key, in bytes.
const CursorKeySize = 32

// cursorMACSize is how much of the HMAC-SHA256 a cursor carries: 128 bits,
// which no client can guess, at 22 characters of URL.
const cursorMACSize = 16

// For returns the key that signs the cursors of one scope: the tenant and
// the covering paths a query was answered within. A cursor carries the
// first page's count and a position among that scope's rows, so it means
// something only to a caller who sees the same rows: signed with its
// scope's key, a cursor is refused by a caller of another tenant, or of
// the same tenant with other grants, as one of another store is, and no
// caller can make herd report another scope's count as theirs. The key of
// a store without a key stays empty, and takes no cursor.
func (k CursorKey) For(s Scope) CursorKey {
	if len(k) == 0 {
		return nil
	}
	h := hmac.New(sha256.New, k)
	h.Write([]byte("scope\x00"))
	h.Write([]byte(strconv.FormatInt(s.TenantID, 10)))
	for _, p := range s.Paths {
		// Paths hold digits and slashes only, so a NUL separates them.
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

// sign returns payload with a dot and the MAC of kind and payload. kind
// names what the cursor is for, so a cursor of one list can never be taken
// for one of another even where their payloads would parse.
func (k CursorKey) sign(kind, payload string) string {
	return payload + "." + base64.RawURLEncoding.EncodeToString(k.mac(kind, payload))
}

// verify returns the payload of a signed cursor, and false when the
// signature does not match it (or the key is empty: a store without a key
// takes no cursor at all).
func (k CursorKey) verify(kind, s string) (string, bool) {
	i := strings.LastIndexByte(s, '.')
	if len(k) == 0 || i < 0 {
		return "", false
	}
	// Strict: the last character of 16 bytes in base64 carries 2 bits and
	// 4 unused ones, which a lenient decoder ignores, so four spellings of
	// one signature would pass. A cursor has one spelling.
	mac, err := base64.RawURLEncoding.Strict().DecodeString(s[i+1:])
	if err != nil || len(mac) != cursorMACSize {
		return "", false
	}
	payload := s[:i]
	return payload, hmac.Equal(mac, k.mac(kind, payload))
}

func (k CursorKey) mac(kind, payload string) []byte {
	h := hmac.New(sha256.New, k)
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(payload))
	return h.Sum(nil)[:cursorMACSize]
}
