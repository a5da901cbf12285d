package configschema_test

import (
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/configschema"
)

// TestConfigSchema: a schema refers to its own definitions freely, never
// to a file or a URL; a failing document names the JSON pointer of the
// value, with ~ and / escaped as RFC 6901 says.
func TestConfigSchema(t *testing.T) {
	local := `{"$defs":{"rate":{"type":"integer","minimum":1}},"type":"object","properties":{"a/b~c":{"$ref":"#/$defs/rate"}}}`
	if _, err := configschema.Compile([]byte(local)); err != nil {
		t.Fatalf("a local $ref: %v", err)
	}
	for _, remote := range []string{`{"$ref":"https://example.com/s.json"}`, `{"$ref":"file:///etc/passwd"}`, `{"$ref":"other.json"}`, `{"$schema":"https://example.com/meta"}`} {
		if _, err := configschema.Compile([]byte(remote)); herd.ErrorCode(err) != herd.EINVALID {
			t.Fatalf("%s: %v, want %s", remote, err, herd.EINVALID)
		}
	}
	err := configschema.Validate([]byte(local), []byte(`{"a/b~c":0}`))
	if herd.ErrorCode(err) != herd.EINVALID || !strings.Contains(err.Error(), `"/a~1b~0c"`) {
		t.Fatalf("bad document: %v", err)
	}
	if err := configschema.Validate([]byte(local), []byte(`{"a/b~c":3}`)); err != nil {
		t.Fatalf("good document: %v", err)
	}
	if err := configschema.Validate([]byte(local), []byte(`{"v":"\xff"}`)); herd.ErrorCode(err) != herd.EINVALID {
		t.Fatalf("a document that is not UTF-8: %v", err)
	}
}
