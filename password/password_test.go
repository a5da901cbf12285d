package password_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/herd-iot/herd/password"
)

// light keeps the tests fast; the format and checks are the same.
var light = password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestHashVerify(t *testing.T) {
	for _, p := range []password.Params{light, password.Default} {
		h, err := password.Hash(p, "correct horse battery staple")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, "$argon2id$v=19$") {
			t.Fatalf("hash %q is not a PHC argon2id string", h)
		}
		if ok, err := password.Verify(h, "correct horse battery staple"); err != nil || !ok {
			t.Fatalf("the right password: %v, %v", ok, err)
		}
		for _, wrong := range []string{"", "correct horse battery stapl", "Correct horse battery staple", "correct horse battery staple "} {
			if ok, err := password.Verify(h, wrong); err != nil || ok {
				t.Fatalf("wrong password %q verified: %v, %v", wrong, ok, err)
			}
		}
		// Two hashes of one password differ (a fresh salt each) and both verify.
		h2, err := password.Hash(p, "correct horse battery staple")
		if err != nil || h2 == h {
			t.Fatalf("a second hash %q of the same password, err %v", h2, err)
		}
		got, _, _, err := password.Parse(h)
		if err != nil || got != p {
			t.Fatalf("parsed params %+v, want %+v (%v)", got, p, err)
		}
	}
}

func TestParse_Malformed(t *testing.T) {
	h, err := password.Hash(light, "pw")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(h, "$")
	for name, bad := range map[string]string{
		"empty":        "",
		"bcrypt":       "$2a$10$abcdefghijklmnopqrstuv",
		"argon2i":      strings.Replace(h, "argon2id", "argon2i", 1),
		"version":      strings.Replace(h, "v=19", "v=16", 1),
		"params order": strings.Replace(h, parts[3], "t=1,m=64,p=1", 1),
		"leading zero": strings.Replace(h, parts[3], "m=064,t=1,p=1", 1),
		"huge memory":  strings.Replace(h, parts[3], "m=4294967295,t=1,p=1", 1),
		"many passes":  strings.Replace(h, parts[3], "m=64,t=100000,p=1", 1),
		"no threads":   strings.Replace(h, parts[3], "m=64,t=1,p=0", 1),
		"salt padding": strings.Replace(h, parts[4], parts[4]+"==", 1),
		"short key":    strings.Replace(h, parts[5], parts[5][:8], 1),
		"extra part":   h + "$x",
	} {
		if _, _, _, err := password.Parse(bad); !errors.Is(err, password.ErrMalformed) {
			t.Errorf("%s: %q parsed (err %v)", name, bad, err)
		}
		if ok, err := password.Verify(bad, "pw"); ok || err == nil {
			t.Errorf("%s: verified %v, err %v", name, ok, err)
		}
	}
}

// FuzzParse: whatever a stored hash holds, Parse neither panics nor
// accepts parameters outside its bounds, and what it accepts prints back
// as it was read.
func FuzzParse(f *testing.F) {
	h, err := password.Hash(light, "pw")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(h)
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5")
	f.Add("$argon2id$v=19$m=,t=,p=$$")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := password.Parse(s)
		if err != nil {
			if !errors.Is(err, password.ErrMalformed) {
				t.Fatalf("%q: an error that is not ErrMalformed: %v", s, err)
			}
			return
		}
		if p.Memory > 1<<20 || p.Time > 16 || p.Threads > 16 || len(salt) < 8 || len(key) < 16 {
			t.Fatalf("%q: accepted out-of-bounds %+v", s, p)
		}
	})
}
