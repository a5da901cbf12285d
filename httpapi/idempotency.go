package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"

	"github.com/herd-iot/herd"
)

// HeaderIdempotencyKey names the request's key; HeaderReplayed marks an
// answer given again for a key seen before.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderReplayed       = "Idempotent-Replayed"
)

// idempotent runs h at most once per Idempotency-Key, per tenant, token
// and route: the same key and body again get the first answer (with
// Idempotent-Replayed: true), the same key with another body 422, and the
// same key while the first request runs 409. With required, a request
// without a key is refused (400); otherwise it runs as it is.
//
// The request runs inside the key's claim: its writes to the store join the
// claim's transaction, which commits them together with the answer before
// the answer is sent. An answer below 500 is the request's outcome (a 4xx
// changed nothing, and says so again on a retry); a 5xx rolls the writes
// back with the claim, and a retry runs the request again. A process that
// dies at any moment leaves either the answer, to replay, or nothing.
func (s *Server) idempotent(required bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(HeaderIdempotencyKey)
		if key == "" {
			if required {
				Error(w, r, herd.Errorf(herd.EINVALID, "this request needs an %s header: a unique value per operation (a UUID), sent again unchanged when the request is retried", HeaderIdempotencyKey))
				return
			}
			h(w, r)
			return
		}
		if len(key) > 255 {
			Error(w, r, herd.Errorf(herd.EINVALID, "%s is longer than 255 characters", HeaderIdempotencyKey))
			return
		}
		// A header may carry any byte above 0x7F; the key is kept as text.
		if err := herd.CheckText(HeaderIdempotencyKey, key, 255); err != nil {
			Error(w, r, err)
			return
		}
		if s.Idempotency == nil {
			Error(w, r, herd.Errorf(herd.EINVALID, "idempotency keys are not kept here"))
			return
		}
		// The largest body any route takes: the handler applies its own
		// limit to what is read here (a batch takes more than the rest), as
		// it would to the body itself.
		if r.ContentLength > MaxBatchBodySize {
			Error(w, r, tooLarge(MaxBatchBodySize))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBatchBodySize))
		if err != nil {
			Error(w, r, bodyError(err, MaxBatchBodySize))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		a := herd.ActorFromContext(r.Context())
		scope := fmt.Sprintf("%d/%d/%s", a.TenantID, a.TokenID, r.Pattern)
		// The precondition is part of the request: the same key with
		// another If-Match is another request (a 422), not the first
		// one's answer again. Without one the fingerprint is as before.
		head := r.Method + " " + r.URL.Path + "\n"
		if im := r.Header.Get("If-Match"); im != "" {
			head += "If-Match: " + im + "\n"
		}
		sum := sha256.Sum256(append([]byte(head), body...))
		hash := hex.EncodeToString(sum[:])
		res, err := s.Idempotency.BeginRequest(r.Context(), scope, key, hash)
		if err != nil {
			Error(w, r, err)
			return
		}
		switch res.State {
		case herd.IdempotencyMismatch:
			s.metrics.idempotency.WithLabelValues("mismatch").Inc()
			Error(w, r, herd.Errorf(herd.EKEYREUSED, "this %s was used for another request (another route, body or If-Match) in the last 24 h: use a new key per operation", HeaderIdempotencyKey))
			return
		case herd.IdempotencyRunning:
			s.metrics.idempotency.WithLabelValues("running").Inc()
			Error(w, r, herd.Errorf(herd.ECONFLICT, "the first request with this %s is still running: retry it later with the same key", HeaderIdempotencyKey))
			return
		case herd.IdempotencyReplay:
			s.metrics.idempotency.WithLabelValues("replay").Inc()
			// The headers every answer of a keyed route carries (see
			// writeJSON); none of them is the request's own.
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set(HeaderReplayed, "true")
			w.WriteHeader(res.Status)
			w.Write(res.Body)
			return
		}
		s.metrics.idempotency.WithLabelValues("new").Inc()
		claim := res.Claim
		defer claim.Release() // a panic, a 5xx: nothing of the request stays
		rec := &recorder{header: http.Header{}}
		h(rec, r.WithContext(claim.Context(r.Context())))
		if rec.status > 0 && rec.status < 500 {
			s.failpoint(r, "before-commit")
			if err := claim.Complete(rec.status, rec.body.Bytes()); err != nil {
				// Neither the writes nor the answer committed: the
				// request did not happen, and a retry runs it.
				Error(w, r, fmt.Errorf("commit the request with its idempotent answer: %w", err))
				return
			}
			s.failpoint(r, "after-commit")
		} else {
			claim.Release()
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(max(rec.status, http.StatusOK))
		w.Write(rec.body.Bytes())
	}
}

// failpoint calls the IdempotencyHook of tests, if any.
func (s *Server) failpoint(r *http.Request, stage string) {
	if s.IdempotencyHook != nil {
		s.IdempotencyHook(r, stage)
	}
}

// noReplay refuses an Idempotency-Key on a route whose answer carries a
// secret (a token, a credential, a webhook's signing secret): replaying it
// would mean keeping the secret for 24 h, where herd keeps only hashes;
// and on one whose request does (a password), which the key's record
// would keep a fast hash of.
func (s *Server) noReplay(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderIdempotencyKey) != "" {
			Error(w, r, herd.Errorf(herd.EINVALID, "this request carries or answers with a secret, which herd does not keep to replay: send it without an %s (a password set twice is set; after a lost token or credential, list what exists and revoke what you cannot use)", HeaderIdempotencyKey))
			return
		}
		h(w, r)
	}
}

// recorder keeps a handler's answer, to store it before it is sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}
