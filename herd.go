// Package herd holds the domain of the herd IoT fleet platform: tenants, the
// node tree, devices and their latest-state projection, users, tokens, grants,
// events, and the rules that tie them together (who may see or change what,
// how a device query is parsed and paged). It imports no adapter: storage,
// HTTP, MQTT and NATS live in their own packages and speak to each other only
// through the interfaces declared here.
package herd

import "time"

// Version is the build version, set by the linker in release builds.
var Version = "dev"

// MaxQueryParams bounds the number of bind parameters any scoped query may
// carry. A scope is a handful of node paths; a query that would need more
// parameters than this is a bug (for example someone passing device ids), and
// the store refuses it rather than sending it.
const MaxQueryParams = 500

// Now is the clock used where a component has no clock of its own injected.
// Tests replace the clock on the component, not this function.
func Now() time.Time { return time.Now().UTC() }
