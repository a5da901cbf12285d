package httpapi

import (
	"strings"
	"testing"

	"github.com/herd-iot/herd"
)

func TestParseIfMatch(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"*", 0, true}, {`"1"`, 1, true}, {`"9007199254740993"`, 9007199254740993, true},
		{`W/"1"`, 0, false}, {`1`, 0, false}, {`"0"`, 0, false}, {`"-1"`, 0, false}, {`"a"`, 0, false},
		{`""`, 0, false}, {`"1", "2"`, 0, false}, {`"1`, 0, false}, {`"` + strings.Repeat("9", 100) + `"`, 0, false},
	} {
		got, err := parseIfMatch(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("ParseIfMatch(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		} else if !tt.ok && herd.ErrorCode(err) != herd.EINVALID {
			t.Errorf("ParseIfMatch(%q) = %d, %v; want %s", tt.in, got, err, herd.EINVALID)
		}
	}
	if got := ETag(7); got != `"7"` {
		t.Fatalf("ETag(7) = %s", got)
	}
	if v, err := parseIfMatch(ETag(42)); err != nil || v != 42 {
		t.Fatalf("an ETag does not parse back: %d, %v", v, err)
	}
}
