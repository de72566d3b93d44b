package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/badmodel"
	"github.com/diad-project/diad/backend/cli"
	"github.com/diad-project/diad/backend/cli/clitest"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/backend/train"
	"github.com/diad-project/diad/shared"
)

// TestMain lets a test run the real main() in a child process (the test
// binary re-executed), to see its exit status.
func TestMain(m *testing.M) {
	cli.ServeChild("diad", main)
	os.Exit(m.Run())
}

// runMain runs `diad args...` as a process and returns its output and exit code.
func runMain(t *testing.T, args ...string) (string, int) { return clitest.RunMain(t, args...) }

// A libtorch failure ends the command with libtorch's message and status
// 1 - a clean error, not a log.Fatal or a crash.
func TestLibtorchFailureIsACommandError(t *testing.T) {
	dir := t.TempDir()
	giant := filepath.Join(dir, "giant.safetensors")
	if err := badmodel.Giant(giant); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "x.png")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, code := runMain(t, "predict", "--checkpoint", giant, "--device", "cpu", "--scorer", "pixel", "--threshold", "0.5", img)
	if code != 1 || !strings.Contains(out, badmodel.AllocationError) || !strings.Contains(out, "diad: ") || strings.Contains(out, "goroutine ") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	// The same binary still works.
	if out, code := runMain(t, "version"); code != 0 {
		t.Fatalf("version: exit %d: %s", code, out)
	}
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestVersionReportsLibtorchAndDevices(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"diad", "gotch     0.9.1", "libtorch  " + torchrt.LibtorchVersion(), "devices   cpu"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r buildReport
	// gotch is the patched copy in third_party/gotch, which the report names.
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Libtorch == "" || r.Gotch != "0.9.1 (replaced by ./third_party/gotch)" {
		t.Fatalf("json version %q: %v", out, err)
	}
}

func TestUnknownCommandFails(t *testing.T) {
	if _, err := runCLI(t, "frobnicate"); err == nil {
		t.Fatal("unknown command accepted")
	}
}

func TestInspectRecognisesPreset(t *testing.T) {
	m, err := model.New(model.TinyConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "inspect", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "preset tiny") || !regexp.MustCompile(`tiny\s+autoencoder,unet,sg \(exact\)`).MatchString(out) {
		t.Fatalf("inspect output:\n%s", out)
	}
	out, err = runCLI(t, "inspect", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Tensors != len(m.Store.Params()) {
		t.Fatalf("json: %v %+v", err, rep)
	}
	if _, err := runCLI(t, "inspect", filepath.Join(t.TempDir(), "absent.safetensors")); err == nil {
		t.Fatal("absent file accepted")
	}
}

// An optional flag stays nil until given; given zero, it is zero.
func TestOptionalFlags(t *testing.T) {
	var eta *float64
	var steps *int
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Var(optFloat(&eta), "eta", "")
	fs.Var(optInt(&steps), "steps", "")
	if err := fs.Parse(nil); err != nil || eta != nil || steps != nil {
		t.Fatalf("unset flags: %v %v %v", eta, steps, err)
	}
	if err := fs.Parse([]string{"--eta", "0", "--steps", "5"}); err != nil || eta == nil || *eta != 0 || steps == nil || *steps != 5 {
		t.Fatalf("set flags: %v %v %v", eta, steps, err)
	}
	if err := fs.Parse([]string{"--steps", "five"}); err == nil {
		t.Fatal("a non-number was accepted")
	}
}

// TestBenchShowsProgress: bench reports each phase on stderr while it
// measures, and keeps stdout for the table.
func TestBenchShowsProgress(t *testing.T) {
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"bench", "--presets", "tiny", "--batch", "1", "--iters", "1", "--device", "cpu"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bench tiny: train step (warm-up)", "bench tiny: reconstruction", "/4)"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%q", want, errOut.String())
		}
	}
	if !strings.HasPrefix(out.String(), "preset") || !strings.Contains(out.String(), "\ntiny ") || strings.Contains(out.String(), "bench tiny") {
		t.Errorf("stdout is not just the table:\n%s", out.String())
	}
}

// TestTrainBarFollowsStages: the CLI draws training progress from the run's
// events, one bar per stage, with the stage's own total.
func TestTrainBarFollowsStages(t *testing.T) {
	var out bytes.Buffer
	bar := &trainBar{w: &out}
	for i := 1; i <= 3; i++ {
		bar.event(train.Event{Kind: shared.EventStep, Stage: "autoencoder", Step: i, TotalSteps: 3, Loss: 0.5})
	}
	bar.event(train.Event{Kind: shared.EventStage, Stage: "denoiser", Message: "denoiser"})
	bar.event(train.Event{Kind: shared.EventStep, Stage: "denoiser", Step: 1, TotalSteps: 5, Loss: 0.25})
	bar.finish()
	for _, want := range []string{"autoencoder loss 0.5000", "/3, ", "denoiser loss 0.2500", "/5, "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress output lacks %q:\n%q", want, out.String())
		}
	}
}

// diad bench is the user's view of speed and quality; the developers'
// harnesses live in diad-dev.
func TestBenchHelpIsTheUsersView(t *testing.T) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"bench", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\n  quality ") {
		t.Errorf("diad bench --help lacks quality:\n%s", out.String())
	}
	for _, dev := range []string{"torch", "sharing", "recompute", "profile", "kernels"} {
		if strings.Contains(out.String(), "\n  "+dev+" ") {
			t.Errorf("diad bench --help offers the developers' %s:\n%s", dev, out.String())
		}
	}
}
