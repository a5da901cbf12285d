package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
)

// ports holds the listen addresses of herd serve, bound before anything
// touches the store: a start that cannot listen must fail before it creates
// a data dir and prints (and so loses) a generated admin token.
type ports struct {
	// Each is handed over to its server (the HTTP API, the MQTT gateway,
	// the profiler), which serves on it; what is left is closed by Close.
	http, mqtt, debug net.Listener
}

// reservePorts binds every listen address of the configuration with
// listen (net.Listen but in tests), or says which one is taken and how to
// choose another. The servers take the listeners over as they are.
func reservePorts(c Config, listen func(network, addr string) (net.Listener, error)) (*ports, error) {
	if listen == nil {
		listen = net.Listen
	}
	p := &ports{}
	var err error
	if p.http, err = listen("tcp", c.HTTPAddr); err != nil {
		return nil, listenError("HTTP", c.HTTPAddr, "http-addr", "", err)
	}
	if c.MQTTAddr != "off" {
		if p.mqtt, err = listen("tcp", c.MQTTAddr); err != nil {
			p.close()
			return nil, listenError("MQTT", c.MQTTAddr, "mqtt-addr", ` ("off" runs no TCP listener)`, err)
		}
	}
	if c.DebugAddr != "" {
		if p.debug, err = listen("tcp", c.DebugAddr); err != nil {
			p.close()
			return nil, listenError("profiler", c.DebugAddr, "debug-addr", "", err)
		}
	}
	return p, nil
}

// listenError names the address, the flag and the variable that set it.
func listenError(what, addr, flagName, more string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s address %s is already in use (another herd or broker?): stop what holds it, or choose another address with --%s or %s%s; nothing was written: %w",
			what, addr, flagName, envName(flagName), more, err)
	}
	return fmt.Errorf("%s address %s (--%s or %s): %w", what, addr, flagName, envName(flagName), err)
}

// release closes a reserved listener that no server took over (a start
// that failed before it).
func release(ln *net.Listener) {
	if *ln != nil {
		(*ln).Close()
		*ln = nil
	}
}

func (p *ports) close() {
	if p == nil {
		return
	}
	release(&p.http)
	release(&p.mqtt)
	release(&p.debug)
}

// warnTokenIgnored says, plainly and in the log, that HERD_ADMIN_TOKEN
// does not work on this store and what to do: every request with it would
// be a 401 with no other clue.
func (m *Main) warnTokenIgnored() {
	where, fresh := "the store "+redactDSN(m.Config.StoreDSN()), "start with a new, empty --store"
	if m.Config.Store == "" {
		dir := m.Config.DataDir
		where = "the data dir " + dir
		fresh = "stop herd, run `rm -rf " + shellQuote(dir) + "` (this deletes everything herd keeps there) and start it again"
	}
	msg := AdminTokenEnv + " is ignored: " + where + " already has its admin token, set on its first start (the " +
		AdminTokenEnv + " of that start, or the one printed then), and requests with this one are refused (401). " +
		"Use that token, or, to start over with this one, " + fresh + "."
	fmt.Fprintf(m.Stderr, "\n%s\n\n", msg)
	m.Logger.Warn(AdminTokenEnv+" is ignored: the store has another admin token", "data_dir", m.Config.DataDir, "dsn", redactDSN(m.Config.StoreDSN()))
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '.' || c == '-' || c == '_') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
