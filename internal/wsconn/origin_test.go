package wsconn_test

import (
	"net/http/httptest"
	"testing"

	"github.com/herd-iot/herd/internal/wsconn"
)

func TestParseOrigins(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"", "", false},
		{" , ", "", false},
		{"*", "*", false},
		{"https://App.Example:443/", "https://app.example", false},
		{"http://b.example:8080, http://a.example", "http://a.example,http://b.example:8080", false},
		{"http://[::1]:3000", "http://[::1]:3000", false},
		{"http://a.example,http://a.example:80", "http://a.example", false},
		{"*,https://a.example", "", true},
		{"a.example", "", true},
		{"ftp://a.example", "", true},
		{"https://a.example/app", "", true},
		{"https://a.example?x=1", "", true},
		{"https://user@a.example", "", true},
		{"https://", "", true},
	} {
		o, err := wsconn.ParseOrigins(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("ParseOrigins(%q) = %q, want an error", tc.in, o)
			}
			continue
		}
		if err != nil || o.String() != tc.want {
			t.Errorf("ParseOrigins(%q) = %q, %v; want %q", tc.in, o, err, tc.want)
		}
	}
}

func TestOrigins_Allows(t *testing.T) {
	list, _ := wsconn.ParseOrigins("https://app.example,http://localhost:5173")
	anyOrigin, _ := wsconn.ParseOrigins("*")
	for _, tc := range []struct {
		o          *wsconn.Origins
		host, orig string
		want       bool
	}{
		{nil, "herd.example", "", true},
		{nil, "herd.example", "https://herd.example", true},
		{nil, "herd.example:8080", "http://HERD.example:8080", true},
		{nil, "herd.example", "https://app.example", false},
		{nil, "herd.example", "null", false},
		{list, "herd.example", "https://app.example", true},
		{list, "herd.example", "https://app.example:443", true},
		{list, "herd.example", "http://localhost:5173", true},
		{list, "herd.example", "http://localhost:5174", false},
		{list, "herd.example", "http://app.example", false},
		{list, "herd.example", "https://app.example.evil.example", false},
		{list, "herd.example", "null", false},
		{anyOrigin, "herd.example", "null", true},
		{anyOrigin, "herd.example", "https://x.example", true},
	} {
		r := httptest.NewRequest("GET", "http://"+tc.host+"/v1/stream", nil)
		if tc.orig != "" {
			r.Header.Set("Origin", tc.orig)
		}
		if got := tc.o.Allows(r); got != tc.want {
			t.Errorf("%q allows %q to %s: %v, want %v", tc.o, tc.orig, tc.host, got, tc.want)
		}
	}
}
