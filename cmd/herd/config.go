package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/wsconn"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/natsbus"
	"github.com/herd-iot/herd/relay"
	"github.com/herd-iot/herd/rollout"
	"github.com/herd-iot/herd/sqldb"
)

// AdminTokenEnv names the environment variable whose value becomes the
// super-admin token on the first start of a store.
const AdminTokenEnv = "HERD_ADMIN_TOKEN"

// Config is the configuration of herd serve. Each field has a flag and an
// environment variable (HERD_ and the flag name in capitals, dashes as
// underscores); a flag wins over the variable, the variable over the default.
type Config struct {
	// DataDir holds everything herd keeps on disk; the default store is a
	// SQLite file in it.
	DataDir string
	// HTTPAddr is the listen address of the REST API.
	HTTPAddr string
	// Store is a postgres:// URL or a SQLite file path (see
	// normalizeStore); empty means herd.db in DataDir.
	Store string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is text or json.
	LogFormat string
	// MQTTAddr is the listen address of the MQTT gateway (TCP); "off" runs
	// none. MQTT over WebSocket is served at /mqtt on the HTTP address
	// either way.
	MQTTAddr string
	// MQTTMaxKeepalive is the longest keepalive a device may ask for.
	MQTTMaxKeepalive time.Duration
	// MQTTConnectRate is the number of new device connections admitted per
	// second.
	MQTTConnectRate int64
	// MQTTMaxConnections caps device connections; 0 derives the cap from
	// the open-file limit.
	MQTTMaxConnections int64
	// DebugAddr, when set, serves Go's profiler (net/http/pprof) on its own
	// listener, never on the API's: for the operator's eyes only.
	DebugAddr string
	// IngestBatchItems and IngestBatchWait bound one group commit of device
	// data: up to this many items, waiting at most this long for more.
	IngestBatchItems int64
	IngestBatchWait  time.Duration
	// NATSURL names an external NATS server or cluster (with JetStream);
	// empty embeds one that keeps its files in DataDir/nats.
	NATSURL string
	// NATSStream and NATSSubjectPrefix name the event stream and its
	// subjects: deployments that share one NATS need names of their own.
	NATSStream        string
	NATSSubjectPrefix string
	// EventsRetention is how long the event stream keeps events (the
	// longest replay); EventsDuplicateWindow how long it remembers event
	// ids to drop a relay's repeats.
	EventsRetention       time.Duration
	EventsDuplicateWindow time.Duration
	// ReadingsRetention is how long the telemetry history keeps readings,
	// and with them the minute rollups; RollupRetention how long it keeps
	// the hourly rollups (sqldb.PruneReadings).
	ReadingsRetention time.Duration
	RollupRetention   time.Duration
	// IDWatchInterval is how often herd checks its own store's id
	// headroom.
	IDWatchInterval time.Duration
	// RolloutLease is how long a process holds a rollout without renewing
	// it: how long a dead process's rollouts wait for another to drive them.
	RolloutLease time.Duration
	// APIRateLimit and APIRateBurst bound each token's requests a second
	// (per process); 0 turns the limit off.
	APIRateLimit int64
	APIRateBurst int64
	// StateCacheMinDevices is the tenant size from which the scoped query
	// keeps the tenant's devices in memory (sqldb.StateCacheConfig); 0 turns
	// the cache off.
	StateCacheMinDevices int64
	// Rollups is "on" (ingest keeps the rollups fleet aggregates read) or
	// "off", which only the benchmark of their cost wants: aggregates then
	// miss every reading committed while it is off.
	Rollups string
	// AllowedOrigins lists the web origins other than herd's own whose
	// pages may open the sockets and read /v1 (CORS), or "*"; empty
	// allows herd's own origin only (see docs/browsers.md).
	AllowedOrigins string
	// SecureCookies is "auto" (the session cookie is Secure when the
	// request came over TLS or a proxy says so in X-Forwarded-Proto) or
	// "on" (always: herd behind a proxy that ends TLS and says nothing).
	SecureCookies string
}

// DefaultConfig returns the configuration of a plain `herd serve`: embedded
// defaults, no outside service.
func DefaultConfig() Config {
	return Config{
		DataDir:   "./herd-data",
		HTTPAddr:  ":8080",
		LogLevel:  "info",
		LogFormat: "text",

		StateCacheMinDevices: sqldb.DefaultStateCache.MinTenantDevices,
		Rollups:              "on",
		SecureCookies:        "auto",
		MQTTAddr:             mqttgw.DefaultAddr,
		MQTTMaxKeepalive:     mqttgw.DefaultMaxKeepalive,
		MQTTConnectRate:      mqttgw.DefaultConnectRate,
		IngestBatchItems:     mqttgw.DefaultBatchItems,
		IngestBatchWait:      mqttgw.DefaultBatchWait,

		APIRateLimit:          httpapi.DefaultRateLimit,
		IDWatchInterval:       5 * time.Minute,
		RolloutLease:          rollout.DefaultLease,
		APIRateBurst:          httpapi.DefaultRateBurst,
		NATSStream:            natsbus.DefaultStream,
		NATSSubjectPrefix:     natsbus.DefaultSubjectPrefix,
		EventsRetention:       natsbus.DefaultMaxAge,
		EventsDuplicateWindow: natsbus.DefaultDuplicateWindow,
		ReadingsRetention:     sqldb.DefaultReadingsRetention,
		RollupRetention:       sqldb.DefaultRollupRetention,
	}
}

// StoreDSN returns the DSN of the store the configuration names.
func (c Config) StoreDSN() string {
	if c.Store != "" {
		if dsn, err := normalizeStore(c.Store); err == nil {
			return dsn
		}
		return c.Store // refused by Validate
	}
	return filepath.Join(c.DataDir, "herd.db")
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if c.HTTPAddr == "" {
		return &ConfigError{Field: "http-addr", Value: c.HTTPAddr, Err: errors.New("an address such as :8080 is required")}
	}
	if _, err := normalizeStore(c.Store); err != nil {
		return &ConfigError{Field: "store", Value: redactDSN(c.Store), Err: err}
	}
	if c.Store == "" && c.DataDir == "" {
		return &ConfigError{Field: "data-dir", Value: c.DataDir, Err: errors.New("a directory is required for the default SQLite store")}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return &ConfigError{Field: "log-level", Value: c.LogLevel, Err: err}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return &ConfigError{Field: "log-format", Value: c.LogFormat, Err: errors.New("must be text or json")}
	}
	if c.MQTTAddr == "" {
		return &ConfigError{Field: "mqtt-addr", Value: c.MQTTAddr, Err: errors.New(`an address such as :1883 is required, or "off"`)}
	}
	if c.MQTTMaxKeepalive < time.Second || c.MQTTMaxKeepalive > 65535*time.Second {
		return &ConfigError{Field: "mqtt-max-keepalive", Value: c.MQTTMaxKeepalive.String(), Err: errors.New("must be from 1s to 18h12m15s, MQTT's largest keepalive")}
	}
	if c.MQTTConnectRate < 1 {
		return &ConfigError{Field: "mqtt-connect-rate", Value: strconv.FormatInt(c.MQTTConnectRate, 10), Err: errors.New("must be 1 or more")}
	}
	if c.MQTTMaxConnections < 0 {
		return &ConfigError{Field: "mqtt-max-connections", Value: strconv.FormatInt(c.MQTTMaxConnections, 10), Err: errors.New("must be 0 (from the open-file limit) or more")}
	}
	if c.IngestBatchItems < 1 || c.IngestBatchItems > 100000 {
		return &ConfigError{Field: "ingest-batch-items", Value: strconv.FormatInt(c.IngestBatchItems, 10), Err: errors.New("must be from 1 to 100,000")}
	}
	if c.IngestBatchWait < 0 || c.IngestBatchWait > time.Second {
		return &ConfigError{Field: "ingest-batch-wait", Value: c.IngestBatchWait.String(), Err: errors.New("must be from 0 to 1s")}
	}
	if c.NATSURL == "" && c.DataDir == "" {
		return &ConfigError{Field: "data-dir", Value: c.DataDir, Err: errors.New("a directory is required for the embedded NATS server (or set --nats-url)")}
	}
	if !validStreamName(c.NATSStream) {
		return &ConfigError{Field: "nats-stream", Value: c.NATSStream, Err: errors.New("must be letters, digits, - and _ only")}
	}
	if !validSubjectPrefix(c.NATSSubjectPrefix) {
		return &ConfigError{Field: "nats-subject-prefix", Value: c.NATSSubjectPrefix, Err: errors.New("must be dot-separated tokens of letters, digits, - and _")}
	}
	if c.EventsRetention < time.Minute {
		return &ConfigError{Field: "events-retention", Value: c.EventsRetention.String(), Err: errors.New("must be 1m or more")}
	}
	// The window must cover the longest a relay goes on repeating a batch
	// the stream may have stored: its lease (after which another relay
	// publishes the batch again) and its longest back-off.
	if least := relay.DefaultLease + relay.MaxBackoff; c.EventsDuplicateWindow < least || c.EventsDuplicateWindow > c.EventsRetention {
		return &ConfigError{Field: "events-duplicate-window", Value: c.EventsDuplicateWindow.String(),
			Err: fmt.Errorf("must be from %s (the relay's lease and longest back-off) to the retention, %s", least, c.EventsRetention)}
	}
	if c.ReadingsRetention < time.Hour {
		return &ConfigError{Field: "readings-retention", Value: formatRetention(c.ReadingsRetention), Err: errors.New("must be 1h or more")}
	}
	// The hourly rollups answer what the readings and minute rollups no
	// longer can; keeping them for less would lose aggregates that the
	// readings retention still promises.
	if c.RollupRetention < c.ReadingsRetention {
		return &ConfigError{Field: "rollup-retention", Value: formatRetention(c.RollupRetention),
			Err: fmt.Errorf("must be at least the readings retention, %s", formatRetention(c.ReadingsRetention))}
	}
	if c.RolloutLease < time.Second || c.RolloutLease > time.Hour {
		return &ConfigError{Field: "rollout-lease", Value: c.RolloutLease.String(), Err: errors.New("must be from 1s to 1h")}
	}
	if c.IDWatchInterval < time.Second {
		return &ConfigError{Field: "id-watch-interval", Value: c.IDWatchInterval.String(), Err: errors.New("must be 1s or more")}
	}
	if c.APIRateLimit < 0 || c.APIRateBurst < 1 {
		return &ConfigError{Field: "api-rate-limit", Value: strconv.FormatInt(c.APIRateLimit, 10), Err: errors.New("must be 0 (off) or more, with --api-rate-burst 1 or more")}
	}
	if c.SecureCookies != "auto" && c.SecureCookies != "on" {
		return &ConfigError{Field: "secure-cookies", Value: c.SecureCookies, Err: errors.New("must be auto or on")}
	}
	if c.Rollups != "on" && c.Rollups != "off" {
		return &ConfigError{Field: "rollups", Value: c.Rollups, Err: errors.New("must be on or off")}
	}
	if c.StateCacheMinDevices < 0 {
		return &ConfigError{Field: "state-cache-min-devices", Value: strconv.FormatInt(c.StateCacheMinDevices, 10), Err: errors.New("must be 0 (off) or more")}
	}
	if _, err := wsconn.ParseOrigins(c.AllowedOrigins); err != nil {
		return &ConfigError{Field: "allowed-origins", Value: c.AllowedOrigins, Err: err}
	}
	return nil
}

func validStreamName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validSubjectPrefix(s string) bool {
	for _, tok := range strings.Split(s, ".") {
		if !validStreamName(tok) {
			return false
		}
	}
	return true
}

// ConfigError is a setting that cannot work. It names both ways of
// setting it, since the bad value may have come from either.
type ConfigError struct {
	Field string
	Value string
	Err   error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("--%s (or %s) %q: %v", e.Field, envName(e.Field), e.Value, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// envName returns the environment variable of a flag: data-dir → HERD_DATA_DIR.
func envName(flagName string) string {
	return "HERD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// stringFlag defines a flag whose default is taken from its environment
// variable when that is set, so that a flag wins over the variable and the
// variable over the built-in default.
func stringFlag(fs *flag.FlagSet, getenv func(string) string, p *string, name, usage string) {
	if v := getenv(envName(name)); v != "" {
		*p = v
	}
	fs.StringVar(p, name, *p, usage+" (env "+envName(name)+")")
}

// int64Flag is stringFlag for a whole number. A variable that is not a
// number is reported like a bad flag value, naming the variable.
func int64Flag(fs *flag.FlagSet, getenv func(string) string, p *int64, name, usage string) error {
	if v := getenv(envName(name)); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return &ConfigError{Field: name, Value: v, Err: errors.New("not a whole number")}
		}
		*p = n
	}
	fs.Int64Var(p, name, *p, usage+" (env "+envName(name)+")")
	return nil
}

// durationFlag is stringFlag for a duration such as 90s or 5m.
func durationFlag(fs *flag.FlagSet, getenv func(string) string, p *time.Duration, name, usage string) error {
	if v := getenv(envName(name)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return &ConfigError{Field: name, Value: v, Err: errors.New("not a duration such as 90s or 5m")}
		}
		*p = d
	}
	fs.DurationVar(p, name, *p, usage+" (env "+envName(name)+")")
	return nil
}

// retentionFlag is durationFlag for a retention, which may also be given in
// whole days (30d), as Go's durations have no unit longer than the hour.
func retentionFlag(fs *flag.FlagSet, getenv func(string) string, p *time.Duration, name, usage string) error {
	if v := getenv(envName(name)); v != "" {
		d, err := parseRetention(v)
		if err != nil {
			return &ConfigError{Field: name, Value: v, Err: err}
		}
		*p = d
	}
	fs.Var((*retentionValue)(p), name, usage+" (env "+envName(name)+")")
	return nil
}

// parseRetention reads a number of days (30d) or a Go duration (720h).
func parseRetention(s string) (time.Duration, error) {
	bad := errors.New("not a duration such as 30d or 720h")
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 64)
		if err != nil || days < 0 || days > math.MaxInt64/int64(24*time.Hour) {
			return 0, bad
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, bad
	}
	return d, nil
}

// formatRetention writes whole days as 30d, anything else as a duration.
func formatRetention(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

// retentionValue is a flag.Value of parseRetention.
type retentionValue time.Duration

func (v *retentionValue) String() string { return formatRetention(time.Duration(*v)) }

func (v *retentionValue) Set(s string) error {
	d, err := parseRetention(s)
	if err != nil {
		return err
	}
	*v = retentionValue(d)
	return nil
}

// storeFlags defines the flags that locate the store, shared by every
// command that opens it.
func storeFlags(fs *flag.FlagSet, getenv func(string) string, c *Config) {
	stringFlag(fs, getenv, &c.DataDir, "data-dir", "directory for herd's data")
	stringFlag(fs, getenv, &c.Store, "store", `state store: a postgres:// or postgresql:// URL, or a SQLite file as sqlite:PATH or a path (default "herd.db" in the data dir)`)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, errors.New("must be debug, info, warn or error")
	}
	return l, nil
}

// redactDSN hides the password of a database URL so that it can be logged,
// whatever its scheme (a refused mysql:// one is printed too).
func redactDSN(dsn string) string {
	if !strings.Contains(dsn, "://") {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		scheme, _, _ := strings.Cut(dsn, "://")
		return scheme + "://…"
	}
	return u.Redacted()
}
