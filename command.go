package herd

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event types and statuses of commands.
const (
	EventCommandCreated   = "command.created"
	EventCommandDelivered = "command.delivered"
	EventCommandAcked     = "command.acked"
	EventCommandFailed    = "command.failed"
	EventCommandExpired   = "command.expired"
	EventSubjectCommand   = "command"

	// A command is pending until its device acknowledges the publish
	// (delivered), then acked or failed by the device's reply, or expired
	// when its TTL runs out first.
	CommandPending   = "pending"
	CommandDelivered = "delivered"
	CommandAcked     = "acked"
	CommandFailed    = "failed"
	CommandExpired   = "expired"
)

// Command limits.
const (
	DefaultCommandTTL = 5 * time.Minute
	MaxCommandTTL     = 7 * 24 * time.Hour
	MaxCommandArgs    = 16 << 10
)

// Command is an instruction sent to one device.
type Command struct {
	ID        int64           `json:"id,string"`
	TenantID  int64           `json:"tenant_id,string"`
	DeviceID  int64           `json:"device_id,string"`
	DeviceKey string          `json:"device_key"`
	Path      string          `json:"path"`
	Name      string          `json:"name"`
	Args      json.RawMessage `json:"args"`
	// TTLSeconds is how long the command may wait for its device.
	TTLSeconds int64  `json:"ttl_s"`
	Status     string `json:"status"`
	// Result is what the device answered with its ack, Error its reason
	// for failing.
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	DeliveredAt *time.Time      `json:"delivered_at,omitempty"`
	CompletedAt *time.Time      `json:"completed_at,omitempty"`

	// IdempotencyKey, when set, makes the command the token's only one
	// under that key: a second create returns the first command.
	IdempotencyKey string `json:"-"`
}

// Validate checks the command's own fields and fills in the default TTL.
func (c *Command) Validate() error {
	if c.DeviceID == 0 {
		return Errorf(EINVALID, "device id required")
	}
	if err := checkRequiredText("name", c.Name, 64); err != nil {
		return err
	}
	for _, r := range c.Name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return Errorf(EINVALID, "name %q may hold letters, digits, _, - and . only", c.Name)
		}
	}
	if len(c.Args) == 0 || string(c.Args) == "null" {
		c.Args = json.RawMessage(`{}`)
	}
	if len(c.Args) > MaxCommandArgs {
		return Errorf(EINVALID, "args are %d bytes, at most %d", len(c.Args), MaxCommandArgs)
	}
	// encoding/json accepts invalid UTF-8 inside strings, and the args are
	// kept as they came, so the check is here: PostgreSQL refuses them.
	if !utf8.Valid(c.Args) {
		return Errorf(EINVALID, "args is not valid UTF-8 text")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(c.Args, &obj); err != nil {
		return Errorf(EINVALID, "args must be a JSON object")
	}
	// The key is kept on the command row: text, as every field a store
	// keeps (the API checks its header too, but not every caller is the API).
	if err := CheckText("idempotency key", c.IdempotencyKey, MaxIdempotencyKeyLen); err != nil {
		return err
	}
	if c.TTLSeconds == 0 {
		c.TTLSeconds = int64(DefaultCommandTTL / time.Second)
	}
	if c.TTLSeconds < 1 || c.TTLSeconds > int64(MaxCommandTTL/time.Second) {
		return Errorf(EINVALID, "ttl_s must be from 1 to %d", int64(MaxCommandTTL/time.Second))
	}
	return nil
}

// DevicePayload is what the device receives on devices/{key}/commands.
func (c *Command) DevicePayload() []byte {
	buf, _ := json.Marshal(struct {
		ID        string          `json:"id"`
		Name      string          `json:"name"`
		Args      json.RawMessage `json:"args"`
		ExpiresAt time.Time       `json:"expires_at"`
	}{strconv.FormatInt(c.ID, 10), c.Name, c.Args, c.ExpiresAt})
	return buf
}

// CommandService sends commands and shows their status. Sending needs the
// operator role on the device's node, reading the viewer role.
type CommandService interface {
	CreateCommand(ctx context.Context, c *Command) error
	FindCommandByID(ctx context.Context, id int64) (*Command, error)
	FindCommandsByDevice(ctx context.Context, deviceID int64, limit int) ([]*Command, error)
}

// CommandQueue is what the gateway needs of the store to deliver commands.
type CommandQueue interface {
	// OpenCommands returns a device's commands waiting for delivery or an
	// ack, unexpired, oldest first. The tenant is the device's, as its
	// credential authenticated it: the lookup states it, as every lookup
	// by id does.
	OpenCommands(ctx context.Context, tenantID, deviceID int64) ([]*Command, error)
	// PendingCommands returns up to limit commands of online devices not
	// yet delivered, created before before and unexpired, those expiring
	// first first.
	PendingCommands(ctx context.Context, before time.Time, limit int) ([]*Command, error)
	// MarkDelivered records that devices acknowledged these commands'
	// publishes.
	MarkDelivered(ctx context.Context, ids []int64) error
	// ExpireCommands ends the open commands whose TTL ran out.
	ExpireCommands(ctx context.Context) (int, error)
}

// CommandAck is what a device answers on devices/{key}/commands/ack.
type CommandAck struct {
	CommandID int64
	OK        bool
	Result    json.RawMessage // a JSON value or nil
	Error     string
}

// ParseCommandAck reads a device's reply:
// {"id":"42","status":"ok"|"error","result":{...},"error":"..."}.
func ParseCommandAck(payload []byte, maxBytes int) (CommandAck, error) {
	var a CommandAck
	if len(payload) > maxBytes {
		return a, Errorf(ETOOLARGE, "ack of %d bytes is over the %d byte limit", len(payload), maxBytes)
	}
	var raw struct {
		ID     json.RawMessage `json:"id"`
		Status string          `json:"status"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return a, Errorf(EINVALID, "ack is not a JSON object: %v", err)
	}
	id := string(raw.ID)
	if s, err := strconv.Unquote(id); err == nil {
		id = s
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return a, Errorf(EINVALID, "ack id must be the command's id")
	}
	switch raw.Status {
	case "ok":
		a.OK = true
	case "error":
	default:
		return a, Errorf(EINVALID, `ack status must be "ok" or "error"`)
	}
	// What is kept must go into any store's text: no NUL, valid UTF-8. An
	// answer that broke the insert would fail its whole ingest batch.
	a.CommandID = n
	a.Error = strings.ToValidUTF8(strings.ReplaceAll(raw.Error, "\x00", ""), "\uFFFD")
	if len(a.Error) > 1024 {
		a.Error = strings.ToValidUTF8(a.Error[:1024], "")
	}
	if len(raw.Result) > 0 && string(raw.Result) != "null" {
		if !utf8.Valid(raw.Result) || bytes.Contains(raw.Result, []byte(`\u0000`)) {
			return a, Errorf(EINVALID, "ack result must be UTF-8 JSON without NUL characters")
		}
		a.Result = raw.Result
	}
	return a, nil
}
