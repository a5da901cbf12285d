package main

import (
	"flag"
	"net"
	"net/url"
	"strings"
)

// The environment of every command that talks to a running herd (watch,
// simulate): one set of names, so that what a newcomer exports once in a
// shell reaches each of them.
const (
	// URLEnv names the herd API the client commands talk to.
	URLEnv = "HERD_URL"
	// TokenEnv names the API token of the client commands; without it they
	// fall back to AdminTokenEnv, the token a quickstart exports.
	TokenEnv = "HERD_TOKEN"
	// defaultURL is where a plain `herd serve` listens.
	defaultURL = "http://127.0.0.1:8080"
)

// clientFlags defines --api and --token with their defaults from the
// environment: $HERD_URL, and $HERD_TOKEN or else $HERD_ADMIN_TOKEN. A
// flag wins over the variable.
func clientFlags(fs *flag.FlagSet, getenv func(string) string) (api, token *string) {
	api = fs.String("api", envOr(getenv, URLEnv, defaultURL), "herd API (env "+URLEnv+")")
	token = fs.String("token", envOr(getenv, TokenEnv, getenv(AdminTokenEnv)), "API token (env "+TokenEnv+", else $"+AdminTokenEnv+")")
	return api, token
}

// defaultBroker is the MQTT broker of the herd at api: on its host (the
// devices provisioned there connect there, not to whatever broker this
// machine runs), on the port of $HERD_MQTT_ADDR, the variable that moves
// herd serve's listener, so a shell that moved it for the server reaches
// it from the simulator too.
func defaultBroker(getenv func(string) string, api string) string {
	host, port := "127.0.0.1", "1883"
	if u, err := url.Parse(api); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	if addr := getenv(envName("mqtt-addr")); addr != "" && addr != "off" {
		if _, p, err := net.SplitHostPort(addr); err == nil && p != "" && p != "0" {
			port = p
		}
	}
	return "tcp://" + net.JoinHostPort(host, port)
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
