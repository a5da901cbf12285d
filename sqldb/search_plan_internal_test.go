package sqldb

import (
	"strings"
	"testing"
)

// TestTrigramQuery: a text is asked of the SQLite index as its trigrams,
// by character (not byte), quotes doubled, at most eight of them for a long
// text and those always its first and its last.
func TestTrigramQuery(t *testing.T) {
	for _, tt := range []struct{ term, want string }{
		{"pum", `"pum"`},
		{"boiler", `"boi" AND "oil" AND "ile" AND "ler"`},
		{"straße", `"str" AND "tra" AND "raß" AND "aße"`},
		{`a"bc`, `"a""b" AND """bc"`},
		{"aaaa", `"aaa"`},
	} {
		if got := trigramQuery(tt.term); got != tt.want {
			t.Errorf("%q: got %s, want %s", tt.term, got, tt.want)
		}
	}
	long := "abcdefghijklmnopqrstuvwxyz"
	got := trigramQuery(long)
	parts := strings.Split(got, " AND ")
	if len(parts) != maxQueryTrigrams || parts[0] != `"abc"` || parts[len(parts)-1] != `"xyz"` {
		t.Errorf("%q: got %s, want %d trigrams from abc to xyz", long, got, maxQueryTrigrams)
	}
}
