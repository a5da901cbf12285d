package httpapi

import (
	"net/http"

	"github.com/herd-iot/herd"
)

// registerRoutes lists the whole HTTP surface. Every POST and PATCH
// honours an
// Idempotency-Key (commands require one), except those whose answer
// carries a secret: herd keeps secrets hashed, and will not keep an answer
// to replay. Every /v1 route requires a
// bearer token or the session cookie, but the sign-in itself; the probes and /metrics do not, so that orchestrators and
// Prometheus can reach them without one.
func (s *Server) registerRoutes() {
	s.handle("GET /healthz", s.handleHealthz)
	s.handle("GET /readyz", s.handleReadyz)
	s.mux.Handle("GET /metrics", s.metricsHandler())

	s.handle("POST /v1/tenants", s.authed(s.idempotent(false, s.handleTenantCreate)))
	s.handle("GET /v1/tenants", s.authed(returning(s.handleTenantList)))
	s.handle("GET /v1/tenants/{id}", s.authed(s.handleTenantView))
	s.handle("PATCH /v1/tenants/{id}", s.authed(s.idempotent(false, returning(s.handleTenantPatch))))

	s.handle("POST /v1/nodes", s.authed(s.idempotent(false, s.handleNodeCreate)))
	s.handle("GET /v1/nodes", s.authed(returning(s.handleNodeSearch)))
	s.handle("GET /v1/nodes/{id}", s.authed(s.handleNodeView))
	s.handle("GET /v1/nodes/{id}/children", s.authed(returning(s.handleNodeChildren)))
	s.handle("PATCH /v1/nodes/{id}", s.authed(s.idempotent(false, returning(s.handleNodePatch))))
	s.handle("POST /v1/nodes/{id}/move", s.authed(s.idempotent(false, s.handleNodeMove)))

	s.handle("GET /v1/devices", s.authed(s.handleDeviceQuery))
	s.handle("POST /v1/devices", s.authed(s.idempotent(false, s.handleDeviceCreate)))
	s.handle("POST /v1/devices/batch", s.authed(s.idempotent(false, s.handleDeviceBatch)))
	s.handle("GET /v1/devices/summary", s.authed(returning(s.handleDeviceSummary)))
	s.handle("GET /v1/devices/{id}", s.authed(s.handleDeviceView))
	s.handle("PATCH /v1/devices/{id}", s.authed(s.idempotent(false, returning(s.handleDevicePatch))))
	s.handle("GET /v1/devices/{id}/readings", s.authed(returning(s.handleDeviceReadings)))
	s.handle("POST /v1/devices/{id}/move", s.authed(s.idempotent(false, s.handleDeviceMove)))
	s.handle("DELETE /v1/devices/{id}", s.authed(s.handleDeviceDelete))
	s.handle("POST /v1/devices/{id}/credentials", s.authed(s.noReplay(s.handleCredentialCreate)))
	s.handle("DELETE /v1/devices/{id}/credentials", s.authed(s.handleCredentialDelete))
	s.handle("POST /v1/devices/{id}/commands", s.authed(s.idempotent(true, s.handleCommandCreate)))
	s.handle("GET /v1/devices/{id}/commands", s.authed(s.handleDeviceCommands))
	s.handle("GET /v1/commands/{id}", s.authed(s.handleCommandView))
	s.handle("GET /v1/devices/{id}/config", s.authed(returning(s.handleDeviceConfigView)))
	s.handle("PUT /v1/devices/{id}/config", s.authed(s.idempotent(true, returning(s.handleDeviceConfigSet))))

	// The telemetry history beyond one device: aggregates over a scope
	// from the rollups, and the export of a scope's readings as a stream.
	s.handle("GET /v1/readings/aggregate", s.authed(returning(s.handleReadingsAggregate)))
	s.handle("GET /v1/readings/export", s.authed(returning(s.handleReadingsExport)))

	// Config profiles and firmware belong to a tenant, as users do.
	s.handle("POST /v1/config-profiles", s.authed(s.idempotent(false, returning(s.handleConfigProfileCreate))))
	s.handle("GET /v1/config-profiles", s.authed(returning(s.handleConfigProfileList)))
	s.handle("GET /v1/config-profiles/{id}", s.authed(returning(s.handleConfigProfileView)))
	s.handle("POST /v1/config-profiles/{id}/versions", s.authed(s.idempotent(false, returning(s.handleConfigVersionCreate))))
	s.handle("GET /v1/config-profiles/{id}/versions", s.authed(returning(s.handleConfigVersionList)))
	s.handle("GET /v1/config-profiles/{id}/versions/{n}", s.authed(returning(s.handleConfigVersionView)))
	s.handle("POST /v1/firmware", s.authed(s.idempotent(false, returning(s.handleFirmwareCreate))))
	s.handle("GET /v1/firmware", s.authed(returning(s.handleFirmwareList)))
	s.handle("GET /v1/firmware/{id}", s.authed(returning(s.handleFirmwareView)))

	// Rollouts are seen by whoever sees their target node. The actions
	// answer with the rollout; one repeated changes nothing, and a key
	// makes a retry replay the first answer as on every POST.
	s.handle("POST /v1/rollouts", s.authed(s.idempotent(false, returning(s.handleRolloutCreate))))
	s.handle("GET /v1/rollouts", s.authed(returning(s.handleRolloutList)))
	s.handle("GET /v1/rollouts/{id}", s.authed(returning(s.handleRolloutView)))
	s.handle("GET /v1/rollouts/{id}/devices", s.authed(returning(s.handleRolloutMembers)))
	for _, a := range []string{herd.RolloutPause, herd.RolloutResume, herd.RolloutAbort, herd.RolloutCancel} {
		s.handle("POST /v1/rollouts/{id}/"+a, s.authed(s.idempotent(false, returning(s.handleRolloutAction(a)))))
	}

	// MQTT over WebSocket: the gateway authenticates devices itself.
	s.handle("GET /mqtt", s.handleMQTT)

	s.handle("POST /v1/users", s.authed(s.idempotent(false, s.handleUserCreate)))
	s.handle("GET /v1/users", s.authed(returning(s.handleUserList)))
	s.handle("GET /v1/users/{id}", s.authed(s.handleUserView))
	s.handle("GET /v1/users/{id}/tokens", s.authed(returning(s.handleTokenList)))
	s.handle("PATCH /v1/users/{id}", s.authed(s.idempotent(false, returning(s.handleUserPatch))))
	s.handle("POST /v1/users/{id}/tokens", s.authed(s.noReplay(s.handleTokenCreate)))
	s.handle("GET /v1/users/{id}/grants", s.authed(s.handleUserGrants))
	s.handle("DELETE /v1/tokens/{id}", s.authed(s.handleTokenDelete))
	// People's sign-in: a password, then the session cookie (session.go).
	s.handle("POST /v1/users/{id}/password", s.withSessions(s.authed(s.noReplay(s.handlePasswordSet))))
	s.handle("POST /v1/users/{id}/password-link", s.withSessions(s.authed(s.noReplay(s.handlePasswordLinkCreate))))
	s.handle("POST /v1/password", s.withSessions(s.noReplay(s.handlePasswordWithLink)))
	s.handle("POST /v1/sessions", s.withSessions(s.noReplay(s.handleSessionCreate)))
	s.handle("DELETE /v1/sessions/current", s.withSessions(s.handleSessionDelete))

	// The event log: the truth that the stream's hints point to.
	s.handle("GET /v1/events", s.authed(s.handleEvents))
	// Hints that something changed, over a WebSocket; no writes.
	// A browser opens the sockets with a ticket (?ticket=): it cannot send
	// an Authorization header on a WebSocket.
	s.handle("GET /v1/stream", s.socketAuthed(s.handleStream))
	s.handle("POST /v1/stream/tickets", s.authed(s.noReplay(s.handleTicketCreate)))

	s.handle("POST /v1/webhooks", s.authed(s.noReplay(s.handleWebhookCreate)))
	s.handle("GET /v1/webhooks", s.authed(s.handleWebhookList))
	s.handle("GET /v1/webhooks/{id}", s.authed(s.handleWebhookView))
	s.handle("DELETE /v1/webhooks/{id}", s.authed(s.handleWebhookDelete))
	s.handle("GET /v1/webhooks/{id}/deliveries", s.authed(s.handleWebhookDeliveries))
	s.handle("POST /v1/webhooks/{id}/redrive", s.authed(s.idempotent(false, s.handleWebhookRedrive)))

	// Events for apps that cannot expose a webhook URL, acked one by one.
	s.handle("GET /v1/apps/socket", s.socketAuthed(s.handleAppSocket))

	s.handle("POST /v1/grants", s.authed(s.idempotent(false, s.handleGrantCreate)))
	s.handle("GET /v1/grants", s.authed(returning(s.handleGrantList)))
	s.handle("DELETE /v1/grants/{id}", s.authed(s.handleGrantDelete))
}

func (s *Server) handle(pattern string, h http.HandlerFunc) { s.mux.Handle(pattern, h) }
