package httpapi

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// NDJSONContentType is the media type of the export stream.
const NDJSONContentType = "application/x-ndjson"

// exportFlushEvery is how many lines go out between explicit flushes; the
// buffers send full chunks in between. Each flush also pushes the write
// deadline on.
const exportFlushEvery = 1000

// handleReadingsExport handles GET /v1/readings/export: the readings of the
// caller's scope (narrowed by node_id and filter=) in [from, to), streamed
// as NDJSON, one herd.ExportReading a line in (ts, device_id) order, then
// the trailer {"end":true,"count":N}. An error before the first reading is
// an ordinary JSON error answer; after it the status is already out, so
// the stream ends with a line {"error":{"code","message"}} and no trailer.
// A client takes an export as whole only when it read the trailer and its
// count matches. The stream is gzip-compressed (at the fastest level) for
// a client that accepts it: NDJSON shrinks about tenfold.
//
// An export may run longer than RequestTimeout: it runs under a context
// that ends only when the client goes away or the server shuts down, with
// the connection's write deadline pushed on by RequestTimeout at every
// flush, so a client that stops reading for that long is dropped. The
// service reads in short chunks, so holding the stream open holds no
// database snapshot.
func (s *Server) handleReadingsExport(w http.ResponseWriter, r *http.Request) error {
	hs, err := s.history()
	if err != nil {
		return err
	}
	v, err := strictQuery(r)
	if err != nil {
		return err
	}
	q, _, err := herd.ParseExportQuery(v, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := outliveTimeout(w, r)
	defer cancel()
	st := &exportStream{w: w, rc: http.NewResponseController(w), timeout: s.RequestTimeout, gzip: acceptsGzip(r)}
	var count int64
	err = hs.ExportReadings(ctx, q, func(e *herd.ExportReading) error {
		if err := st.line(e); err != nil {
			return fmt.Errorf("write reading: %w", err)
		}
		if count++; count%exportFlushEvery == 0 {
			return st.flush()
		}
		return nil
	})
	if err != nil && !st.started {
		return err
	}
	if err != nil {
		// Too late for a status: say why in the stream, and leave the
		// trailer out so that no client takes the export for whole.
		if rw, ok := w.(*responseWriter); ok {
			rw.err = err
		}
		_ = st.line(ErrorResponse{Error: ErrorBody{Code: herd.ErrorCode(err), Message: herd.ErrorMessage(err)}})
	} else {
		_ = st.line(herd.ExportEnd{End: true, Count: count})
	}
	_ = st.close()
	return nil
}

// exportStream writes the lines of an export: the status and headers with
// the first, through a buffer and gzip when the client takes it.
type exportStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	gzip    bool
	started bool
	gz      *gzip.Writer
	bw      *bufio.Writer
	enc     *json.Encoder
}

func (st *exportStream) start() error {
	st.started = true
	// The connection's read deadline needs nothing: net/http lifts it once
	// the request is read. Its write deadline (the server's WriteTimeout,
	// from the start of the request) moves on at every flush.
	if err := st.extend(); err != nil {
		return err
	}
	h := st.w.Header()
	h.Set("Content-Type", NDJSONContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Vary", "Accept-Encoding")
	var out io.Writer = st.w
	if st.gzip {
		h.Set("Content-Encoding", "gzip")
		st.gz, _ = gzip.NewWriterLevel(st.w, gzip.BestSpeed) // a valid level: no error
		out = st.gz
	}
	st.w.WriteHeader(http.StatusOK)
	st.bw = bufio.NewWriterSize(out, 32<<10)
	st.enc = json.NewEncoder(st.bw)
	st.enc.SetEscapeHTML(false)
	return nil
}

func (st *exportStream) line(v any) error {
	if !st.started {
		if err := st.start(); err != nil {
			return err
		}
	}
	return st.enc.Encode(v)
}

func (st *exportStream) extend() error {
	err := st.rc.SetWriteDeadline(time.Now().Add(st.timeout + 5*time.Second))
	if errors.Is(err, http.ErrNotSupported) {
		return nil
	}
	return err
}

func (st *exportStream) flush() error {
	if err := st.bw.Flush(); err != nil {
		return fmt.Errorf("write readings: %w", err)
	}
	if st.gz != nil {
		if err := st.gz.Flush(); err != nil {
			return fmt.Errorf("write readings: %w", err)
		}
	}
	if err := st.rc.Flush(); err != nil {
		return fmt.Errorf("flush readings: %w", err)
	}
	return st.extend()
}

// close ends the stream: the buffer, then gzip's end, then the flush.
func (st *exportStream) close() error {
	if err := st.bw.Flush(); err != nil {
		return err
	}
	if st.gz != nil {
		if err := st.gz.Close(); err != nil {
			return err
		}
	}
	return st.rc.Flush()
}

// acceptsGzip reports whether the request's Accept-Encoding takes gzip
// (and does not refuse it with q=0).
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// outliveTimeout returns a context with the request's values (its actor)
// that ends when the client goes away or the server shuts down, but not at
// RequestTimeout.
func outliveTimeout(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc) {
	rw, ok := w.(*responseWriter)
	if !ok || rw.base == nil {
		return context.WithCancel(r.Context())
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	stop := context.AfterFunc(rw.base, cancel)
	return ctx, func() { stop(); cancel() }
}

// ExportReadings calls each for every reading of GET /v1/readings/export
// for q, oldest first, as they arrive. It returns each's first error, the
// error the server ended the stream with, or an error saying the export
// was cut short when the stream ends without its trailer or the trailer's
// count differs from what came. The request has no overall timeout (an
// export may take minutes): ctx bounds it.
func (c *Client) ExportReadings(ctx context.Context, q herd.ExportQuery, each func(*herd.ExportReading) error) error {
	const op = "GET /v1/readings/export"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/v1/readings/export?"+q.Values(herd.ExportNDJSON).Encode(), nil)
	if err != nil {
		return fmt.Errorf("new request: %w", err)
	}
	req.Header.Set("Accept", NDJSONContentType)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := *c.HTTPClient
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %w", op, decodeErrorResponse(resp))
	}
	if ct := resp.Header.Get("Content-Type"); ct != NDJSONContentType {
		return fmt.Errorf("%s: answer of type %q, want %s", op, ct, NDJSONContentType)
	}
	dec := json.NewDecoder(bufio.NewReaderSize(resp.Body, 64<<10))
	var n int64
	for {
		var line json.RawMessage
		if err := dec.Decode(&line); err == io.EOF {
			return fmt.Errorf("%s: the export was cut short after %d readings (the stream ended without its trailer)", op, n)
		} else if err != nil {
			return fmt.Errorf("%s: after %d readings: %w", op, n, err)
		}
		switch {
		case bytes.HasPrefix(line, []byte(`{"end":`)):
			var end herd.ExportEnd
			if err := json.Unmarshal(line, &end); err != nil || !end.End {
				return fmt.Errorf("%s: bad trailer %.200s", op, line)
			}
			if end.Count != n {
				return fmt.Errorf("%s: the trailer counts %d readings, %d came", op, end.Count, n)
			}
			if dec.More() {
				return fmt.Errorf("%s: data after the trailer", op)
			}
			return nil
		case bytes.HasPrefix(line, []byte(`{"error":`)):
			var er ErrorResponse
			if err := json.Unmarshal(line, &er); err != nil || er.Error.Code == "" {
				return fmt.Errorf("%s: bad error line %.200s", op, line)
			}
			return fmt.Errorf("%s: after %d readings: %w", op, n, &herd.Error{Code: er.Error.Code, Message: er.Error.Message})
		}
		var e herd.ExportReading
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("%s: reading %d: %w", op, n+1, err)
		}
		n++
		if err := each(&e); err != nil {
			return err
		}
	}
}
