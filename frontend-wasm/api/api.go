// Package api is the browser client's only way to the diad server: typed REST
// calls under /api/v1 and the two websocket streams (denoising trajectories
// and job events). It is plain Go (net/http and nhooyr.io/websocket), so it
// runs in the browser (GOOS=js, where both use the browser's fetch and
// WebSocket) and in host tests against a real server alike.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/diad-project/diad/shared"
)

// Client talks to one server.
type Client struct {
	// Base is the server's origin, e.g. "http://127.0.0.1:8080".
	Base string
	// Token, when the server requires one, is sent as a bearer header on
	// REST calls and as ?token= on websockets (browsers cannot set headers
	// on a websocket).
	Token string
	HTTP  *http.Client
}

// New returns a client of the server at base.
func New(base, token string) *Client {
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: http.DefaultClient}
}

// Error is a non-2xx answer: the status and the server's error message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("server: %s (HTTP %d)", e.Message, e.Status) }

// IsStatus reports whether err is a server answer with the given status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) (err error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, path, rd, "application/json")
	if err != nil {
		return err
	}
	defer closeBody(resp, &err)
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// send performs a request and turns a non-2xx answer into *Error.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e shared.APIError
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			b = nil // the status text below says what we know
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if e.Error == "" {
				e.Error = http.StatusText(resp.StatusCode)
			}
		}
		if err := resp.Body.Close(); err != nil {
			return nil, fmt.Errorf("%s %s: %d: %w", method, path, resp.StatusCode, err)
		}
		return nil, &Error{Status: resp.StatusCode, Message: e.Error}
	}
	return resp, nil
}

// closeBody closes an answer's body once it is read, into *err when nothing
// else failed first (the first error says more).
func closeBody(resp *http.Response, err *error) {
	if cerr := resp.Body.Close(); cerr != nil && *err == nil {
		*err = fmt.Errorf("close answer: %w", cerr)
	}
}

// Status is the server's model and notices.
func (c *Client) Status(ctx context.Context) (shared.Status, error) {
	var st shared.Status
	return st, c.do(ctx, http.MethodGet, "/api/v1/status", nil, &st)
}

// Runs lists the results runs, oldest first.
func (c *Client) Runs(ctx context.Context) ([]shared.RunInfo, error) {
	var runs []shared.RunInfo
	return runs, c.do(ctx, http.MethodGet, "/api/v1/runs", nil, &runs)
}

// Run is one run's record.
func (c *Client) Run(ctx context.Context, run string) (shared.RunInfo, error) {
	var r shared.RunInfo
	return r, c.do(ctx, http.MethodGet, "/api/v1/runs/"+url.PathEscape(run), nil, &r)
}

// pageSize is the largest page the server hands out.
const pageSize = 1000

// Images fetches every image row of a run (all pages), in image id order.
func (c *Client) Images(ctx context.Context, run string) ([]shared.ImageInfo, error) {
	return c.images(ctx, run, "")
}

// ImagesByID fetches some of a run's images (those a change named), in
// requests of at most idsPerRequest ids (a bulk verdict can name 100,000:
// one URL would be megabytes).
func (c *Client) ImagesByID(ctx context.Context, run string, ids []int64) ([]shared.ImageInfo, error) {
	var out []shared.ImageInfo
	for len(ids) > 0 {
		n := min(len(ids), idsPerRequest)
		parts := make([]string, n)
		for i, id := range ids[:n] {
			parts[i] = strconv.FormatInt(id, 10)
		}
		page, err := c.images(ctx, run, "&image_ids="+url.QueryEscape(strings.Join(parts, ",")))
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		ids = ids[n:]
	}
	return out, nil
}

// idsPerRequest bounds the image ids of one listing request (~3 kB of URL).
const idsPerRequest = 400

func (c *Client) images(ctx context.Context, run, filter string) ([]shared.ImageInfo, error) {
	var all []shared.ImageInfo
	for {
		var page shared.ImagePage
		path := fmt.Sprintf("/api/v1/runs/%s/images?sort=image_id&offset=%d&limit=%d%s", url.PathEscape(run), len(all), pageSize, filter)
		if err := c.do(ctx, http.MethodGet, path, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Images...)
		if len(page.Images) == 0 || len(all) >= page.Total {
			return all, nil
		}
	}
}

func (c *Client) bytes(ctx context.Context, path string) (b []byte, h http.Header, err error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, nil, err
	}
	defer closeBody(resp, &err)
	b, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return b, resp.Header, nil
}

// Source is an image's file as stored (PNG, JPEG...).
func (c *Client) Source(ctx context.Context, run string, image int64) ([]byte, error) {
	b, _, err := c.bytes(ctx, fmt.Sprintf("/api/v1/runs/%s/images/%d/source", url.PathEscape(run), image))
	return b, err
}

// MapPNG is a stored anomaly map: a grayscale PNG whose pixel q means
// Offset + q/255*Scale.
type MapPNG struct {
	PNG           []byte
	Offset, Scale float32
}

// Map fetches an image's stored anomaly map.
func (c *Client) Map(ctx context.Context, run string, image int64) (MapPNG, error) {
	path := fmt.Sprintf("/api/v1/runs/%s/images/%d/map", url.PathEscape(run), image)
	b, h, err := c.bytes(ctx, path)
	if err != nil {
		return MapPNG{}, err
	}
	off, err1 := strconv.ParseFloat(h.Get("X-Map-Offset"), 32)
	scale, err2 := strconv.ParseFloat(h.Get("X-Map-Scale"), 32)
	if err1 != nil || err2 != nil {
		return MapPNG{}, fmt.Errorf("GET %s: missing X-Map-Offset/X-Map-Scale", path)
	}
	return MapPNG{PNG: b, Offset: float32(off), Scale: float32(scale)}, nil
}

// Mask fetches an image's ground-truth mask file; found is false when the
// image has none (the server answers 404).
func (c *Client) Mask(ctx context.Context, run string, image int64) (data []byte, found bool, err error) {
	b, _, err := c.bytes(ctx, fmt.Sprintf("/api/v1/runs/%s/images/%d/mask", url.PathEscape(run), image))
	if IsStatus(err, http.StatusNotFound) {
		return nil, false, nil
	}
	return b, err == nil, err
}

// SetLabel writes an analyst verdict and returns the updated row.
func (c *Client) SetLabel(ctx context.Context, run string, image int64, req shared.LabelRequest) (shared.ImageInfo, error) {
	var info shared.ImageInfo
	return info, c.do(ctx, http.MethodPut, fmt.Sprintf("/api/v1/runs/%s/images/%d/label", url.PathEscape(run), image), req, &info)
}

// Metrics fetches a run's metrics table (every category and the mean).
func (c *Client) Metrics(ctx context.Context, run string) ([]shared.MetricValue, error) {
	var rows []shared.MetricValue
	return rows, c.do(ctx, http.MethodGet, "/api/v1/runs/"+url.PathEscape(run)+"/metrics", nil, &rows)
}

// SetLabels saves the labels of many images at once (a bulk verdict, or an
// undo of one); it returns the updated images.
func (c *Client) SetLabels(ctx context.Context, run string, req shared.BulkLabelRequest) ([]shared.ImageInfo, error) {
	var infos []shared.ImageInfo
	return infos, c.do(ctx, http.MethodPut, "/api/v1/runs/"+url.PathEscape(run)+"/labels", req, &infos)
}

// SetThreshold saves a run's decision threshold.
func (c *Client) SetThreshold(ctx context.Context, run string, req shared.ThresholdRequest) (shared.RunInfo, error) {
	var r shared.RunInfo
	return r, c.do(ctx, http.MethodPut, "/api/v1/runs/"+url.PathEscape(run)+"/threshold", req, &r)
}

// Upload sends an image file (PNG or JPEG) for ad-hoc denoising.
func (c *Client) Upload(ctx context.Context, data []byte) (_ shared.Upload, err error) {
	resp, err := c.send(ctx, http.MethodPost, "/api/v1/uploads", bytes.NewReader(data), "application/octet-stream")
	if err != nil {
		return shared.Upload{}, err
	}
	defer closeBody(resp, &err)
	var u shared.Upload
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
		return shared.Upload{}, fmt.Errorf("POST /api/v1/uploads: decode answer: %w", err)
	}
	return u, nil
}

// Jobs lists every job the server knows, oldest first.
func (c *Client) Jobs(ctx context.Context) ([]shared.Job, error) {
	var j []shared.Job
	return j, c.do(ctx, http.MethodGet, "/api/v1/jobs", nil, &j)
}

// Export formats of ExportURL.
const (
	ExportParquet = "parquet"
	ExportCSV     = "csv"
)

// ExportURL is where the browser downloads a run's labelled image table as
// Parquet or CSV: every image (ids nil) or exactly the listed ones - what a
// filtered view shows.
func (c *Client) ExportURL(run, format string, ids []int64) string {
	q := url.Values{"table": {"images"}, "format": {format}}
	if ids != nil {
		parts := make([]string, len(ids))
		for i, id := range ids {
			parts[i] = strconv.FormatInt(id, 10)
		}
		q.Set("image_ids", strings.Join(parts, ","))
	}
	if c.Token != "" {
		q.Set("token", c.Token)
	}
	return c.Base + "/api/v1/runs/" + url.PathEscape(run) + "/export?" + q.Encode()
}

// TrajectoryURL is the link that downloads a trajectory drawn for slides
// (GET /api/v1/trajectory).
func (c *Client) TrajectoryURL(x shared.TrajectoryExport) string {
	q := x.Query()
	if c.Token != "" {
		q.Set("token", c.Token)
	}
	return c.Base + "/api/v1/trajectory?" + q.Encode()
}

// wsURL turns an API path into a websocket URL with the token.
func (c *Client) wsURL(path string) string {
	u := c.Base + path
	switch {
	case strings.HasPrefix(u, "https://"):
		u = "wss://" + strings.TrimPrefix(u, "https://")
	case strings.HasPrefix(u, "http://"):
		u = "ws://" + strings.TrimPrefix(u, "http://")
	}
	if c.Token != "" {
		u += "?token=" + url.QueryEscape(c.Token)
	}
	return u
}
