// Package httpapi is herd's REST edge: the HTTP server with its routes,
// authentication, error rendering, request logs and metrics, and the Go
// client that the CLI and the tests use to talk to it. It speaks to the rest
// of herd only through the service interfaces of the root package.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/wsconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of a new Server.
const (
	// DefaultRequestTimeout bounds the work of one request; the services
	// see it as the deadline of their context.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultShutdownTimeout bounds how long Close waits for requests in
	// flight before it cuts their connections.
	DefaultShutdownTimeout = 15 * time.Second
	// MaxBodySize bounds an ordinary request body.
	MaxBodySize = 1 << 20
	// MaxBatchBodySize bounds the body of a batch create, which may carry
	// up to herd.MaxBatchDevices devices.
	MaxBatchBodySize = 16 << 20
)

// Server is the HTTP server of the REST API. Create it with NewServer, set
// its exported fields, then call Open; Close shuts it down.
type Server struct {
	// Addr is the TCP address to listen on; ":0" picks a free port, which
	// URL reports after Open.
	Addr string
	// Listener, when set, is served instead of listening on Addr: a
	// process that bound its address early (to fail before it does any
	// work) hands it over without letting go of the port in between.
	// Close closes it.
	Listener net.Listener
	// Logger receives one structured line per request and the causes of
	// internal errors.
	Logger *slog.Logger
	// RequestTimeout is the deadline of every request's context.
	RequestTimeout time.Duration
	// RateLimit and RateBurst bound each token's requests a second (in
	// this process); a RateLimit of 0 turns the limit off.
	RateLimit float64
	RateBurst int
	// ShutdownTimeout bounds the graceful part of Close.
	ShutdownTimeout time.Duration

	TenantService herd.TenantService
	NodeService   herd.NodeService
	DeviceService herd.DeviceService
	UserService   herd.UserService
	GrantService  herd.GrantService
	// ListService serves the lists (tenants, users, tokens, a node's
	// children, a node's grants, the node search); nil answers 404.
	ListService herd.ListService
	// CredentialService issues device credentials; nil leaves the device
	// credential routes answering 404.
	CredentialService herd.CredentialService
	// Idempotency remembers Idempotency-Keys; CommandService sends
	// commands (nil answers 404).
	Idempotency    herd.IdempotencyStore
	CommandService herd.CommandService
	// IdempotencyHook, when set, is called at the two moments of a keyed
	// request that a crash must not tell apart wrongly: "before-commit"
	// (the handler has answered; its effects and answer are not committed)
	// and "after-commit" (both are; the answer is not yet sent). Tests kill
	// the process there; herd leaves it nil.
	IdempotencyHook func(r *http.Request, stage string)
	// ConfigService serves config profiles and devices' configs,
	// FirmwareService firmware metadata; nil answers 404.
	ConfigService   herd.ConfigService
	FirmwareService herd.FirmwareService
	// RolloutService creates staged rollouts and acts on them; nil
	// answers 404.
	RolloutService herd.RolloutService
	// RolloutMaxInFlight is the max_in_flight of a rollout that names
	// none: for firmware, what the gateway's connect rate takes back in
	// ten seconds, so that the devices a wave reboots at once never make
	// the reconnect storm the rate limit exists for. 0 takes
	// herd.DefaultMaxInFlight.
	RolloutMaxInFlight int64
	// HistoryService reads the telemetry history (readings, aggregates,
	// the summary, the export); nil answers 404.
	HistoryService herd.HistoryService
	// EventService serves the event log; nil answers 404.
	EventService herd.EventService
	// WebhookService manages webhook subscriptions; nil answers 404.
	WebhookService herd.WebhookService
	// Stream serves GET /v1/stream (package stream) behind the API's
	// authentication; nil answers 404.
	Stream Socket
	// AppSocket serves the apps socket (package appsocket) behind the
	// API's authentication; nil answers 404.
	AppSocket Socket
	// TicketService issues the tickets that open the sockets from a
	// browser (POST /v1/stream/tickets); nil answers 404.
	TicketService herd.TicketService
	// SessionService signs people in with a password (POST /v1/sessions)
	// and turns the session cookie into an actor; nil answers 404 there
	// and takes no cookie.
	SessionService herd.SessionService
	// SecureCookies sets Secure on the session cookie even when the
	// request came without TLS and without X-Forwarded-Proto: https (herd
	// behind a proxy that ends TLS and says nothing); either sets it.
	SecureCookies bool
	// Origins is the policy for web pages of other origins: which may
	// open the sockets and read /v1 answers (CORS). Nil allows herd's own
	// origin only.
	Origins *wsconn.Origins
	// Disconnecter closes the connection of a device whose credential is
	// revoked or which is deleted; nil when no gateway runs here.
	Disconnecter DeviceDisconnecter
	// MQTT serves MQTT over WebSocket at /mqtt; nil answers 404.
	MQTT http.Handler

	// Ready reports whether the server can do useful work (the store
	// answers); GET /readyz turns it into 200 or 503. Nil means always ready.
	Ready func(ctx context.Context) error

	mux      *http.ServeMux
	registry *prometheus.Registry
	metrics  *metrics
	limits   *limiter[tokenKey]
	// signInFails count failed sign-ins per account and per address.
	signInFails signInLimits
	ln          net.Listener
	server      *http.Server
	done        chan error
}

// NewServer returns a Server with default settings and every route
// registered. The services must be set before Open.
func NewServer() *Server {
	s := &Server{
		Addr:            ":8080",
		Logger:          slog.New(slog.DiscardHandler),
		RequestTimeout:  DefaultRequestTimeout,
		RateLimit:       DefaultRateLimit,
		RateBurst:       DefaultRateBurst,
		ShutdownTimeout: DefaultShutdownTimeout,
		mux:             http.NewServeMux(),
		registry:        prometheus.NewRegistry(),
	}
	s.metrics = newMetrics(s.registry)
	s.signInFails = newSignInLimits()
	s.registerRoutes()
	return s
}

// Registry returns the Prometheus registry the server exposes on /metrics,
// so that other components of the process can add their collectors to it.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Open starts listening on Addr and serving in the background. A listen
// error (for example the port being taken) is returned as is, wrapped, so
// callers can test it with errors.Is(err, syscall.EADDRINUSE).
func (s *Server) Open() error {
	switch {
	case s.TenantService == nil, s.NodeService == nil, s.DeviceService == nil, s.UserService == nil, s.GrantService == nil:
		return fmt.Errorf("httpapi: every service must be set before Open")
	}
	if s.RateLimit > 0 {
		s.limits = newLimiter[tokenKey](s.RateLimit, max(s.RateBurst, 1))
	}
	ln := s.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", s.Addr, err)
		}
	}
	s.ln = ln
	s.server = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		// The body of a request is read inside its deadline; the write
		// timeout leaves room to render the error of a request that hit it.
		ReadTimeout:  s.RequestTimeout,
		WriteTimeout: s.RequestTimeout + 5*time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(s.Logger.Handler(), slog.LevelWarn),
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.server.Serve(ln) }()
	return nil
}

// Close stops accepting connections and waits up to ShutdownTimeout for the
// requests in flight; connections still busy after that are closed.
func (s *Server) Close() error {
	if s.server == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout)
	defer cancel()
	err := s.server.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.Logger.Warn("http shutdown deadline passed; closing busy connections", "timeout", s.ShutdownTimeout)
		err = s.server.Close()
	}
	if serveErr := <-s.done; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	s.server = nil
	if err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

// ListenAddr returns the address the server listens on after Open, with
// the real port when Addr asked for ":0".
func (s *Server) ListenAddr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns the base URL clients on this machine can reach the server at.
// An unspecified host (":8080", "0.0.0.0", "[::]") becomes the loopback
// address, since one cannot connect to "any address".
func (s *Server) URL() string {
	addr := s.ListenAddr()
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// ServeHTTP runs every request through the same envelope: a deadline,
// panic recovery, JSON errors for unknown routes and methods, a request log
// line and the request metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &responseWriter{ResponseWriter: w, base: r.Context()}
	ctx, cancel := context.WithTimeout(r.Context(), s.RequestTimeout)
	defer cancel()
	r = r.WithContext(ctx)

	h, pattern := s.mux.Handler(r)
	if !isCleanPath(r.URL.Path) {
		// The mux would redirect to the cleaned path with a 301, which
		// many clients follow by turning a POST into a GET. An API client
		// that sends "/v1//devices" has a bug to see, not to paper over.
		h, pattern = http.NotFoundHandler(), ""
	}
	s.metrics.inFlight.Inc()
	defer func() {
		s.metrics.inFlight.Dec()
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p) // net/http's own way to abort a response quietly
			}
			s.Logger.Error("http handler panic", "panic", p, "stack", string(debug.Stack()))
			if !rw.wroteHeader {
				Error(rw, r, fmt.Errorf("panic: %v", p))
			}
		}
		s.logRequest(r, rw, routeLabel(pattern), time.Since(start))
	}()
	if isAPIPath(r.URL.Path) && r.Header.Get("Origin") != "" && s.cors(rw, r) {
		return // a preflight, answered
	}
	if pattern == "" {
		// No route: the mux would answer in plain text. Let it decide
		// between 404 and 405 (and set Allow), then answer in JSON.
		s.serveUnmatched(rw, r, h)
		return
	}
	// Through the mux again rather than h: only the mux fills in the
	// path wildcards (r.PathValue).
	s.mux.ServeHTTP(rw, r)
}

// serveUnmatched renders the mux's own 404 or 405 as a JSON error; anything
// else it answers (a redirect to a cleaned path) goes out unchanged.
func (s *Server) serveUnmatched(w *responseWriter, r *http.Request, h http.Handler) {
	iw := &interceptWriter{w: w}
	h.ServeHTTP(iw, r)
	switch iw.status {
	case http.StatusNotFound:
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "no route for %s %s", r.Method, r.URL.Path))
	case http.StatusMethodNotAllowed:
		allow := iw.header.Get("Allow")
		w.Header().Set("Allow", allow)
		Error(w, r, &methodError{method: r.Method, path: r.URL.Path, allow: allow})
	}
}

// isCleanPath reports whether p is already in the form path.Clean gives
// it, a trailing slash aside.
func isCleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

// logRequest writes the request's log line and records its metrics.
func (s *Server) logRequest(r *http.Request, rw *responseWriter, route string, d time.Duration) {
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	s.metrics.observe(route, r.Method, status, d)

	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case route == "/healthz" || route == "/readyz" || route == "/metrics":
		// Probes and scrapes arrive every few seconds; at info level they
		// would drown the requests people make.
		level = slog.LevelDebug
	}
	if !s.Logger.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr),
		slog.Int64("bytes", rw.bytes),
	}
	if q := redactedQuery(r.URL); q != "" {
		// Never the ticket: whoever read it first could spend it.
		attrs = append(attrs, slog.String("query", q))
	}
	if a := rw.actor; a != nil {
		if a.Super {
			attrs = append(attrs, slog.Bool("super", true))
		} else {
			attrs = append(attrs, slog.Int64("tenant_id", a.TenantID), slog.Int64("user_id", a.UserID))
		}
	}
	if rw.err != nil && status >= 500 {
		attrs = append(attrs, slog.String("error", rw.err.Error()))
	}
	// The request's own context may have hit its deadline; the log line
	// must still go out.
	s.Logger.LogAttrs(context.WithoutCancel(r.Context()), level, "http request", attrs...)
}

// routeLabel turns a mux pattern ("GET /v1/devices/{id}") into the route of
// logs and metrics ("/v1/devices/{id}"). Requests that matched no route share
// one label, so that scanners cannot blow up the metric cardinality.
func routeLabel(pattern string) string {
	if pattern == "" {
		return "unmatched"
	}
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		return pattern[i+1:]
	}
	return pattern
}

// responseWriter records what a handler answered, for the request log and
// metrics, and carries the error and actor of the request to the log line.
type responseWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	err         error
	actor       *herd.Actor
	// base is the request's context before RequestTimeout: it ends when
	// the client goes away or the server shuts down. A streaming route
	// that may outlive the timeout (the readings export) ends with it.
	base context.Context
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// interceptWriter swallows the mux's plain-text 404 and 405 so that they can
// be answered in JSON, and passes any other answer through.
type interceptWriter struct {
	w      *responseWriter
	header http.Header
	status int
}

func (w *interceptWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *interceptWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	w.status = code
	if code == http.StatusNotFound || code == http.StatusMethodNotAllowed {
		return
	}
	for k, v := range w.header {
		w.w.Header()[k] = v
	}
	w.w.WriteHeader(code)
}

func (w *interceptWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.status == http.StatusNotFound || w.status == http.StatusMethodNotAllowed {
		return len(p), nil
	}
	return w.w.Write(p)
}
