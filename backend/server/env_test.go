package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sugarme/gotch"
	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
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
func fixtures(t testing.TB) (dataRoot, modelFile string) {
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

func startEnv(t testing.TB, mod func(*Config)) *env {
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
func startEnvLog(t testing.TB, mod func(*Config), logOut io.Writer) *env {
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

func (e *env) do(t testing.TB, method, path string, body any, header ...string) (*http.Response, []byte) {
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
func decode(t testing.TB, body []byte, v any) {
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

func waitJob(t testing.TB, e *env, id string, states ...string) shared.Job {
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

func submit(t testing.TB, e *env, req shared.JobRequest) shared.Job {
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
