package herd_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

// TestListCursor: a list cursor gives back its position to the key, kind
// and bind it was made for, and to nothing else.
func TestListCursor(t *testing.T) {
	pos := herd.ListPosition{Key: "Øst/nord", ID: 42}
	c := herd.EncodeListCursor(testKey, "children", "n=7", pos)
	got, err := herd.DecodeListCursor(testKey, "children", "n=7", c)
	if err != nil || got != pos {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := herd.ParseListParams(url.Values{"cursor": {c}}); err != nil {
		t.Fatalf("a cursor the store made does not parse: %v", err)
	}
	other := herd.CursorKey(strings.Repeat("k", herd.CursorKeySize))
	i := strings.LastIndexByte(c, '.')
	for name, tc := range map[string]struct {
		key        herd.CursorKey
		kind, bind string
		cursor     string
	}{
		"other key":  {other, "children", "n=7", c},
		"other kind": {testKey, "users", "n=7", c},
		"other bind": {testKey, "children", "n=8", c},
		"edited":     {testKey, "children", "n=7", "x" + c},
		"no mac":     {testKey, "children", "n=7", c[:i]},
		"no key":     {nil, "children", "n=7", c},
		"too long":   {testKey, "children", "n=7", strings.Repeat("a", 2000) + c},
	} {
		if _, err := herd.DecodeListCursor(tc.key, tc.kind, tc.bind, tc.cursor); herd.ErrorCode(err) != herd.EINVALIDCURSOR {
			t.Errorf("%s: got %v, want %s", name, err, herd.EINVALIDCURSOR)
		}
	}
}

// TestParseLists: the list parameters, each refused with its name.
func TestParseLists(t *testing.T) {
	for _, tc := range []struct {
		query, code, says string
		parse             func(url.Values) error
	}{
		{"limit=0", herd.EINVALIDLIMIT, "limit", parseList},
		{"limit=1001", herd.EINVALIDLIMIT, "limit", parseList},
		{"limit=ten", herd.EINVALIDLIMIT, "limit", parseList},
		{"cursor=a%20b", herd.EINVALIDCURSOR, "cursor", parseList},
		{"sort=name", herd.EINVALID, "sort", parseList},
		{"limit=1&limit=2", herd.EINVALID, "limit", parseList},
		{"tenant_id=x", herd.EINVALID, "tenant_id", func(v url.Values) error { _, err := herd.ParseUserListQuery(v); return err }},
		{"node_id=0", herd.EINVALID, "node_id", func(v url.Values) error { _, err := herd.ParseUserListQuery(v); return err }},
		{"", herd.EINVALID, "node_id", func(v url.Values) error { _, _, err := herd.ParseGrantListQuery(v); return err }},
		{"q=ab", herd.EINVALID, "q", parseSearch},
		{"q=%20%20abc%20", "", "", parseSearch},
		{"q=%C3%98st", "", "", parseSearch}, // three characters, four bytes
		{"q=" + strings.Repeat("x", herd.MaxNameLen+1), herd.EINVALID, "q", parseSearch},
	} {
		v, _ := url.ParseQuery(tc.query)
		err := tc.parse(v)
		if herd.ErrorCode(err) != tc.code && !(tc.code == "" && err == nil) {
			t.Errorf("%q: got %v, want %q", tc.query, err, tc.code)
		} else if err != nil && !strings.Contains(herd.ErrorMessage(err), tc.says) {
			t.Errorf("%q: message %q does not name %q", tc.query, herd.ErrorMessage(err), tc.says)
		}
	}
	q, err := herd.ParseNodeSearch(url.Values{"q": {"  Oslo "}, "tenant_id": {"3"}, "limit": {"5"}})
	if err != nil || q.Q != "Oslo" || q.TenantID != 3 || q.Limit != 5 {
		t.Fatalf("search %+v, %v", q, err)
	}
	if back, err := herd.ParseNodeSearch(q.Values()); err != nil || back != q {
		t.Fatalf("search round trip %+v, %v", back, err)
	}
	u := herd.UserListQuery{TenantID: 2, NodeID: 9, ListParams: herd.ListParams{Limit: 7, Cursor: "abc.def"}}
	if back, err := herd.ParseUserListQuery(u.Values()); err != nil || back != u {
		t.Fatalf("users round trip %+v, %v", back, err)
	}
	if !herd.NameMatches("ØSTFOLD nord", "østf") || herd.NameMatches("Bergen", "oslo") {
		t.Fatal("NameMatches folds case wrongly")
	}
}

func parseList(v url.Values) error {
	_, err := herd.ParseListQuery(v)
	return err
}

func parseSearch(v url.Values) error {
	_, err := herd.ParseNodeSearch(v)
	return err
}
