package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"math"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/parquet-go/parquet-go"
	"github.com/sugarme/gotch"
	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/badmodel"
	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// env is a server under test with a synthetic dataset and a tiny model.
type env struct {
	base, dataDir, dataRoot, dataset, model string
	srv                                     *Server
	stop                                    func()
}

var fixtureOnce sync.Once
var fixtureRoot string

// fixtures builds (once per test binary) a synthetic dataset and a tiny model
// checkpoint with random weights: the server's work does not depend on
// training, only its speed does.
func fixtures(t *testing.T) (dataRoot, modelFile string) {
	fixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "diad-server-test-")
		if err != nil {
			panic(err)
		}
		fixtureRoot = dir
		if _, err := datasets.Synthesize(filepath.Join(dir, "roots", "synth"), datasets.SynthConfig{Seed: 4, Size: 64, Train: 4, TestGood: 4, PerDefect: 2, Categories: []string{"woven", "disc"}}); err != nil {
			panic(err)
		}
		defer torchrt.Pin()()
		torchrt.ManualSeed(3)
		m, err := model.New(model.TinyConfig(), gotch.CPU)
		if err != nil {
			panic(err)
		}
		if err := m.Save(filepath.Join(dir, "model.safetensors"), nil); err != nil {
			panic(err)
		}
		m.Free()
	})
	return filepath.Join(fixtureRoot, "roots"), filepath.Join(fixtureRoot, "model.safetensors")
}

func startEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	return startEnvLog(t, mod, io.Discard)
}

// lockedBuffer collects a server's log lines safely across goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startEnvLog is startEnv with the server's log written to logOut.
func startEnvLog(t *testing.T, mod func(*Config), logOut io.Writer) *env {
	t.Helper()
	root, modelFile := fixtures(t)
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DataRoots = []string{root}
	cfg.Device = "cpu"
	if mod != nil {
		mod(&cfg)
	}
	e := &env{dataDir: cfg.DataDir, dataRoot: root, dataset: filepath.Join(root, "synth")}
	// The model as a train job would leave it (in the data folder the
	// server really uses, which mod may have changed) - except for a demo
	// start, which begins with no trained model.
	e.model = filepath.Join(e.dataDir, "models", "fixture", "model.safetensors")
	if !cfg.Demo {
		if err := os.MkdirAll(filepath.Dir(e.model), 0o755); err != nil {
			t.Fatal(err)
		}
		b := filetest.Read(t, modelFile)
		filetest.Write(t, e.model, b)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logOut, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.srv = s
	addr, stop, err := s.Start()
	if err != nil {
		t.Fatalf("server did not start: %v", err)
	}
	e.base = "http://" + addr
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			if err := stop(); err != nil {
				t.Errorf("stop server: %v", err)
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

func (e *env) do(t *testing.T, method, path string, body any, header ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return resp, out
}

// decode fails the test when body is not the JSON of v: a test must never
// go on with the zero value of a response it failed to read.
func decode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}

// kill stops a child process hard (as a crash would) and reaps it; Wait's
// error is the expected "signal: killed".
func kill(t *testing.T, child *exec.Cmd) {
	t.Helper()
	if err := child.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	if err := child.Wait(); err == nil {
		t.Fatal("killed child exited cleanly")
	}
}

func (e *env) alive(t *testing.T) {
	t.Helper()
	if r, _ := e.do(t, "GET", "/healthz", nil); r.StatusCode != 200 {
		t.Fatal("server stopped serving")
	}
}

func pngBytes(t *testing.T, w, h int, c color.Color) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

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

// denoise runs one trajectory over a websocket and returns its frames.
func denoise(t *testing.T, ctx context.Context, base string, req shared.DenoiseRequest, read bool) ([]shared.Frame, [][][]byte, error) {
	url := strings.Replace(base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, nil, err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(32 << 20)
	_, hello, err := conn.Read(ctx)
	if err != nil || !bytes.Contains(hello, []byte(`"hello"`)) {
		return nil, nil, fmt.Errorf("hello: %s %v", hello, err)
	}
	req.Type = shared.TypeDenoise
	b, err := json.Marshal(req)
	if err != nil {
		return nil, nil, err
	}
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		return nil, nil, err
	}
	if !read {
		<-ctx.Done()
		return nil, nil, nil
	}
	var frames []shared.Frame
	var blobs [][][]byte
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			return frames, blobs, err
		}
		if typ == websocket.MessageText {
			return frames, blobs, fmt.Errorf("server said %s", msg)
		}
		f, bl, err := shared.DecodeFrame(msg)
		if err != nil {
			return frames, blobs, err
		}
		frames = append(frames, f)
		blobs = append(blobs, bl)
		if f.Type == shared.TypeFinal {
			return frames, blobs, nil
		}
	}
}

func upload(t *testing.T, e *env, data []byte) shared.Upload {
	t.Helper()
	r, body := e.do(t, "POST", "/api/v1/uploads", data, "Content-Type", "image/png")
	var u shared.Upload
	if r.StatusCode != http.StatusCreated || json.Unmarshal(body, &u) != nil {
		t.Fatalf("upload: %d %s", r.StatusCode, body)
	}
	return u
}

// denoiseDatasetImage uploads an image of the test dataset (a path under
// it) and streams its whole trajectory for req.
func denoiseDatasetImage(t *testing.T, e *env, rel string, req shared.DenoiseRequest) (shared.Upload, []shared.Frame, [][][]byte) {
	t.Helper()
	img := filetest.Read(t, filepath.Join(e.dataset, rel))
	u := upload(t, e, img)
	req.UploadID = u.ID
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	frames, blobs, err := denoise(t, ctx, e.base, req, true)
	if err != nil {
		t.Fatal(err)
	}
	return u, frames, blobs
}

func TestDenoiseTrajectoryMatchesPredict(t *testing.T) {
	e := startEnv(t, nil)
	u, frames, blobs := denoiseDatasetImage(t, e, filepath.Join("disc", "test", "missing", "000.png"), shared.DenoiseRequest{Seed: 3})
	if len(frames) != 11 || frames[10].Type != shared.TypeFinal {
		t.Fatalf("%d frames", len(frames))
	}
	for i, f := range frames[:10] {
		if f.Type != shared.TypeStep || f.Step != i || f.Total != 10 || len(f.Blobs) != 4 {
			t.Fatalf("frame %d: %+v", i, f)
		}
		for k, b := range f.Blobs {
			if b.Format == "png" {
				im, err := png.Decode(bytes.NewReader(blobs[i][k]))
				if err != nil || im.Bounds().Dx() != b.Width {
					t.Fatalf("frame %d blob %s does not decode: %v", i, b.Name, err)
				}
			}
		}
	}
	// The tiny preset samples from t = 400: 361, 321, ..., 1; every frame
	// says the input was noised to 400.
	if frames[0].T != 361 || frames[9].T != 1 {
		t.Fatalf("timesteps %d..%d", frames[0].T, frames[9].T)
	}
	for i, f := range frames {
		if f.StartT != 400 {
			t.Fatalf("frame %d reports start level %d, want 400", i, f.StartT)
		}
	}
	// The first step and the final frame carry the noise schedule:
	// sqrt(abar_t) every 10 timesteps, falling from ~1 at t = 0.
	for _, i := range []int{0, 10} {
		sig := frames[i].Signal
		if frames[i].ScheduleStride != 10 || len(sig) != 101 || !(sig[0] > 0.99) || !(sig[100] < sig[50] && sig[50] < sig[0]) {
			t.Fatalf("frame %d schedule: stride %d, %d values %v...", i, frames[i].ScheduleStride, len(sig), sig[:min(3, len(sig))])
		}
	}
	if len(frames[1].Signal) != 0 {
		t.Fatalf("step 2 repeats the schedule (%d values)", len(frames[1].Signal))
	}
	final, finalBlobs := frames[10], blobs[10]
	// The CLI's predict on the same image and seed computes the same map.
	cfg := evaluate.PredictConfig{Config: evaluate.DefaultConfig(), Store: true}
	cfg.Checkpoint, cfg.Features, cfg.Device, cfg.Seed, cfg.Threshold = e.model, e.srv.cfg.Features, "cpu", 3, "0.5"
	cfg.ResultsDir = filepath.Join(t.TempDir(), "results")
	uploadPath, err := e.srv.uploadPath(u.ID)
	if err != nil {
		t.Fatal(err)
	}
	preds, runID, err := evaluate.Predict(context.Background(), cfg, []string{uploadPath})
	if err != nil {
		t.Fatal(err)
	}
	maps, err := results.Store{Root: cfg.ResultsDir}.Maps(runID)
	if err != nil {
		t.Fatal(err)
	}
	m := final.Blobs[0]
	if m.Name != "map" || m.Offset != maps[0].Offset || m.Scale != maps[0].Scale || !bytes.Equal(finalBlobs[0], maps[0].Data) {
		t.Fatalf("final map differs from predict's (offset %v/%v scale %v/%v)", m.Offset, maps[0].Offset, m.Scale, maps[0].Scale)
	}
	if final.Score != preds[0].Score {
		t.Fatalf("final score %v, predict %v", final.Score, preds[0].Score)
	}
}

// The websocket changes the model's sampler by the one merge rule: steps
// alone keep the model's start level, the sampler kind is honoured, and a
// start level outside the model's schedule is an error frame.
func TestDenoiseRequestChangesTheSamplerFieldByField(t *testing.T) {
	e := startEnv(t, nil)
	src := filepath.Join("disc", "test", "missing", "000.png")
	up, frames, _ := denoiseDatasetImage(t, e, src, shared.DenoiseRequest{Seed: 3, Steps: 5, Sampler: "dpm++2m", Products: []string{shared.ProductLatent}})
	var ts []int
	for _, f := range frames {
		if f.Type == shared.TypeStep {
			ts = append(ts, f.T)
		}
	}
	// The tiny preset starts at 400: five steps are 321, 241, 161, 81, 1.
	if want := []int{321, 241, 161, 81, 1}; !slices.Equal(ts, want) {
		t.Fatalf("timesteps %v, want %v", ts, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for want, req := range map[string]shared.DenoiseRequest{
		"outside [0, 1000)": {UploadID: up.ID, StartT: 1000},
		"unknown sampler":   {UploadID: up.ID, Sampler: "euler"},
		"takes none":        {UploadID: up.ID, Sampler: "ddpm", Eta: ptr(0.5)},
	} {
		if _, _, err := denoise(t, ctx, e.base, req, true); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error with %q", req, err, want)
		}
	}
	// A request that cannot run is answered and the connection stays: the
	// next request on it streams (a protocol violation still closes it).
	url := strings.Replace(e.base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(32 << 20)
	if _, _, err := conn.Read(ctx); err != nil { // hello
		t.Fatal(err)
	}
	for _, req := range []shared.DenoiseRequest{{UploadID: "u-gone"}, {UploadID: up.ID, Steps: 2, Products: []string{shared.ProductLatent}}} {
		req.Type = shared.TypeDenoise
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	typ, msg, err := conn.Read(ctx)
	if err != nil || typ != websocket.MessageText || !bytes.Contains(msg, []byte(`"error"`)) {
		t.Fatalf("first answer: %s %v", msg, err)
	}
	for steps := 0; ; {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("after a refused request the connection ended: %v", err)
		}
		f, _, err := shared.DecodeFrame(msg)
		if typ != websocket.MessageBinary || err != nil {
			t.Fatalf("frame: %v %s", err, msg)
		}
		if f.Type == shared.TypeFinal {
			if steps != 2 {
				t.Fatalf("%d step frames, want 2", steps)
			}
			break
		}
		steps++
	}
	e.alive(t)
}

// A libtorch failure (a checkpoint that passes every check but cannot be
// built) fails the websocket request, the model load and the job with
// libtorch's message, and the server serves the next request.
func TestLibtorchFailuresFailTheRequestNotTheServer(t *testing.T) {
	e := startEnv(t, nil)
	giant := filepath.Join(e.dataDir, "models", "zz-giant", "model.safetensors")
	if err := os.MkdirAll(filepath.Dir(giant), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := badmodel.Giant(giant); err != nil {
		t.Fatal(err)
	}
	// A corrupt file among the models is listed with its error, not hidden.
	broken := filepath.Join(e.dataDir, "models", "broken", "model.safetensors")
	if err := os.MkdirAll(filepath.Dir(broken), 0o755); err != nil {
		t.Fatal(err)
	}
	filetest.Write(t, broken, []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json"))
	_, body := e.do(t, "GET", "/api/v1/models", nil)
	var models []shared.Model
	decode(t, body, &models)
	listed := false
	for _, m := range models {
		if m.Path == broken {
			listed = m.Error != "" && m.Preset == ""
		}
	}
	if !listed {
		t.Fatalf("the corrupt model is not listed with an error: %s", body)
	}
	img := filetest.Read(t, filepath.Join(e.dataset, "disc", "test", "missing", "000.png"))
	up := upload(t, e, img)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// No model is loaded yet: the websocket loads the newest, the giant one.
	if _, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{UploadID: up.ID}, true); err == nil || !strings.Contains(err.Error(), badmodel.AllocationError) {
		t.Fatalf("denoise with the giant model: %v", err)
	}
	e.alive(t)
	var r *http.Response
	r, body = e.do(t, "POST", "/api/v1/models/load", map[string]string{"path": giant})
	if r.StatusCode != http.StatusUnprocessableEntity || !bytes.Contains(body, []byte(badmodel.AllocationError)) {
		t.Fatalf("load: %d %s", r.StatusCode, body)
	}
	r, body = e.do(t, "POST", "/api/v1/jobs", shared.JobRequest{Kind: shared.JobPredict, Config: map[string]any{"checkpoint": giant, "threshold": "0.5", "scorer": "pixel", "uploads": []string{up.ID}}})
	var job shared.Job
	if r.StatusCode != http.StatusAccepted || json.Unmarshal(body, &job) != nil {
		t.Fatalf("submit: %d %s", r.StatusCode, body)
	}
	deadline := time.Now().Add(time.Minute)
	for job.State != shared.JobFailed && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		_, body = e.do(t, "GET", "/api/v1/jobs/"+job.ID, nil)
		decode(t, body, &job)
		if job.State == shared.JobSucceeded {
			t.Fatal("the giant model's job succeeded")
		}
	}
	if job.State != shared.JobFailed || !strings.Contains(job.Error, badmodel.AllocationError) || strings.Contains(job.Error, "goroutine") {
		t.Fatalf("job %s: %q", job.State, job.Error)
	}
	// The good model still serves a trajectory.
	r, body = e.do(t, "POST", "/api/v1/models/load", map[string]string{"path": e.model})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("load the good model: %d %s", r.StatusCode, body)
	}
	frames, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{UploadID: up.ID, Products: []string{shared.ProductLatent}}, true)
	if err != nil || len(frames) == 0 || frames[len(frames)-1].Type != shared.TypeFinal {
		t.Fatalf("denoise after the failures: %d frames, %v", len(frames), err)
	}
}

func ptr[T any](v T) *T { return &v }

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

func waitJob(t *testing.T, e *env, id string, states ...string) shared.Job {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		_, body := e.do(t, "GET", "/api/v1/jobs/"+id, nil)
		var j shared.Job
		decode(t, body, &j)
		for _, s := range states {
			if j.State == s {
				return j
			}
		}
		// A job that ended in another state can no longer reach one of
		// states: fail now, with its error.
		if j.State == shared.JobFailed || j.State == shared.JobCancelled || j.State == shared.JobSucceeded {
			t.Fatalf("job %s %s (waiting for %v): %s", id, j.State, states, j.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s did not reach %v", id, states)
	return shared.Job{}
}

func submit(t *testing.T, e *env, req shared.JobRequest) shared.Job {
	t.Helper()
	r, body := e.do(t, "POST", "/api/v1/jobs", req)
	var j shared.Job
	if r.StatusCode != http.StatusAccepted || json.Unmarshal(body, &j) != nil {
		t.Fatalf("submit: %d %s", r.StatusCode, body)
	}
	return j
}

// followChanges opens the change feed as a page does and delivers what it
// says until the test ends (the channel closes when the feed does).
func followChanges(t *testing.T, e *env) <-chan shared.Change {
	t.Helper()
	changes := make(chan shared.Change, 64)
	ctx, cancel := context.WithCancel(context.Background())
	conn, _, err := websocket.Dial(ctx, strings.Replace(e.base, "http://", "ws://", 1)+"/api/v1/ws/changes", nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); conn.CloseNow() })
	go func() {
		defer close(changes)
		for {
			_, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var c shared.Change
			if err := json.Unmarshal(msg, &c); err != nil {
				t.Errorf("change feed sent %q: %v", msg, err)
				return
			}
			changes <- c
		}
	}()
	return changes
}

func TestTestJobResultsQueryAndLabels(t *testing.T) {
	e := startEnv(t, nil)
	// An open page hears every change: collect what /ws/changes says.
	changes := followChanges(t, e)
	j := submit(t, e, shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "batch_size": 4}})
	// Follow the job on its websocket.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(e.base, "http://", "ws://", 1)+"/api/v1/ws/jobs/"+j.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last shared.JobEvent
	events := 0
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			break
		}
		decode(t, msg, &last)
		events++
	}
	if last.State != shared.JobSucceeded || events < 3 {
		t.Fatalf("job stream ended with %+v after %d events", last, events)
	}
	done := waitJob(t, e, j.ID, shared.JobSucceeded)
	if done.RunID == "" {
		t.Fatalf("job %+v has no run", done)
	}
	_, body := e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/images?category=disc&sort=-score&limit=3&offset=1", nil)
	var page shared.ImagePage
	decode(t, body, &page)
	if page.Total != 4+2*4 || len(page.Images) != 3 || page.Images[0].Score < page.Images[1].Score || page.Images[0].Category != "disc" {
		t.Fatalf("page %+v", page)
	}
	if r, _ := e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/images?min_score=abc", nil); r.StatusCode != 400 {
		t.Fatalf("bad filter: %d", r.StatusCode)
	}
	img := page.Images[0].ImageID
	// The explorer replays a run image with the run's sampler and the
	// image's own noise: the same score as in the run, up to the float32
	// rounding of batched convolutions (the run scored it in a batch of
	// four; measured 4e-7 relative).
	for _, im := range page.Images[:2] {
		id := im.ImageID
		frames, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{RunID: done.RunID, ImageID: &id, Products: []string{shared.ProductLatent}}, true)
		if err != nil {
			t.Fatal(err)
		}
		final := frames[len(frames)-1]
		if final.Type != shared.TypeFinal || math.Abs(final.Score-im.Score) > 2e-6*math.Abs(im.Score) {
			t.Fatalf("image %d: explorer score %v, run score %v", id, final.Score, im.Score)
		}
	}
	r, body := e.do(t, "PUT", fmt.Sprintf("/api/v1/runs/%s/images/%d/label", done.RunID, img), shared.LabelRequest{Verdict: "anomalous", Note: "dent", User: "qa"})
	if r.StatusCode != 200 {
		t.Fatalf("label: %d %s", r.StatusCode, body)
	}
	if r, _ := e.do(t, "PUT", fmt.Sprintf("/api/v1/runs/%s/images/%d/label", done.RunID, img), shared.LabelRequest{Verdict: "maybe"}); r.StatusCode != 400 {
		t.Fatalf("bad verdict: %d", r.StatusCode)
	}
	_, body = e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/images?verdict=anomalous", nil)
	decode(t, body, &page)
	if page.Total != 1 || page.Images[0].AnalystNote != "dent" || page.Images[0].AnalystTime == nil {
		t.Fatalf("labelled page %+v", page)
	}
	rows, err := results.Store{Root: e.srv.cfg.ResultsDir}.Images(done.RunID)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if (row.ImageID == img) != (row.AnalystLabel == "anomalous") {
			t.Fatalf("Parquet row %+v", row)
		}
	}
	// What the change feed said: the job's states, its run, the label.
	want := map[string]bool{"jobs " + shared.JobQueued: true, "jobs " + shared.JobRunning: true, "jobs " + shared.JobSucceeded: true,
		"runs " + done.RunID: true, fmt.Sprintf("labels %s %d", done.RunID, img): true}
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case c, ok := <-changes:
			if !ok {
				t.Fatalf("the change feed ended; not heard: %v", want)
			}
			switch c.Kind {
			case shared.ChangeJobs:
				delete(want, "jobs "+c.State)
			case shared.ChangeRuns:
				delete(want, "runs "+c.RunID)
			case shared.ChangeLabels:
				if len(c.ImageIDs) == 1 && c.Type == shared.TypeChange {
					delete(want, fmt.Sprintf("labels %s %d", c.RunID, c.ImageIDs[0]))
				}
			}
		case <-deadline:
			t.Fatalf("not heard on /ws/changes: %v", want)
		}
	}
	if r, body := e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/export?format=csv", nil); r.StatusCode != 200 || !bytes.Contains(body, []byte("dent")) {
		t.Fatalf("export: %d", r.StatusCode)
	}
	if r, body := e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/files/images.parquet", nil); r.StatusCode != 200 || !bytes.HasPrefix(body, []byte("PAR1")) {
		t.Fatalf("parquet download: %d", r.StatusCode)
	}
	// Export what a view shows: the listing's filters and exact image ids,
	// as CSV or as Parquet a Parquet reader opens.
	if r, body := e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/export?format=csv&verdict=anomalous", nil); r.StatusCode != 200 ||
		bytes.Count(body, []byte("\n")) != 2 || !bytes.Contains(body, []byte("dent")) {
		t.Fatalf("export of the anomalous verdicts: %d\n%s", r.StatusCode, body)
	}
	pick := []int64{rows[0].ImageID, rows[len(rows)-1].ImageID}
	r, body = e.do(t, "GET", fmt.Sprintf("/api/v1/runs/%s/export?format=parquet&image_ids=%d,%d", done.RunID, pick[0], pick[1]), nil)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/vnd.apache.parquet" {
		t.Fatalf("parquet export: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	exported, err := parquet.Read[results.ImageRow](bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if len(exported) != 2 || exported[0].ImageID != pick[0] || exported[1].ImageID != pick[1] || exported[0].Path != rows[0].Path {
		t.Fatalf("exported rows %+v, want images %v", exported, pick)
	}
	for _, bad := range []string{"image_ids=1,x", "min_score=abc", "format=parquet&table=metrics", "format=xml"} {
		if r, _ := e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/export?"+bad, nil); r.StatusCode != 400 {
			t.Errorf("export?%s: %d, want 400", bad, r.StatusCode)
		}
	}
	if r, body := e.do(t, "GET", fmt.Sprintf("/api/v1/runs/%s/images/%d/map", done.RunID, img), nil); r.StatusCode != 200 || r.Header.Get("X-Map-Scale") == "" || !bytes.HasPrefix(body, []byte("\x89PNG")) {
		t.Fatalf("map: %d", r.StatusCode)
	}
	if r, _ := e.do(t, "GET", fmt.Sprintf("/api/v1/runs/%s/images/%d/source", done.RunID, img), nil); r.StatusCode != 200 {
		t.Fatalf("source: %d", r.StatusCode)
	}
	if r, body := e.do(t, "PUT", "/api/v1/runs/"+done.RunID+"/threshold", shared.ThresholdRequest{Value: 0.01, User: "qa"}); r.StatusCode != 200 {
		t.Fatalf("threshold: %d %s", r.StatusCode, body)
	}
	_, body = e.do(t, "GET", "/api/v1/runs/"+done.RunID+"/images?predicted=0", nil)
	decode(t, body, &page)
	if page.Total != 0 {
		t.Fatalf("after threshold 0.01, %d images predicted normal", page.Total)
	}
}

// childEnv makes the test binary run a server (for the kill test), which
// writes its address to the file childAddrEnv names.
const (
	childEnv     = "DIAD_SERVER_CHILD"
	childAddrEnv = "DIAD_SERVER_CHILD_ADDR"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		var cfg Config
		if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		s, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		// The bound address (the config asks for port 0) goes to a file.
		ready := make(chan string, 1)
		go func() {
			addr := <-ready
			if err := os.WriteFile(os.Getenv(childAddrEnv), []byte(addr), 0o644); err != nil {
				os.Exit(5)
			}
		}()
		if err := s.Run(context.Background(), ready); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		os.Exit(0)
	}
	code := m.Run()
	if fixtureRoot != "" {
		os.RemoveAll(fixtureRoot)
	}
	os.Exit(code)
}

func TestKillDuringJobThenRestart(t *testing.T) {
	root, _ := fixtures(t)
	dataDir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.DataRoots, cfg.Device = "127.0.0.1:0", dataDir, []string{root}, "cpu"
	spec, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(t.TempDir(), "addr")
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+string(spec), childAddrEnv+"="+addrFile)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var e *env
	deadline := time.Now().Add(time.Minute)
	for {
		if addr, err := os.ReadFile(addrFile); err == nil && len(addr) > 0 {
			e = &env{base: "http://" + string(addr)}
			if resp, err := http.Get(e.base + "/healthz"); err == nil {
				if err := resp.Body.Close(); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			kill(t, child)
			t.Fatal("child server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	j := submit(t, e, shared.JobRequest{Kind: shared.JobTrain, Config: map[string]any{"data": map[string]any{"root": "synth"},
		"autoencoder_steps": 0, "max_steps": 1000, "checkpoint_every": 1, "batch_size": 2}})
	waitJob(t, e, j.ID, shared.JobRunning)
	ckpt := filepath.Join(dataDir, "models", j.ID, "checkpoint.safetensors")
	for deadline := time.Now().Add(2 * time.Minute); ; {
		if _, err := os.Stat(ckpt); err == nil {
			break
		}
		var now shared.Job
		_, body := e.do(t, "GET", "/api/v1/jobs/"+j.ID, nil)
		decode(t, body, &now)
		if now.State != shared.JobRunning && now.State != shared.JobQueued {
			kill(t, child)
			t.Fatalf("the train job ended %s before its first checkpoint: %s", now.State, now.Error)
		}
		if time.Now().After(deadline) {
			kill(t, child)
			t.Fatal("no checkpoint")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // mid-way through later steps
	kill(t, child)

	// Restart on the same data: the job is reported as interrupted, not lost
	// and not "running"; the checkpoint it left is whole.
	e2 := startEnv(t, func(c *Config) { c.DataDir = dataDir })
	got := waitJob(t, e2, j.ID, shared.JobFailed, shared.JobSucceeded)
	if got.State != shared.JobFailed || !strings.Contains(got.Error, "server stopped") {
		t.Fatalf("after restart: %+v", got)
	}
	r, err := checkpoint.Open(ckpt)
	if err != nil {
		t.Fatalf("checkpoint corrupt after kill: %v", err)
	}
	r.Close()
	// A temporary file of the interrupted write may remain beside it; it is
	// never offered as a model.
	_, body := e2.do(t, "GET", "/api/v1/models", nil)
	var models []shared.Model
	decode(t, body, &models)
	for _, m := range models {
		if strings.Contains(filepath.Base(m.Path), ".tmp") {
			t.Fatalf("a temporary file is listed as a model: %s", m.Path)
		}
	}
}

func TestDemoStartsTraining(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Demo = true; c.DataDir = t.TempDir() })
	_, body := e.do(t, "GET", "/api/v1/datasets", nil)
	var ds []shared.Dataset
	decode(t, body, &ds)
	if len(ds) != 1 || ds[0].Name != "synth" || len(ds[0].Categories) != 6 {
		t.Fatalf("datasets %s", body)
	}
	cancelQuickTraining(t, e)
}

// demoModelDir writes a demo-preset model (random weights, float16 as the
// committed one) and, if withRun, an evaluation run beside it whose image
// paths point into another machine's copy of the demo dataset.
func demoModelDir(t *testing.T, withRun bool) string {
	t.Helper()
	dir := t.TempDir()
	defer torchrt.Pin()()
	m, err := model.New(model.DemoConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if err := m.SaveHalf(filepath.Join(dir, "model.safetensors"), nil); err != nil {
		t.Fatal(err)
	}
	if !withRun {
		return dir
	}
	elsewhere := "/elsewhere/var/demo-data/synth-128"
	meta := results.RunMeta{RunID: "20260101T000000Z-abcdef", Kind: "test", Preset: "demo", Checkpoint: "/elsewhere/model.safetensors",
		Threshold: results.ThresholdInfo{Value: 0.25, Policy: "max-f1"}, Scorer: "ae+ssim"}
	meta.Dataset.Root = elsewhere
	var rows []results.ImageRow
	var maps []results.MapRow
	for i, rel := range []string{"woven/test/good/000.png", "woven/test/hole/000.png"} {
		rows = append(rows, results.ImageRow{RunID: meta.RunID, ImageID: int64(i), Category: "woven", Path: filepath.Join(elsewhere, rel),
			Split: "test", GroundTruth: int32(i), Score: 0.1 + 0.3*float64(i), Scorer: "ae+ssim", Threshold: 0.25, Predicted: int32(i)})
		maps = append(maps, results.Quantize(meta.RunID, int64(i), 4, 4, make([]float32, 16)))
	}
	if err := (results.Store{Root: filepath.Join(dir, DemoRunDir)}).Write(results.Run{Meta: meta, Images: rows, Maps: maps}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestDemoServesTheDemoModelAndItsRunAtOnce(t *testing.T) {
	dir := demoModelDir(t, true)
	demo := filepath.Join(dir, "model.safetensors")
	dataDir := t.TempDir()
	e := startEnv(t, func(c *Config) { c.Demo = true; c.DataDir = dataDir; c.DemoModel = demo })
	_, body := e.do(t, "GET", "/api/v1/status", nil)
	var st Status
	decode(t, body, &st)
	if st.Model != demo || len(st.Notices) != 0 {
		t.Fatalf("status %s: want the demo model loaded and no notice", body)
	}
	_, body = e.do(t, "GET", "/api/v1/runs", nil)
	var runs []shared.RunInfo
	if err := json.Unmarshal(body, &runs); err != nil || len(runs) != 1 || runs[0].RunID != "20260101T000000Z-abcdef" {
		t.Fatalf("runs %s (%v): want the committed demo run", body, err)
	}
	_, body = e.do(t, "GET", "/api/v1/runs/20260101T000000Z-abcdef/images", nil)
	var page struct {
		Images []shared.ImageInfo `json:"images"`
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page.Images) != 2 {
		t.Fatalf("images %s (%v)", body, err)
	}
	for _, im := range page.Images {
		want := filepath.Join(dataDir, demoData, demoSynthDir)
		if !strings.HasPrefix(im.Path, want) {
			t.Fatalf("image path %s is not in this server's demo dataset %s", im.Path, want)
		}
		if _, err := os.Stat(im.Path); err != nil {
			t.Fatalf("the demo run's image is missing: %v", err)
		}
	}
	// The quick training still runs, as a demonstration; it must not queue
	// an evaluation of the tiny model or replace the demo model.
	cancelQuickTraining(t, e)
}

func TestDemoFallsBackToTheQuickTrainingWithANotice(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "model.safetensors")
	filetest.Write(t, garbage, []byte("not a checkpoint"))
	_, tiny := fixtures(t)
	for _, c := range []struct{ name, path, notice string }{
		{"missing", filepath.Join(t.TempDir(), "absent.safetensors"), "absent.safetensors"},
		{"corrupt", garbage, garbage},
		{"another preset", tiny, `preset "tiny", not demo`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := startEnv(t, func(cfg *Config) { cfg.Demo = true; cfg.DataDir = t.TempDir(); cfg.DemoModel = c.path })
			_, body := e.do(t, "GET", "/api/v1/status", nil)
			var st Status
			decode(t, body, &st)
			if len(st.Notices) != 1 || !strings.Contains(st.Notices[0], c.notice) || st.Model != "" {
				t.Fatalf("status %s: want one notice naming %q and no model yet", body, c.notice)
			}
			cancelQuickTraining(t, e)
		})
	}
}

func TestRelativeCheckpointIsTheSameModelAsItsAbsolutePath(t *testing.T) {
	_, modelFile := fixtures(t)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, modelFile)
	if err != nil || filepath.IsAbs(rel) {
		t.Fatalf("relative path of %s: %q %v", modelFile, rel, err)
	}
	// The model lies outside every data root, so only the configured
	// checkpoint itself may be named.
	e := startEnv(t, func(c *Config) { c.Checkpoint = rel })
	j := submit(t, e, shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": modelFile, "data": map[string]any{"root": "synth"}}})
	e.do(t, "POST", "/api/v1/jobs/"+j.ID+"/cancel", nil)
	waitJob(t, e, j.ID, shared.JobCancelled, shared.JobSucceeded)
}

func TestRegisteredDatasetsSurviveARestart(t *testing.T) {
	dataDir := t.TempDir()
	e := startEnv(t, func(c *Config) { c.DataDir = dataDir })
	if r, b := e.do(t, "POST", "/api/v1/datasets", shared.RegisterDataset{Name: "kept", Path: "synth"}); r.StatusCode != 201 {
		t.Fatalf("register: %d %s", r.StatusCode, b)
	}
	e.stop()
	e2 := startEnv(t, func(c *Config) { c.DataDir = dataDir })
	_, body := e2.do(t, "GET", "/api/v1/datasets", nil)
	var ds []shared.Dataset
	decode(t, body, &ds)
	found := false
	for _, d := range ds {
		if d.Name == "kept" && d.Root == e.dataset && d.Test > 0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("datasets after a restart: %s", body)
	}
}

// Thresholds are data: a restarted server finds a model's threshold in its
// test runs on disk, and only in runs of the same scorer identity.
func TestThresholdsAreFoundInTheRunsAfterARestart(t *testing.T) {
	dataDir := t.TempDir()
	e := startEnv(t, func(c *Config) { c.DataDir = dataDir })
	store := results.Store{Root: e.srv.cfg.ResultsDir}
	pixel := waitJob(t, e, submit(t, e, shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "scorer": "pixel", "batch_size": 4}}).ID, shared.JobSucceeded)
	pixelMeta, err := store.Meta(pixel.RunID)
	if err != nil {
		t.Fatal(err)
	}
	img := filetest.Read(t, filepath.Join(e.dataset, "disc", "test", "missing", "000.png"))
	up := upload(t, e, img)
	e.stop()

	e2 := startEnv(t, func(c *Config) { c.DataDir = dataDir })
	// The default scorer (random resnet18) has no test run yet: no threshold.
	j := submit(t, e2, shared.JobRequest{Kind: shared.JobPredict, Config: map[string]any{"checkpoint": e2.model, "uploads": []string{up.ID}}})
	var failed shared.Job
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		_, body := e2.do(t, "GET", "/api/v1/jobs/"+j.ID, nil)
		decode(t, body, &failed)
		if failed.State == shared.JobFailed || failed.State == shared.JobSucceeded {
			break
		}
	}
	if failed.State != shared.JobFailed || !strings.Contains(failed.Error, "no test run of this model with scorer resnet") {
		t.Fatalf("predict with another scorer's threshold: %s %q", failed.State, failed.Error)
	}
	// With the pixel scorer, the pixel run's threshold, found after the restart.
	j = submit(t, e2, shared.JobRequest{Kind: shared.JobPredict, Config: map[string]any{"checkpoint": e2.model, "scorer": "pixel", "uploads": []string{up.ID}}})
	done := waitJob(t, e2, j.ID, shared.JobSucceeded)
	meta, err := store.Meta(done.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Threshold.Value != pixelMeta.Threshold.Value || meta.Scorer != "pixel" {
		t.Fatalf("predict threshold %v (scorer %s), the pixel run's %v", meta.Threshold.Value, meta.Scorer, pixelMeta.Threshold.Value)
	}
	// A default-scorer test run gives the explorer its verdict, after
	// another restart too.
	def := waitJob(t, e2, submit(t, e2, shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e2.model, "data": map[string]any{"root": "synth"}, "batch_size": 4}}).ID, shared.JobSucceeded)
	defMeta, err := store.Meta(def.RunID)
	if err != nil {
		t.Fatal(err)
	}
	e2.stop()
	e3 := startEnv(t, func(c *Config) { c.DataDir = dataDir })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	frames, _, err := denoise(t, ctx, e3.base, shared.DenoiseRequest{UploadID: up.ID, Products: []string{shared.ProductLatent}}, true)
	if err != nil {
		t.Fatal(err)
	}
	final := frames[len(frames)-1]
	if final.Threshold != defMeta.Threshold.Value || final.Anomalous != shared.Predicted(final.Score, defMeta.Threshold.Value) {
		t.Fatalf("final frame threshold %v anomalous %v (score %v), the run's threshold %v", final.Threshold, final.Anomalous, final.Score, defMeta.Threshold.Value)
	}
}

// Uploads are bounded by the memory they decode to, by how many decode at
// once, and by size in multipart form too; what is stored is the original file.
func TestUploadResourceLimits(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.UploadDecodes, c.UploadWait = 1, time.Millisecond })
	// A header that claims 4096x4096 16-bit RGBA: within the pixel limit,
	// but 128 MiB decoded. Refused before decoding.
	ihdr := []byte("IHDR\x00\x00\x10\x00\x00\x00\x10\x00\x10\x06\x00\x00\x00")
	deep := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), ihdr...)
	deep = binary.BigEndian.AppendUint32(deep, crc32.ChecksumIEEE(ihdr))
	if r, body := e.do(t, "POST", "/api/v1/uploads", deep); r.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(body, []byte("decode to")) {
		t.Fatalf("16-bit 4096x4096: %d %s", r.StatusCode, body)
	}
	// Multipart over the byte limit: 413, as for a raw body.
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	fw, err := w.CreateFormFile("image", "big.png")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(bytes.Repeat([]byte{0}, int(e.srv.cfg.MaxUploadBytes)+2<<20)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if r, body := e.do(t, "POST", "/api/v1/uploads", mp.Bytes(), "Content-Type", w.FormDataContentType()); r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize multipart: %d %s", r.StatusCode, body)
	}
	// The original bytes are kept: a JPEG stays the same JPEG.
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, img, nil); err != nil {
		t.Fatal(err)
	}
	up := upload(t, e, jb.Bytes())
	path, err := e.srv.uploadPath(up.ID)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(stored, jb.Bytes()) || up.Format != "jpeg" {
		t.Fatalf("stored %d bytes (%v), uploaded %d, format %s", len(stored), err, jb.Len(), up.Format)
	}
	// One decode at a time and no waiting: of many large uploads at once,
	// some are turned away with 503 and Retry-After, and none fails otherwise.
	big := image.NewRGBA(image.Rect(0, 0, 1400, 1400))
	for i := range big.Pix {
		big.Pix[i] = byte(i * 31 % 251)
	}
	var bb bytes.Buffer
	if err := png.Encode(&bb, big); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[int]int{}
	retryAfter := true
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest("POST", e.base+"/api/v1/uploads", bytes.NewReader(bb.Bytes()))
			if err != nil {
				t.Error(err)
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			if err := resp.Body.Close(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
				retryAfter = false
			}
		}()
	}
	wg.Wait()
	if codes[http.StatusServiceUnavailable] == 0 || codes[http.StatusCreated] == 0 || codes[http.StatusCreated]+codes[http.StatusServiceUnavailable] != 8 || !retryAfter {
		t.Fatalf("concurrent uploads: status counts %v (Retry-After on every 503: %v)", codes, retryAfter)
	}
	e.alive(t)
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

// Uploads expire by age at start and by total size after each upload,
// oldest first; the upload just made stays.
func TestUploadsExpire(t *testing.T) {
	dataDir := t.TempDir()
	dir := filepath.Join(dataDir, "uploads")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(name string, size int, age time.Duration) string {
		p := filepath.Join(dir, name)
		filetest.Write(t, p, make([]byte, size))
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ancient := write("u-00000000000000aa.img", 10, 30*24*time.Hour)
	older := write("u-00000000000000bb.img", 50<<10, 2*time.Hour)
	newer := write("u-00000000000000cc.img", 50<<10, time.Hour)
	other := write("notes.txt", 10, 30*24*time.Hour)
	e := startEnv(t, func(c *Config) {
		c.DataDir = dataDir
		c.UploadMaxAge = 7 * 24 * time.Hour
		c.UploadMaxTotal = 100 << 10
	})
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if exists(ancient) || !exists(older) || !exists(newer) || !exists(other) {
		t.Fatalf("after start: ancient %v older %v newer %v other %v", exists(ancient), exists(older), exists(newer), exists(other))
	}
	// Any upload takes the total over 100 KiB: the oldest goes.
	img := image.NewRGBA(image.Rect(0, 0, 100, 100))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 13 % 251)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	up := upload(t, e, b.Bytes())
	if _, err := e.srv.uploadPath(up.ID); err != nil {
		t.Fatalf("the new upload was removed: %v", err)
	}
	if exists(older) || !exists(newer) {
		t.Fatalf("after the upload (%d bytes): older %v newer %v", b.Len(), exists(older), exists(newer))
	}
}

// rawDenoise sends one raw text message on the denoise websocket and returns
// the server's first text answer.
func rawDenoise(t *testing.T, ctx context.Context, base, msg string) string {
	t.Helper()
	url := strings.Replace(base, "http://", "ws://", 1) + "/api/v1/ws/denoise"
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if _, _, err := conn.Read(ctx); err != nil { // hello
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("no answer to %s: %v", msg, err)
		}
		if typ == websocket.MessageText {
			return string(b)
		}
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

// cancelQuickTraining checks that the only job is the demo's quick training
// (no evaluation of its model is queued) and cancels it.
func cancelQuickTraining(t *testing.T, e *env) {
	t.Helper()
	_, body := e.do(t, "GET", "/api/v1/jobs", nil)
	var js []shared.Job
	if err := json.Unmarshal(body, &js); err != nil || len(js) != 1 || js[0].Kind != shared.JobTrain {
		t.Fatalf("jobs %s (%v): want only the quick training", body, err)
	}
	e.do(t, "POST", "/api/v1/jobs/"+js[0].ID+"/cancel", nil)
	waitJob(t, e, js[0].ID, shared.JobCancelled)
}

// TestModelsListedUnderAnyDataDirName: a data folder whose name holds glob
// metacharacters still lists the models inside it.
func TestModelsListedUnderAnyDataDirName(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data[1]*")
	e := startEnv(t, func(c *Config) { c.DataDir = dataDir })
	model := filepath.Join(dataDir, "models", "j-1", "model.safetensors")
	if err := os.MkdirAll(filepath.Dir(model), 0o755); err != nil {
		t.Fatal(err)
	}
	filetest.Write(t, model, []byte("not a checkpoint"))
	_, body := e.do(t, "GET", "/api/v1/models", nil)
	var models []shared.Model
	decode(t, body, &models)
	for _, m := range models {
		if m.Path == model {
			return
		}
	}
	t.Fatalf("%s is not listed: %s", model, body)
}

// TestUploadPeakRSSIsBounded: sixteen uploads at once, each decoding to
// 61 MiB (4000x4000 RGBA, ~250 KB as PNG), raise the server's peak RSS by
// at most the bound docs/api.md states: UploadDecodes x 2 x the decoded size
// (the decoder's image and its working rows), plus 64 MiB.
func TestUploadPeakRSSIsBounded(t *testing.T) {
	e := startEnv(t, nil)
	img := image.NewRGBA(image.Rect(0, 0, 4000, 4000))
	for i := range img.Pix {
		img.Pix[i] = byte(i / 4096)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	img = nil
	decoded := int64(4000 * 4000 * 4)
	if decoded > e.srv.cfg.MaxUploadDecodedBytes {
		t.Fatalf("the test image (%d bytes decoded) is over the limit it means to stay under", decoded)
	}
	torchrt.TrimHeap()
	base := torchrt.RSSMiB()
	if err := torchrt.ResetPeakRSS(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(e.base+"/api/v1/uploads", "image/png", bytes.NewReader(b.Bytes()))
			if err != nil {
				t.Error(err)
				return
			}
			if err := resp.Body.Close(); err != nil {
				t.Error(err)
			}
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	growth := torchrt.PeakRSSMiB() - base
	bound := float64(int64(e.srv.cfg.UploadDecodes)*2*decoded)/(1<<20) + 64
	t.Logf("16 uploads of %d KB (%d MiB decoded): statuses %v; peak RSS %.0f MiB over the %.0f MiB before (bound %.0f)",
		b.Len()>>10, decoded>>20, codes, growth, base, bound)
	if codes[http.StatusCreated] == 0 || codes[http.StatusCreated]+codes[http.StatusServiceUnavailable] != 16 {
		t.Fatalf("statuses %v", codes)
	}
	if growth > bound {
		t.Fatalf("peak RSS grew by %.0f MiB, over the bound of %.0f MiB", growth, bound)
	}
}
