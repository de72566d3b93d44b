package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/kernelcheck"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// childEnv makes the test binary run one training (for the kill -9 tests);
// killEnv names the checkpoint ("stage/step") after which it kills itself
// with SIGKILL, so that each test stops the run at an exact point.
const (
	childEnv = "DIAD_TRAIN_CHILD_CONFIG"
	killEnv  = "DIAD_TRAIN_CHILD_KILL_AT"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		var cfg Config
		if err := json.Unmarshal(b, &cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		killAt := os.Getenv(killEnv)
		opts := Options{Resume: true, afterCheckpoint: func(stage string, step int) {
			if fmt.Sprintf("%s/%d", stage, step) == killAt {
				if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
					fmt.Fprintln(os.Stderr, "kill:", err)
					os.Exit(5)
				}
				select {} // never returns: the signal ends the process
			}
		}}
		if _, err := Run(context.Background(), cfg, opts); err != nil {
			fmt.Fprintln(os.Stderr, err)
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
	// The demo recipe's parts, so that their state resumes exactly too.
	c.AutoencoderCrop, c.AutoencoderSSIMWeight, c.ScaleLatents = 32, 1, true
	c.EMADecay = 0.9
	c.LRSchedule = Schedule{Kind: "cosine", WarmupSteps: 2, MinFactor: 0.1}
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

// stepLosses reads the logged (stage, step) -> loss of a run; a log that
// yields no losses, or a line that does not parse, fails the test.
func stepLosses(t *testing.T, dir string) map[string]float64 {
	t.Helper()
	b := filetest.Read(t, filepath.Join(dir, LogFile))
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct {
			Msg   string  `json:"msg"`
			Stage string  `json:"stage"`
			Step  int     `json:"step"`
			Loss  float64 `json:"loss"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if e.Msg == "step" {
			out[fmt.Sprintf("%s/%d", e.Stage, e.Step)] = e.Loss
		}
	}
	if len(out) == 0 {
		t.Fatalf("the log of %s has no step losses", dir)
	}
	return out
}

// sameWeights fails unless two model files hold bitwise equal tensors.
func sameWeights(t *testing.T, a, b string) {
	t.Helper()
	ra, err := checkpoint.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := checkpoint.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	defer torchrt.Pin()()
	if len(ra.Entries()) == 0 || len(ra.Entries()) != len(rb.Entries()) {
		t.Fatalf("%d and %d tensors", len(ra.Entries()), len(rb.Entries()))
	}
	for _, e := range ra.Entries() {
		x, err := ra.Load(e.Name, gotch.CPU)
		if err != nil {
			t.Fatal(err)
		}
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
}

func TestKillAndResumeIsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("trains several times")
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
	la := stepLosses(t, a.OutDir)

	// The same run in a child process, killed with SIGKILL in the
	// autoencoder stage (before the first validation, when the best
	// validation loss is still +Inf), right at the stage change, and in the
	// denoiser stage; each is resumed here and must end bitwise the same.
	for _, killAt := range []string{StageAutoencoder + "/2", StageDenoiser + "/0", StageDenoiser + "/4"} {
		t.Run(strings.ReplaceAll(killAt, "/", "-"), func(t *testing.T) {
			b := smallConfig(t, data)
			b.OutDir = filepath.Join(t.TempDir(), "b")
			if err := os.MkdirAll(b.OutDir, 0o755); err != nil {
				t.Fatal(err)
			}
			cfgPath := filepath.Join(b.OutDir, "cfg.json")
			raw, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			filetest.Write(t, cfgPath, raw)
			child := exec.Command(os.Args[0], "-test.run=^$")
			child.Env = append(os.Environ(), childEnv+"="+cfgPath, killEnv+"="+killAt)
			var stderr strings.Builder
			child.Stderr = &stderr
			err = child.Run()
			if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				t.Fatalf("child was not killed at %s: %v %s", killAt, err, stderr.String())
			}
			st, err := readState(filepath.Join(b.OutDir, CheckpointFile))
			if err != nil || fmt.Sprintf("%s/%d", st.Stage, st.Step) != killAt {
				t.Fatalf("checkpoint after the kill: %+v %v, want %s", st, err, killAt)
			}
			sumB, err := Run(context.Background(), b, Options{Resume: true})
			if err != nil {
				t.Fatalf("resume after a kill at %s: %v", killAt, err)
			}
			if sumB.Steps != sumA.Steps {
				t.Fatalf("resumed run ended at step %d, uninterrupted at %d", sumB.Steps, sumA.Steps)
			}
			sameWeights(t, filepath.Join(a.OutDir, ModelFile), filepath.Join(b.OutDir, ModelFile))
			lb := stepLosses(t, b.OutDir)
			if len(lb) != len(la) {
				t.Fatalf("%d logged steps resumed, %d uninterrupted", len(lb), len(la))
			}
			for k, v := range lb {
				if w, ok := la[k]; !ok || w != v {
					t.Fatalf("loss at %s: %v uninterrupted, %v resumed", k, w, v)
				}
			}
		})
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
	// A time budget that ends the denoiser stage before max_steps is a
	// normal end: validated, averaged, calibrated and saved as a model.
	c.AutoencoderSteps, c.MaxSteps, c.MaxDuration = 0, 1000, time.Nanosecond
	c.StartTCandidates = []int{100, 300}
	var calibrations int
	sum, err := Run(context.Background(), c, Options{OnEvent: func(e Event) {
		if e.Kind == "calibration" {
			calibrations++
		}
	}})
	if err != nil || sum.Stopped != StopMaxDuration || sum.Steps != 1 || sum.Model != filepath.Join(c.OutDir, ModelFile) {
		t.Fatalf("time budget: %+v %v", sum, err)
	}
	if _, err := os.Stat(filepath.Join(c.OutDir, CheckpointFile)); err != nil {
		t.Fatal("no checkpoint after a budget stop")
	}
	budgeted, err := model.ReadConfig(sum.Model)
	if err != nil {
		t.Fatalf("no model after a budget stop: %v", err)
	}
	if st := budgeted.Sampler.StartT; calibrations != 2 || (st != 100 && st != 300) {
		t.Fatalf("a budget stop calibrated %d candidates, start level %d", calibrations, st)
	}
	if st, err := readState(filepath.Join(c.OutDir, CheckpointFile)); err != nil || st.Stage != StageDone {
		t.Fatalf("state after a budget stop: %+v %v", st, err)
	}
	budgetSpentEarly(t, c)
	c.AutoencoderSteps, c.StartTCandidates = 0, nil
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.OutDir, c.MaxDuration, c.MaxSteps = t.TempDir(), 0, 5
	if sum, err := Run(ctx, c, Options{}); err != nil || sum.Stopped != "cancelled" {
		t.Fatalf("cancelled: %+v %v", sum, err)
	}
	badConfigs(t, c, data)
	claimedFolders(t, c)
}

// budgetSpentEarly: a budget spent in the autoencoder stage leaves a
// checkpoint to resume, and no model.
func budgetSpentEarly(t *testing.T, c Config) {
	c.OutDir, c.AutoencoderSteps, c.StartTCandidates = t.TempDir(), 5, nil
	sum, err := Run(context.Background(), c, Options{})
	if err != nil || sum.Stopped != StopMaxDuration || sum.Model != "" || fileExists(filepath.Join(c.OutDir, ModelFile)) {
		t.Fatalf("a budget spent on the autoencoder: %+v %v", sum, err)
	}
}

// badConfigs: a run without a budget or with missing data is refused, and
// leaves no folder behind.
func badConfigs(t *testing.T, c Config, data string) {
	bad := c
	bad.MaxSteps, bad.MaxEpochs = 0, 0
	if _, err := Run(context.Background(), bad, Options{}); err == nil {
		t.Fatal("no budget accepted")
	}
	bad = c
	bad.Data.Root = filepath.Join(data, "missing")
	bad.OutDir = filepath.Join(t.TempDir(), "new-run")
	if _, err := Run(context.Background(), bad, Options{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing data: %v", err)
	}
	// The failed run leaves no folder behind.
	if _, err := os.Stat(bad.OutDir); !os.IsNotExist(err) {
		t.Fatalf("a failed run left %s behind (%v)", bad.OutDir, err)
	}
}

// claimedFolders: a folder holding a run (c's, the cancelled one's
// checkpoint) is refused without --resume or --force, and left as it was;
// --force removes the old run's files.
func claimedFolders(t *testing.T, c Config) {
	before := filetest.Read(t, filepath.Join(c.OutDir, CheckpointFile))
	if _, err := Run(context.Background(), c, Options{}); err == nil || !strings.Contains(err.Error(), "--resume") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("a second run over the first: %v", err)
	}
	after, err := os.ReadFile(filepath.Join(c.OutDir, CheckpointFile))
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the refused run changed the checkpoint (%v)", err)
	}
	// --force removes the old run's files before starting.
	if err := claimOutDir(c.OutDir, Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	for _, f := range runFiles {
		if fileExists(filepath.Join(c.OutDir, f)) {
			t.Fatalf("--force left %s", f)
		}
	}
}

// TestConfigFiles: a config file is read over its base; a misspelt key and
// an unknown base are errors naming them.
func TestConfigFiles(t *testing.T) {
	data := t.TempDir()
	path := filepath.Join(t.TempDir(), "t.yaml")
	filetest.Write(t, path, []byte("base: cpu\ndata: {root: "+data+"}\nout_dir: /tmp/x\nmax_steps: 3\npreset: small\n"))
	if got, err := Load(path); err != nil || got.MaxSteps != 3 || got.Preset != "small" || got.BatchSize != 8 {
		t.Fatalf("load: %+v %v", got, err)
	}
	// A misspelt key is an error, not the preset's value.
	filetest.Write(t, path, []byte("base: cpu\nmax_step: 3\n"))
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "max_step") {
		t.Fatalf("misspelt key: %v", err)
	}
	filetest.Write(t, path, []byte("base: gpu\n"))
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "cpu, demo, demo-head, reference") {
		t.Fatalf("unknown base: %v", err)
	}
}

// gradient_checkpointing changes the memory a step needs, not what it
// learns: from the same seed the denoiser's losses step for step match
// those of an ordinary run (its gradients equal to float rounding).
func TestGradientCheckpointingTrainsTheSame(t *testing.T) {
	data := synthData(t)
	losses := func(recompute bool) map[string]float64 {
		c := smallConfig(t, data)
		c.OutDir = t.TempDir()
		c.AutoencoderSteps, c.MaxSteps, c.ValEvery, c.CheckpointEvery = 0, 4, 0, 0
		c.GradientCheckpointing = recompute
		if _, err := Run(context.Background(), c, Options{}); err != nil {
			t.Fatal(err)
		}
		return stepLosses(t, c.OutDir)
	}
	plain, again := losses(false), losses(true)
	if len(plain) != 4 || len(again) != len(plain) {
		t.Fatalf("%d and %d logged steps", len(plain), len(again))
	}
	for step, want := range plain {
		if got := again[step]; math.Abs(got-want) > 1e-4*math.Abs(want) {
			t.Errorf("%s: loss %v with gradient checkpointing, %v without", step, got, want)
		}
	}
	path := filepath.Join(t.TempDir(), "t.yaml")
	filetest.Write(t, path, []byte("base: demo\ngradient_checkpointing: true\n"))
	if c, err := Load(path); err != nil || !c.GradientCheckpointing {
		t.Fatalf("gradient_checkpointing from YAML: %+v %v", c.GradientCheckpointing, err)
	}
}

// debian13OneDNN computes wrong convolution input gradients on AMD Zen 5,
// so training with it was NaN from step 1.
const debian13OneDNN = kernelcheck.Debian13OneDNN

// Training in a process that loads that library: on a CPU where it computes
// wrong, the self-check switches oneDNN off with one warning and the run
// trains without NaN; on a CPU where it computes right, nothing changes.
func TestTrainsRightWithDebian13OneDNN(t *testing.T) {
	if _, err := os.Stat(filepath.Join(debian13OneDNN, "libdnnl.so.3.6")); err != nil {
		t.Skipf("Debian 13's oneDNN is not kept aside here (only the build root keeps it): %v", err)
	}
	c := smallConfig(t, synthData(t))
	c.AutoencoderSteps, c.MaxSteps = 2, 4
	c.OutDir = filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(c.OutDir, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(c.OutDir, "cfg.json")
	filetest.Write(t, cfgPath, raw)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+cfgPath, "LD_LIBRARY_PATH="+debian13OneDNN)
	var stderr strings.Builder
	child.Stderr = &stderr
	if err := child.Run(); err != nil {
		t.Fatalf("training with Debian 13's oneDNN: %v\n%s", err, stderr.String())
	}
	var start struct {
		OneDNN   string `json:"onednn"`
		OneDNNOn bool   `json:"onednn_on"`
	}
	for _, line := range strings.Split(string(filetest.Read(t, filepath.Join(c.OutDir, LogFile))), "\n") {
		if strings.Contains(line, `"msg":"start"`) {
			if err := json.Unmarshal([]byte(line), &start); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !strings.HasPrefix(start.OneDNN, "3.7.") {
		t.Fatalf("the child ran on oneDNN %q, not Debian 13's 3.7", start.OneDNN)
	}
	warnings := strings.Count(stderr.String(), "oneDNN is switched off")
	if (start.OneDNNOn && warnings != 0) || (!start.OneDNNOn && warnings != 1) {
		t.Fatalf("oneDNN on %v after the check, with %d warnings:\n%s", start.OneDNNOn, warnings, stderr.String())
	}
	losses := stepLosses(t, c.OutDir)
	for k, v := range losses {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("loss at %s is %v", k, v)
		}
	}
	if len(losses) != 6 {
		t.Fatalf("%d logged steps, want 6", len(losses))
	}
	t.Logf("oneDNN %s kept on: %v; %d finite losses", start.OneDNN, start.OneDNNOn, len(losses))
}
