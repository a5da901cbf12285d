// Package configschema is herd's JSON Schema engine for config profiles
// (santhosh-tekuri/jsonschema, draft 2020-12): it compiles a profile's
// schema, loading nothing from outside it, and validates a version's
// document, naming the JSON pointer of the value that fails. Its errors
// are herd.EINVALID, ready for the caller.
package configschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// refuseLoader loads nothing: a schema may refer only to itself, so that
// compiling one never reads a file or the network on herd's host.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("herd loads no external schemas, and %s is not part of this one", url)
}

const configSchemaURL = "https://herd.invalid/config-profile.json"

// Compile compiles a profile's schema (one that passed
// herd.ConfigProfile.Validate) as draft 2020-12 (unless
// it names another draft in $schema). It refuses a $ref to anything but
// the schema itself. The error is herd.EINVALID and says why.
func Compile(schema json.RawMessage) (*jsonschema.Schema, error) {
	// The profile's Validate has checked its size and text.
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, herd.Errorf(herd.EINVALID, "schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	if err := c.AddResource(configSchemaURL, doc); err != nil {
		return nil, herd.Errorf(herd.EINVALID, "schema does not compile: %v", err)
	}
	sch, err := c.Compile(configSchemaURL)
	var serr *jsonschema.SchemaValidationError
	var verr *jsonschema.ValidationError
	if errors.As(err, &serr) && errors.As(serr.Err, &verr) {
		// The schema failed the draft's metaschema: name where.
		loc, why := deepestCause(verr)
		return nil, herd.Errorf(herd.EINVALID, "schema does not compile: at %q: %s", loc, why)
	} else if err != nil {
		return nil, herd.Errorf(herd.EINVALID, "schema does not compile: %s", strings.ReplaceAll(err.Error(), configSchemaURL, ""))
	}
	return sch, nil
}

// Validate checks a version's document against its
// profile's schema. A document that does not validate is herd.EINVALID naming
// the JSON pointer of the first failing value ("" is the document itself)
// and why it fails.
func Validate(schema, document json.RawMessage) error {
	if t := bytes.TrimSpace(document); len(t) == 0 || string(t) == "null" {
		return herd.Errorf(herd.EINVALID, "document is required")
	} else if len(document) > herd.MaxConfigDocument {
		return herd.Errorf(herd.EINVALID, "document is %d bytes, at most %d", len(document), herd.MaxConfigDocument)
	}
	sch, err := Compile(schema)
	if err != nil {
		return err
	}
	if err := herd.CheckText("document", string(document), herd.MaxConfigDocument); err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(document))
	if err != nil {
		return herd.Errorf(herd.EINVALID, "document is not JSON: %v", err)
	}
	err = sch.Validate(doc)
	var verr *jsonschema.ValidationError
	if errors.As(err, &verr) {
		loc, why := deepestCause(verr)
		return herd.Errorf(herd.EINVALID, "document does not validate at %q: %s", loc, why)
	} else if err != nil {
		return fmt.Errorf("validate config document: %w", err)
	}
	return nil
}

// deepestCause returns the JSON pointer and the reason of the first leaf
// of a validation error: the value that failed; the errors above it only
// say that a subschema did.
func deepestCause(verr *jsonschema.ValidationError) (string, string) {
	for len(verr.Causes) > 0 {
		verr = verr.Causes[0]
	}
	return JSONPointer(verr.InstanceLocation), verr.ErrorKind.LocalizedString(message.NewPrinter(language.English))
}

// JSONPointer spells a path of object keys and array indexes as an RFC
// 6901 pointer: "" for the root, "/a/0/b" below it.
func JSONPointer(path []string) string {
	var b strings.Builder
	for _, tok := range path {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1"))
	}
	return b.String()
}
