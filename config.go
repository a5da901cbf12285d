package herd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Event types of configuration.
const (
	EventConfigProfileCreated = "config_profile.created"
	EventConfigVersionCreated = "config_version.created"
	EventDeviceConfigDesired  = "device.config_desired"
	EventDeviceConfigReported = "device.config_reported"
	EventSubjectConfigProfile = "config_profile"
)

// Limits of configuration.
const (
	// MaxConfigSchema and MaxConfigDocument bound a profile's schema and
	// one version's document, in bytes of JSON: a document goes to the
	// device whole, in one MQTT message.
	MaxConfigSchema   = 64 << 10
	MaxConfigDocument = 64 << 10
)

// Reported config statuses.
const (
	ConfigApplied  = "applied"
	ConfigRejected = "rejected"
)

// ConfigProfile is a named JSON Schema (draft 2020-12) of a tenant: every
// version of the profile is a document that validates against it. A
// profile belongs to the whole tenant, as users do: anyone who sees a node
// of the tenant may read it, and admins of the tenant's root create them.
type ConfigProfile struct {
	ID       int64           `json:"id,string"`
	TenantID int64           `json:"tenant_id,string"`
	Name     string          `json:"name"`
	Schema   json.RawMessage `json:"schema"`
	// LatestVersion is the number of the newest version, 0 before the first.
	LatestVersion int64     `json:"latest_version"`
	CreatedAt     time.Time `json:"created_at"`
}

// Validate reports whether the profile can be created: its schema must
// compile.
func (p *ConfigProfile) Validate() error {
	p.Name = strings.TrimSpace(p.Name)
	if p.TenantID == 0 {
		return Errorf(EINVALID, "tenant_id is required")
	}
	if err := checkRequiredText("name", p.Name, MaxNameLen); err != nil {
		return err
	}
	_, err := CompileConfigSchema(p.Schema)
	return err
}

// ConfigVersion is one immutable document of a profile, numbered 1, 2, …
// in the order they were created.
type ConfigVersion struct {
	ProfileID int64           `json:"profile_id,string"`
	TenantID  int64           `json:"tenant_id,string"`
	Version   int64           `json:"version"`
	Document  json.RawMessage `json:"document"`
	CreatedAt time.Time       `json:"created_at"`
}

// refuseLoader loads nothing: a schema may refer only to itself, so that
// compiling one never reads a file or the network on herd's host.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("herd loads no external schemas, and %s is not part of this one", url)
}

const configSchemaURL = "https://herd.invalid/config-profile.json"

// CompileConfigSchema compiles a profile's schema as draft 2020-12 (unless
// it names another draft in $schema). It refuses a $ref to anything but
// the schema itself. The error is EINVALID and says why.
func CompileConfigSchema(schema json.RawMessage) (*jsonschema.Schema, error) {
	if t := bytes.TrimSpace(schema); len(t) == 0 || string(t) == "null" {
		return nil, Errorf(EINVALID, "schema is required: a JSON Schema (draft 2020-12)")
	} else if len(schema) > MaxConfigSchema {
		return nil, Errorf(EINVALID, "schema is %d bytes, at most %d", len(schema), MaxConfigSchema)
	}
	// The store keeps the schema as text (PostgreSQL refuses what is not
	// UTF-8), and a JSON decoder would quietly mend bad bytes.
	if err := CheckText("schema", string(schema), MaxConfigSchema); err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, Errorf(EINVALID, "schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	if err := c.AddResource(configSchemaURL, doc); err != nil {
		return nil, Errorf(EINVALID, "schema does not compile: %v", err)
	}
	sch, err := c.Compile(configSchemaURL)
	var serr *jsonschema.SchemaValidationError
	var verr *jsonschema.ValidationError
	if errors.As(err, &serr) && errors.As(serr.Err, &verr) {
		// The schema failed the draft's metaschema: name where.
		loc, why := deepestCause(verr)
		return nil, Errorf(EINVALID, "schema does not compile: at %q: %s", loc, why)
	} else if err != nil {
		return nil, Errorf(EINVALID, "schema does not compile: %s", strings.ReplaceAll(err.Error(), configSchemaURL, ""))
	}
	return sch, nil
}

// ValidateConfigDocument checks a version's document against its
// profile's schema. A document that does not validate is EINVALID naming
// the JSON pointer of the first failing value ("" is the document itself)
// and why it fails.
func ValidateConfigDocument(schema, document json.RawMessage) error {
	if t := bytes.TrimSpace(document); len(t) == 0 || string(t) == "null" {
		return Errorf(EINVALID, "document is required")
	} else if len(document) > MaxConfigDocument {
		return Errorf(EINVALID, "document is %d bytes, at most %d", len(document), MaxConfigDocument)
	}
	sch, err := CompileConfigSchema(schema)
	if err != nil {
		return err
	}
	if err := CheckText("document", string(document), MaxConfigDocument); err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(document))
	if err != nil {
		return Errorf(EINVALID, "document is not JSON: %v", err)
	}
	err = sch.Validate(doc)
	var verr *jsonschema.ValidationError
	if errors.As(err, &verr) {
		loc, why := deepestCause(verr)
		return Errorf(EINVALID, "document does not validate at %q: %s", loc, why)
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

// DesiredConfig is the config version a device should run.
type DesiredConfig struct {
	ProfileID int64     `json:"profile_id,string"`
	Version   int64     `json:"version"`
	At        time.Time `json:"at"`
}

// ReportedConfig is the device's last answer about its config.
type ReportedConfig struct {
	Version int64     `json:"version"`
	Status  string    `json:"status"`
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}

// DeviceConfig is a device's desired and reported config. InSync is true
// when the device applied the version it is meant to run (or nothing is
// desired of it).
type DeviceConfig struct {
	DeviceID int64           `json:"device_id,string"`
	Desired  *DesiredConfig  `json:"desired"`
	Reported *ReportedConfig `json:"reported"`
	InSync   bool            `json:"in_sync"`
}

// ComputeInSync sets InSync from Desired and Reported.
func (c *DeviceConfig) ComputeInSync() {
	c.InSync = c.Desired == nil || (c.Reported != nil && c.Reported.Status == ConfigApplied && c.Reported.Version == c.Desired.Version)
}

// ConfigPage is a page of a keyset-paged list: Next, when set, is the
// after= of the next page.
type ConfigPage[T any] struct {
	Items []T   `json:"items"`
	Next  int64 `json:"next,string,omitempty"`
}

// ConfigService manages config profiles, their versions and devices'
// desired configs.
type ConfigService interface {
	// CreateConfigProfile returns EFORBIDDEN unless the actor is an admin
	// of the tenant's root node, ECONFLICT when the name is taken in the
	// tenant.
	CreateConfigProfile(ctx context.Context, p *ConfigProfile) error
	// FindConfigProfileByID returns ENOTFOUND unless the actor sees a node
	// of the profile's tenant.
	FindConfigProfileByID(ctx context.Context, id int64) (*ConfigProfile, error)
	// FindConfigProfiles lists a tenant's profiles in id order, those
	// after the id given.
	FindConfigProfiles(ctx context.Context, tenantID, after int64, limit int) (*ConfigPage[*ConfigProfile], error)
	// CreateConfigVersion validates the document against the profile's
	// schema and stores it as the profile's next version.
	CreateConfigVersion(ctx context.Context, v *ConfigVersion) error
	FindConfigVersion(ctx context.Context, profileID, version int64) (*ConfigVersion, error)
	// FindConfigVersions lists a profile's versions, those after the
	// version given, in version order.
	FindConfigVersions(ctx context.Context, profileID, after int64, limit int) (*ConfigPage[*ConfigVersion], error)
	// FindDeviceConfig is authorised as reading the device is.
	FindDeviceConfig(ctx context.Context, deviceID int64) (*DeviceConfig, error)
	// SetDesiredConfig sets one device's desired config (operator role on
	// its node). The version must be of a profile of the device's tenant.
	SetDesiredConfig(ctx context.Context, deviceID, profileID, version int64) (*DeviceConfig, error)
}

// ConfigDesiredEvent is the payload of a device.config_desired event: all
// a gateway needs to send the device its config from the event alone.
type ConfigDesiredEvent struct {
	DeviceID  int64           `json:"device_id,string"`
	DeviceKey string          `json:"device_key"`
	ProfileID int64           `json:"profile_id,string"`
	Profile   string          `json:"profile"`
	Version   int64           `json:"version"`
	Document  json.RawMessage `json:"document"`
}
