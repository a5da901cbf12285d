package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// Client talks to a herd server over its REST API with one bearer token.
// Its methods mirror the routes; an error answer comes back as a *herd.Error
// in the error chain, so herd.ErrorCode works on it as on a local service.
type Client struct {
	// URL is the server's base URL, such as "http://127.0.0.1:8080".
	URL string
	// Token is the bearer token sent with every request.
	Token string
	// HTTPClient sends the requests.
	HTTPClient *http.Client
}

// NewClient returns a client for the server at baseURL acting with token.
func NewClient(baseURL, token string) *Client {
	return &Client{
		URL:        strings.TrimSuffix(baseURL, "/"),
		Token:      token,
		HTTPClient: &http.Client{Timeout: DefaultRequestTimeout + 10*time.Second},
	}
}

// WithToken returns a copy of the client acting with another token.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.Token = token
	return &cc
}

// Healthy reports whether the server process answers GET /healthz.
func (c *Client) Healthy(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// Ready reports whether the server answers GET /readyz with 200.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
}

// do sends one request and decodes a 2xx answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	return c.doHeader(ctx, method, path, query, nil, in, out)
}

// doHeader is do with more request headers.
func (c *Client) doHeader(ctx context.Context, method, path string, query url.Values, header http.Header, in, out any) error {
	var body io.Reader
	if in != nil {
		buf, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(buf)
	}
	u := c.URL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("new request: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if in != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: %w", method, path, decodeErrorResponse(resp))
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body) // lets the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// decodeErrorResponse turns an error answer into a *herd.Error; an answer
// that is not herd's JSON error (a proxy's HTML page) is reported as
// internal, with its status.
func decodeErrorResponse(resp *http.Response) error {
	buf, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var er ErrorResponse
	if err := json.Unmarshal(buf, &er); err != nil || er.Error.Code == "" {
		return &herd.Error{Code: herd.EINTERNAL, Message: fmt.Sprintf("unexpected answer %s: %.200s", resp.Status, buf)}
	}
	return &herd.Error{Code: er.Error.Code, Message: er.Error.Message}
}

func idPath(format string, id int64) string { return fmt.Sprintf(format, id) }
