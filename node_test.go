package herd_test

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

func TestChildPath(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			parent string
			id     int64
			want   string
		}{
			{"", 1, "/1/"},
			{"/", 1, "/1/"},
			{"/1/", 7, "/1/7/"},
			{"/1/7/", 9223372036854775807, "/1/7/9223372036854775807/"},
		} {
			if got := herd.ChildPath(tt.parent, tt.id); got != tt.want {
				t.Fatalf("ChildPath(%q, %d) = %q, want %q", tt.parent, tt.id, got, tt.want)
			}
		}
	})
}

func TestPathUpperBound(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct{ in, want string }{
			{"/", "0"},
			{"/1/", "/10"},
			{"/7/12/", "/7/120"},
		} {
			if got := herd.PathUpperBound(tt.in); got != tt.want {
				t.Fatalf("PathUpperBound(%q) = %q, want %q", tt.in, got, tt.want)
			}
		}
	})
	t.Run("OKRange", func(t *testing.T) {
		// [path, PathUpperBound(path)) holds exactly the path and the paths
		// under it, as bytes compare.
		base := "/7/12/"
		upper := herd.PathUpperBound(base)
		for _, tt := range []struct {
			path string
			in   bool
		}{
			{"/7/12/", true},
			{"/7/12/1/", true},
			{"/7/12/99999/3/", true},
			{"/7/1/", false},
			{"/7/120/", false},
			{"/7/121/", false},
			{"/7/13/", false},
			{"/7/", false},
			{"/8/12/", false},
		} {
			got := tt.path >= base && tt.path < upper
			if got != tt.in || got != herd.PathUnder(tt.path, base) {
				t.Fatalf("%q in range of %q: got %v, PathUnder %v, want %v", tt.path, base, got, herd.PathUnder(tt.path, base), tt.in)
			}
		}
	})
}

func TestPathIDs(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			in   string
			want []int64
		}{
			{"/", []int64{}},
			{"/1/", []int64{1}},
			{"/1/7/12/", []int64{1, 7, 12}},
		} {
			got, err := herd.PathIDs(tt.in)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("PathIDs(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		}
	})
	t.Run("ErrMalformed", func(t *testing.T) {
		_, err := herd.PathIDs("/1/x/")
		mustFail(t, err, herd.EINVALID, `"/1/x/"`)
	})
}

func TestPrefixUpperBound(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			in   string
			want string
			ok   bool
		}{
			{"a", "b", true},
			{"pump", "pumq", true},
			{"/1/2/", "/1/20", true},
			{"a\x7f", "a\u0080", true},     // one byte becomes two
			{"\u07ff", "\u0800", true},     // two become three
			{"é", "ê", true},               // multi-byte rune incremented whole
			{"x\uD7FF", "x\uE000", true},   // skips the surrogates
			{"\uffff", "\U00010000", true}, // three become four
			{"a\U0010FFFF", "b", true},     // the last rune has no successor
			{"ab\U0010FFFF\U0010FFFF", "ac", true},
			{"\U0010FFFF", "", false},
			{"\U0010FFFF\U0010FFFF", "", false},
		} {
			got, ok := herd.PrefixUpperBound(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("PrefixUpperBound(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		}
	})
	t.Run("OKRange", func(t *testing.T) {
		// For every prefix and every string: s has the prefix exactly when
		// prefix <= s < bound, and the bound is valid UTF-8.
		words := []string{"", "a", "b", "ab", "abc", "ac", "a\U0010FFFF", "a\U0010FFFFz", "b\x00",
			"é", "éa", "ê", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0010FFFF", "\U0010FFFFa", "z"}
		for _, p := range words {
			if p == "" {
				continue
			}
			bound, ok := herd.PrefixUpperBound(p)
			if ok && !utf8.ValidString(bound) {
				t.Fatalf("bound of %q is not UTF-8: %q", p, bound)
			}
			for _, s := range words {
				in := s >= p && (!ok || s < bound)
				if in != strings.HasPrefix(s, p) {
					t.Fatalf("prefix %q bound %q (%v): %q in range = %v", p, bound, ok, s, in)
				}
			}
		}
	})
}
