package train

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// childEnv makes the test binary run one training (for the kill -9 test).
const childEnv = "DIAD_TRAIN_CHILD_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		b, _ := os.ReadFile(path)
		var cfg Config
		if err := json.Unmarshal(b, &cfg); err != nil {
			os.Exit(3)
		}
		if _, err := Run(context.Background(), cfg, Options{Resume: true}); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(4)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func smallConfig(t *testing.T, data string) Config {
	c := CPUConfig()
	c.Data = datasets.Source{Root: data, Layout: "mvtec", Workers: 2}
	c.BatchSize, c.GradAccum = 4, 2
	c.AutoencoderSteps, c.MaxSteps = 6, 10
	c.CheckpointEvery, c.ValEvery, c.ValFraction = 2, 4, 0.2
	c.Threads = 2
	return c
}

func synthData(t *testing.T) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	if _, err := datasets.Synthesize(data, datasets.SynthConfig{Seed: 2, Size: 64, Train: 10, TestGood: 1, PerDefect: 1, Categories: []string{"grid", "screw"}}); err != nil {
		t.Fatal(err)
	}
	return data
}

// stepLosses reads the logged (stage, step) -> loss of a run.
func stepLosses(t *testing.T, dir string) map[string]float64 {
	b, err := os.ReadFile(filepath.Join(dir, LogFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct {
			Msg   string  `json:"msg"`
			Stage string  `json:"stage"`
			Step  int     `json:"step"`
			Loss  float64 `json:"loss"`
		}
		json.Unmarshal([]byte(line), &e)
		if e.Msg == "step" {
			out[e.Stage+"/"+string(rune('0'+e.Step/10))+string(rune('0'+e.Step%10))] = e.Loss
		}
	}
	return out
}

func TestKillAndResumeIsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice")
	}
	data := synthData(t)

	// Uninterrupted run.
	a := smallConfig(t, data)
	a.OutDir = filepath.Join(t.TempDir(), "a")
	var events []Event
	sumA, err := Run(context.Background(), a, Options{OnEvent: func(e Event) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	if sumA.Steps != 10 || sumA.Stopped != "max_steps" {
		t.Fatalf("summary %+v", sumA)
	}
	kinds := map[string]int{}
	for _, e := range events {
		kinds[e.Kind]++
	}
	if kinds["step"] != 16 || kinds["validation"] == 0 || kinds["checkpoint"] == 0 || kinds["done"] != 1 {
		t.Fatalf("events %v", kinds)
	}

	// The same run in a child process, killed with SIGKILL after its first
	// checkpoints, then resumed here.
	b := smallConfig(t, data)
	b.OutDir = filepath.Join(t.TempDir(), "b")
	os.MkdirAll(b.OutDir, 0o755)
	cfgPath := filepath.Join(b.OutDir, "cfg.json")
	raw, _ := json.Marshal(b)
	os.WriteFile(cfgPath, raw, 0o644)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+cfgPath)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(b.OutDir, CheckpointFile)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if st, err := readState(ckpt); err == nil && st.Stage == StageDenoiser && st.Step >= 2 {
			break
		}
		if time.Now().After(deadline) {
			child.Process.Kill()
			t.Fatal("child wrote no denoiser checkpoint in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	child.Process.Signal(syscall.SIGKILL)
	err = child.Wait()
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed mid-run: %v", err)
	}
	st, err := readState(ckpt)
	if err != nil || st.Stage == StageDone {
		t.Fatalf("checkpoint after kill: %+v %v", st, err)
	}
	t.Logf("killed at denoiser step >= %d; resuming", st.Step)
	sumB, err := Run(context.Background(), b, Options{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if sumB.Steps != sumA.Steps {
		t.Fatalf("resumed run ended at step %d, uninterrupted at %d", sumB.Steps, sumA.Steps)
	}

	// Bitwise the same final weights, and the same loss at every logged step.
	ra, err := checkpoint.Open(filepath.Join(a.OutDir, ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := checkpoint.Open(filepath.Join(b.OutDir, ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	defer torchrt.Pin()()
	for _, e := range ra.Entries() {
		x, _ := ra.Load(e.Name, gotch.CPU)
		y, err := rb.Load(e.Name, gotch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		xv, yv := torchrt.Float32s(x), torchrt.Float32s(y)
		x.MustDrop()
		y.MustDrop()
		for i := range xv {
			if math.Float32bits(xv[i]) != math.Float32bits(yv[i]) {
				t.Fatalf("%s[%d]: %v uninterrupted, %v resumed", e.Name, i, xv[i], yv[i])
			}
		}
	}
	la, lb := stepLosses(t, a.OutDir), stepLosses(t, b.OutDir)
	for k, v := range lb {
		if la[k] != v {
			t.Fatalf("loss at %s: %v uninterrupted, %v resumed", k, la[k], v)
		}
	}
}

func readState(path string) (state, error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return state{}, err
	}
	defer r.Close()
	var st state
	err = json.Unmarshal([]byte(r.Metadata()[metaState]), &st)
	return st, err
}

func TestBudgetsAndBadConfigs(t *testing.T) {
	data := synthData(t)
	c := smallConfig(t, data)
	c.OutDir = t.TempDir()
	c.AutoencoderSteps, c.MaxSteps, c.MaxDuration = 0, 0, time.Nanosecond
	sum, err := Run(context.Background(), c, Options{})
	if err != nil || sum.Stopped != "max_duration" || sum.Steps != 1 {
		t.Fatalf("time budget: %+v %v", sum, err)
	}
	if _, err := os.Stat(filepath.Join(c.OutDir, CheckpointFile)); err != nil {
		t.Fatal("no checkpoint after a budget stop")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.OutDir, c.MaxDuration, c.MaxSteps = t.TempDir(), 0, 5
	if sum, err := Run(ctx, c, Options{}); err != nil || sum.Stopped != "cancelled" {
		t.Fatalf("cancelled: %+v %v", sum, err)
	}
	bad := c
	bad.MaxSteps, bad.MaxEpochs = 0, 0
	if _, err := Run(context.Background(), bad, Options{}); err == nil {
		t.Fatal("no budget accepted")
	}
	bad = c
	bad.Data.Root = filepath.Join(data, "missing")
	if _, err := Run(context.Background(), bad, Options{}); err == nil {
		t.Fatal("missing data accepted")
	}
	path := filepath.Join(t.TempDir(), "t.yaml")
	os.WriteFile(path, []byte("base: cpu\ndata: {root: "+data+"}\nout_dir: /tmp/x\nmax_steps: 3\npreset: small\n"), 0o644)
	if got, err := Load(path); err != nil || got.MaxSteps != 3 || got.Preset != "small" || got.BatchSize != 8 {
		t.Fatalf("load: %+v %v", got, err)
	}
}
