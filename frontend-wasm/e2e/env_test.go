//go:build !js

package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/server"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
	"github.com/sugarme/gotch"
)

// artifacts is where screenshots and measurements go (git-ignored).
func artifacts(t *testing.T) string {
	dir := os.Getenv("DIAD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	dir = filepath.Join(dir, "e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// env is a running server with a run of the synthetic dataset.
type env struct {
	base, dataDir, root, model string
	cfg                        server.Config
	stop                       func()
}

func startServer(t *testing.T, cfg server.Config) (string, func()) {
	t.Helper()
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr, stop, err := s.Start()
	if err != nil {
		t.Fatalf("server did not start: %v", err)
	}
	return addr, func() {
		if err := stop(); err != nil {
			t.Errorf("server stop: %v", err)
		}
	}
}

func newEnv(t *testing.T, webDir string) *env {
	e := &env{dataDir: t.TempDir(), root: t.TempDir()}
	if _, err := datasets.Synthesize(filepath.Join(e.root, "synth"), datasets.SynthConfig{Seed: 5, Size: 64, Train: 4, TestGood: 4, PerDefect: 2, Categories: []string{"woven", "disc"}}); err != nil {
		t.Fatal(err)
	}
	e.model = filepath.Join(e.dataDir, "models", "fixture", "model.safetensors")
	if err := os.MkdirAll(filepath.Dir(e.model), 0o755); err != nil {
		t.Fatal(err)
	}
	// A trained tiny model (DIAD_E2E_CHECKPOINT) makes screenshots that
	// show real reconstructions; by default the weights are random, which
	// exercises the same code.
	if ckpt := os.Getenv("DIAD_E2E_CHECKPOINT"); ckpt != "" {
		b := filetest.Read(t, ckpt)
		filetest.Write(t, e.model, b)
	} else {
		randomModel(t, e.model)
	}

	e.cfg = server.DefaultConfig()
	e.cfg.Addr = "127.0.0.1:0"
	e.cfg.DataDir = e.dataDir
	e.cfg.DataRoots = []string{e.root}
	e.cfg.Device = "cpu"
	e.cfg.Checkpoint = e.model
	e.cfg.WebDir = webDir
	addr, stop := startServer(t, e.cfg)
	e.cfg.Addr = addr // a restart comes back on the same port
	e.base, e.stop = "http://"+addr, stop
	t.Cleanup(func() { e.stop() })
	return e
}

func (e *env) call(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

func (e *env) job(t *testing.T, req shared.JobRequest) shared.Job {
	var j shared.Job
	e.call(t, "POST", "/api/v1/jobs", req, &j)
	return j
}

func (e *env) waitJob(t *testing.T, id string) shared.Job {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		var j shared.Job
		e.call(t, "GET", "/api/v1/jobs/"+id, nil, &j)
		switch j.State {
		case shared.JobSucceeded:
			return j
		case shared.JobFailed, shared.JobCancelled:
			t.Fatalf("job %s: %s %s", id, j.State, j.Error)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("job %s did not finish", id)
	return shared.Job{}
}

// randomModel saves a tiny model with seeded random weights.
func randomModel(t *testing.T, path string) {
	defer torchrt.Pin()()
	torchrt.ManualSeed(3)
	m, err := model.New(model.TinyConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
}
