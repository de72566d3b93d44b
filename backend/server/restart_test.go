package server

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

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
