package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image/color"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/shared"
)

func TestStatusAndOpenAPICoverEveryRoute(t *testing.T) {
	e := startEnv(t, nil)
	r, body := e.do(t, "GET", "/api/v1/status", nil)
	var st Status
	if r.StatusCode != 200 || json.Unmarshal(body, &st) != nil || st.Libtorch != torchrt.LibtorchVersion() {
		t.Fatalf("status %d %s", r.StatusCode, body)
	}
	if r, body := e.do(t, "GET", "/", nil); r.StatusCode != 200 || !bytes.Contains(body, []byte(st.Libtorch)) {
		t.Fatalf("index %d", r.StatusCode)
	}
	_, body = e.do(t, "GET", "/api/v1/openapi.json", nil)
	var spec struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	decode(t, body, &spec)
	param := regexp.MustCompile(`:([a-z]+)`)
	for _, rt := range e.srv.echo.Routes() {
		if strings.HasPrefix(rt.Path, "/api/v1") || rt.Path == "/healthz" || rt.Path == "/metrics" {
			path := param.ReplaceAllString(rt.Path, "{$1}")
			if _, ok := spec.Paths[path][strings.ToLower(rt.Method)]; !ok {
				t.Errorf("route %s %s is not in openapi.json", rt.Method, path)
			}
		}
	}
	_, body = e.do(t, "GET", "/metrics", nil)
	for _, m := range []string{"diad_jobs", "diad_job_queue_length", "diad_stream_clients", "diad_stream_dropped_frames_total", "diad_http_request_duration_seconds"} {
		if !bytes.Contains(body, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func TestBadInputGetsTheRightStatus(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.MaxUploadBytes = 64 << 10; c.MaxUploadPixels = 512 * 512 })
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(e.dataRoot, "escape")); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Join(e.dataRoot, "escape"))
	ihdr := []byte("IHDR\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00") // 100000 x 100000
	bomb := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), ihdr...)
	bomb = binary.BigEndian.AppendUint32(bomb, crc32.ChecksumIEEE(ihdr))
	cases := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"traversal", "POST", "/api/v1/datasets", shared.RegisterDataset{Name: "x", Path: "../../etc"}, 403},
		{"absolute outside", "POST", "/api/v1/datasets", shared.RegisterDataset{Name: "x", Path: "/etc"}, 403},
		{"symlink escape", "POST", "/api/v1/datasets", shared.RegisterDataset{Name: "x", Path: "escape"}, 403},
		{"bad name", "POST", "/api/v1/datasets", shared.RegisterDataset{Name: "../x", Path: "synth"}, 400},
		{"oversize upload", "POST", "/api/v1/uploads", bytes.Repeat([]byte{0}, 70<<10), 413},
		{"bomb upload", "POST", "/api/v1/uploads", bomb, 413},
		{"too many pixels", "POST", "/api/v1/uploads", pngBytes(t, 600, 600, color.White), 413},
		{"non-image upload", "POST", "/api/v1/uploads", []byte("GIF89a not an image we take"), 415},
		{"malformed JSON", "POST", "/api/v1/jobs", "{\"kind\": ", 400},
		{"unknown field", "POST", "/api/v1/jobs", `{"kind":"train","bogus":1}`, 400},
		{"bad job kind", "POST", "/api/v1/jobs", shared.JobRequest{Kind: "mine"}, 400},
		{"job data outside roots", "POST", "/api/v1/jobs", shared.JobRequest{Kind: "train", Config: map[string]any{"data": map[string]any{"root": "/etc"}}}, 403},
		{"unknown job", "GET", "/api/v1/jobs/j-20260101T000000-00000000", nil, 404},
		{"unknown run", "GET", "/api/v1/runs/20260101T000000Z-abcdef/images", nil, 404},
		{"run id traversal", "GET", "/api/v1/runs/..%2F..%2Fetc/images", nil, 404},
		{"unknown file", "GET", "/api/v1/runs/20260101T000000Z-abcdef/files/passwd", nil, 404},
		{"unknown model", "POST", "/api/v1/models/load", map[string]string{"path": "/etc/passwd"}, 404},
	}
	for _, c := range cases {
		r, body := e.do(t, c.method, c.path, c.body)
		if r.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d (%s)", c.name, r.StatusCode, c.want, body)
		} else if !bytes.Contains(body, []byte(`"error"`)) {
			t.Errorf("%s: no error body: %s", c.name, body)
		}
		e.alive(t)
	}
	// A dataset inside the roots registers.
	if r, body := e.do(t, "POST", "/api/v1/datasets", shared.RegisterDataset{Name: "synth", Path: "synth"}); r.StatusCode != 201 {
		t.Fatalf("register: %d %s", r.StatusCode, body)
	}
	// Denoise requests that make no sense get an error message.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{UploadID: "u-0000000000000000"}, true); err == nil || !strings.Contains(err.Error(), "error") {
		t.Fatalf("unknown upload: %v", err)
	}
	// A foreign Origin is refused.
	url := strings.Replace(e.base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	e.alive(t)
}

func TestTokenIsRequired(t *testing.T) {
	if _, err := New(Config{Addr: "0.0.0.0:0", DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("non-loopback without a token accepted")
	}
	var logs lockedBuffer
	e := startEnvLog(t, func(c *Config) { c.Token = "s3cret" }, &logs)
	body := shared.RegisterDataset{Name: "synth", Path: "synth"}
	if r, _ := e.do(t, "POST", "/api/v1/datasets", body); r.StatusCode != 401 {
		t.Fatalf("no token: %d", r.StatusCode)
	}
	if r, _ := e.do(t, "POST", "/api/v1/datasets", body, "Authorization", "Bearer wrong"); r.StatusCode != 403 {
		t.Fatalf("wrong token: %d", r.StatusCode)
	}
	if r, _ := e.do(t, "POST", "/api/v1/datasets", body, "Authorization", "Bearer s3cret"); r.StatusCode != 201 {
		t.Fatalf("right token: %d", r.StatusCode)
	}
	// The scheme is case-insensitive.
	other := shared.RegisterDataset{Name: "synth2", Path: "synth"}
	if r, b := e.do(t, "POST", "/api/v1/datasets", other, "Authorization", "bearer s3cret"); r.StatusCode != 201 {
		t.Fatalf("lower-case scheme: %d %s", r.StatusCode, b)
	}
	if r, _ := e.do(t, "GET", "/api/v1/datasets", nil); r.StatusCode != 200 {
		t.Fatalf("reads need no token on loopback by default: %d", r.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.Replace(e.base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	if _, resp, err := websocket.Dial(ctx, url, nil); err == nil || resp.StatusCode != 401 {
		t.Fatalf("websocket without token: %v", err)
	}
	conn, _, err := websocket.Dial(ctx, url+"?token=s3cret", nil)
	if err != nil {
		t.Fatalf("websocket with token: %v", err)
	}
	conn.CloseNow()
	// Tokens in query strings never reach the request log.
	if r, _ := e.do(t, "GET", "/api/v1/datasets?token=s3cret", nil); r.StatusCode != 200 {
		t.Fatalf("read with a token: %d", r.StatusCode)
	}
	e.stop()
	out := logs.String()
	if !strings.Contains(out, "token=REDACTED") || strings.Contains(out, "s3cret") {
		t.Fatalf("request log leaks the token or lacks the redacted form:\n%s", out)
	}
}

// With read_token on (the default off loopback) reads need the token too;
// the page, its files and /healthz do not.
func TestReadTokenProtectsReads(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8080": false, "localhost:8080": false, "0.0.0.0:8080": true, ":8080": true} {
		if got, err := resolveReadToken("auto", addr); err != nil || got != want {
			t.Errorf("auto on %s: %v %v, want %v", addr, got, err, want)
		}
	}
	if _, err := resolveReadToken("sometimes", "127.0.0.1:1"); err == nil {
		t.Fatal("a bad read_token setting was accepted")
	}
	e := startEnv(t, func(c *Config) { c.Token, c.ReadToken = "s3cret", "on" })
	for _, path := range []string{"/api/v1/datasets", "/api/v1/runs", "/api/v1/jobs", "/metrics"} {
		if r, _ := e.do(t, "GET", path, nil); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d", path, r.StatusCode)
		}
		if r, _ := e.do(t, "GET", path, nil, "Authorization", "Bearer s3cret"); r.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the token: %d", path, r.StatusCode)
		}
	}
	for _, path := range []string{"/healthz", "/"} {
		if r, _ := e.do(t, "GET", path, nil); r.StatusCode == http.StatusUnauthorized || r.StatusCode == http.StatusForbidden {
			t.Errorf("GET %s needs a token: %d", path, r.StatusCode)
		}
	}
}

// A panic in a handler is a 500 with a request line in the log, its stack
// logged once, and a count in /metrics.
func TestRecoveredPanicsAreLoggedAndCounted(t *testing.T) {
	var logs lockedBuffer
	e := startEnvLog(t, nil, &logs)
	e.srv.echo.GET("/api/v1/panic-for-test", func(echo.Context) error { panic("boom") })
	for i := 0; i < 2; i++ {
		if r, body := e.do(t, "GET", "/api/v1/panic-for-test", nil); r.StatusCode != http.StatusInternalServerError || bytes.Contains(body, []byte("boom")) {
			t.Fatalf("panic answered %d %s", r.StatusCode, body)
		}
	}
	e.alive(t)
	_, metrics := e.do(t, "GET", "/metrics", nil)
	if !bytes.Contains(metrics, []byte("diad_recovered_panics_total 2")) {
		t.Fatalf("metrics do not count the panics:\n%s", metrics)
	}
	if !bytes.Contains(metrics, []byte(`diad_http_request_duration_seconds_count{method="GET",route="/api/v1/panic-for-test",status="500"} 2`)) {
		t.Fatal("the latency metric does not see the 500s")
	}
	out := logs.String()
	if strings.Count(out, "recovered panic") != 2 || !strings.Contains(out, "uri=/api/v1/panic-for-test status=500") {
		t.Fatalf("log:\n%s", out)
	}
}

// HEAD works on every GET route: the GET's status and headers, no body.
func TestHeadAnswersLikeGet(t *testing.T) {
	e := startEnv(t, nil)
	for _, path := range []string{"/healthz", "/api/v1/status", "/api/v1/datasets", "/api/v1/runs/20260101T000000Z-abcdef/images"} {
		get, getBody := e.do(t, "GET", path, nil)
		head, headBody := e.do(t, "HEAD", path, nil)
		if head.StatusCode != get.StatusCode || len(headBody) != 0 || head.Header.Get("Content-Type") != get.Header.Get("Content-Type") {
			t.Errorf("HEAD %s: %d %q (%s), GET: %d (%s), %d body bytes", path, head.StatusCode, headBody, head.Header.Get("Content-Type"), get.StatusCode, get.Header.Get("Content-Type"), len(getBody))
		}
	}
	// Other methods are still refused on GET routes.
	if r, _ := e.do(t, "DELETE", "/api/v1/status", nil); r.StatusCode != http.StatusMethodNotAllowed && r.StatusCode != http.StatusNotFound {
		t.Fatalf("DELETE on a GET route: %d", r.StatusCode)
	}
}

func TestStrictInputIsRefusedAtSubmit(t *testing.T) {
	e := startEnv(t, nil)
	cases := []struct {
		name, method, path string
		body               any
		want               int
		mentions           string
	}{
		{"case variant twice", "POST", "/api/v1/datasets", `{"name":"t3","Name":"t5","path":"synth"}`, 400, `"Name"`},
		{"key twice", "POST", "/api/v1/datasets", `{"name":"t3","name":"t5","path":"synth"}`, 400, `given twice`},
		{"case variant alone", "POST", "/api/v1/datasets", `{"Name":"t5","path":"synth"}`, 400, `unknown field`},
		{"trailing garbage", "POST", "/api/v1/datasets", `{"name":"t3","path":"synth"} x`, 400, `trailing`},
		{"two objects", "POST", "/api/v1/datasets", `{"name":"t3","path":"synth"}{"name":"t4","path":"synth"}`, 400, `trailing`},
		{"unknown job config key", "POST", "/api/v1/jobs", shared.JobRequest{Kind: "test", Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "bogus": 1}}, 400, "bogus"},
		{"unknown train config key", "POST", "/api/v1/jobs", shared.JobRequest{Kind: "train", Config: map[string]any{"data": map[string]any{"root": "synth", "roots": "x"}}}, 400, "roots"},
		{"bad threshold", "POST", "/api/v1/jobs", shared.JobRequest{Kind: "test", Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "threshold": "fpr<=abc"}}, 400, "fpr<=abc"},
		{"bad sampler", "POST", "/api/v1/jobs", shared.JobRequest{Kind: "test", Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "sampler": map[string]any{"start_t": 5, "steps": 20}}}, 400, "steps"},
		{"bad scorer", "POST", "/api/v1/jobs", shared.JobRequest{Kind: "test", Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "scorer": "lpips"}}, 400, "lpips"},
		{"huge offset", "GET", "/api/v1/runs/20260101T000000Z-abcdef/images?offset=1e19&limit=1", nil, 404, ""},
	}
	for _, c := range cases {
		r, body := e.do(t, c.method, c.path, c.body)
		var msg shared.APIError
		if err := json.Unmarshal(body, &msg); err != nil || r.StatusCode != c.want || !strings.Contains(msg.Error, c.mentions) {
			t.Errorf("%s: %d %s; want %d mentioning %q", c.name, r.StatusCode, body, c.want, c.mentions)
		}
	}
	// Paging of a real run: numbers that would overflow are refused.
	j := submit(t, e, shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "batch_size": 8}})
	run := waitJob(t, e, j.ID, shared.JobSucceeded).RunID
	for _, q := range []string{"offset=1e19&limit=1", "offset=9223372036854775807", "offset=Inf", "limit=1e3", "limit=0", "offset=-1"} {
		if r, body := e.do(t, "GET", "/api/v1/runs/"+run+"/images?"+q, nil); r.StatusCode != 400 {
			t.Errorf("images?%s: %d %s, want 400", q, r.StatusCode, body)
		}
	}
	if r, body := e.do(t, "GET", "/api/v1/runs/"+run+"/images?offset=1&limit=2", nil); r.StatusCode != 200 {
		t.Errorf("a good page: %d %s", r.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for msg, want := range map[string]string{
		`{"type":"denoise","run_id":"x","image_id":0} junk`:                     "trailing",
		`{"type":"denoise","run_id":"x","image_id":0,"products":["thumbnail"]}`: "thumbnail",
		`{"type":"denoise","Type":"denoise"}`:                                   "given twice",
	} {
		if got := rawDenoise(t, ctx, e.base, msg); !strings.Contains(got, want) {
			t.Errorf("websocket %s: %s; want an error mentioning %q", msg, got, want)
		}
	}
	e.alive(t)
}
