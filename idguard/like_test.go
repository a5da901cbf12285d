package idguard

import "testing"

// TestLikeMatch: a database named in a grant may be a LIKE pattern.
func TestLikeMatch(t *testing.T) {
	for _, tt := range []struct {
		s, pattern string
		want       bool
	}{
		{"herd_test_1", `herd\_test\_%`, true},
		{"herdXtest_1", `herd\_test\_%`, false},
		{"herdXtest_1", `herd_test_%`, true},
		{"shop", "shop", true},
		{"shop2", "shop", false},
		{"shöp", "sh_p", true},
		{"a.b", "a.b", true},
		{"axb", "a.b", false},
	} {
		if got := likeMatch(tt.s, tt.pattern); got != tt.want {
			t.Errorf("likeMatch(%q, %q) = %v, want %v", tt.s, tt.pattern, got, tt.want)
		}
	}
}
