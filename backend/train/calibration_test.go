package train

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/seghead"
)

func TestCalibrationChoosesTheStartLevelAndScorer(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	data := synthData(t)
	c := smallConfig(t, data)
	c.OutDir = t.TempDir()
	c.StartTCandidates = []int{100, 300}
	c.Scorer = "ssim+ae"
	var msgs []string
	sum, err := Run(context.Background(), c, Options{OnEvent: func(e Event) {
		if e.Kind == "calibration" {
			msgs = append(msgs, e.Message)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("calibration events %q: want one per candidate", msgs)
	}
	cfg, err := model.ReadConfig(sum.Model)
	if err != nil {
		t.Fatal(err)
	}
	if st := cfg.Sampler.StartT; st != 100 && st != 300 {
		t.Fatalf("start level %d is not a candidate", st)
	}
	if cfg.Scorer.Kind != "ae+ssim" {
		t.Fatalf("scorer %+v", cfg.Scorer)
	}
	for _, term := range []string{"ae", "pixel", "ssim"} {
		if v := cfg.Scorer.Scales[term]; !(v > 0) {
			t.Fatalf("scale of %s: %v (scales %v)", term, v, cfg.Scorer.Scales)
		}
	}
	// The EMA run also leaves the last step's weights, calibrated alike.
	raw, err := model.ReadConfig(filepath.Join(c.OutDir, NoEMAFile))
	if err != nil {
		t.Fatal(err)
	}
	if raw.Sampler.StartT != cfg.Sampler.StartT || raw.Scorer.Kind != cfg.Scorer.Kind {
		t.Fatalf("the raw model's calibration %+v %+v differs from the average's %+v %+v", raw.Sampler, raw.Scorer, cfg.Sampler, cfg.Scorer)
	}

	recalibrateChangesOnlyTheChoice(t, c, sum.Model)
}

// recalibrateChangesOnlyTheChoice: recalibrating a trained model (trained
// with c) with other candidates changes only the choice: one calibration
// event per new pair, the new start level, the same weights; without
// held-out images it is refused.
func recalibrateChangesOnlyTheChoice(t *testing.T, c Config, trained string) {
	re := c
	re.OutDir = t.TempDir()
	re.StartTCandidates = []int{250}
	re.Scorer, re.ScorerCandidates = "", []string{"pixel", "ssim"}
	var msgs []string
	rsum, err := Recalibrate(context.Background(), re, trained, Options{OnEvent: func(e Event) {
		if e.Kind == "calibration" {
			msgs = append(msgs, e.Message)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("recalibration events %q: want one per scorer", msgs)
	}
	rc, err := model.ReadConfig(rsum.Model)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Sampler.StartT != 250 || (rc.Scorer.Kind != "pixel" && rc.Scorer.Kind != "ssim") {
		t.Fatalf("recalibrated sampler %+v scorer %+v", rc.Sampler, rc.Scorer)
	}
	a, b := openPair(t, trained, rsum.Model)
	if len(a.Entries()) != len(b.Entries()) {
		t.Fatalf("recalibration changed the tensors: %d -> %d", len(a.Entries()), len(b.Entries()))
	}
	if name := firstDifferentTensor(t, a, b); name != "" {
		t.Fatalf("recalibration changed tensor %s", name)
	}
	noVal := re
	noVal.ValFraction = 0
	if _, err := Recalibrate(context.Background(), noVal, trained, Options{}); err == nil || !strings.Contains(err.Error(), "held-out") {
		t.Fatalf("recalibration without held-out images: %v", err)
	}
}

// The anomaly head trains after the calibration and becomes the model's
// scorer; recalibrating a model that has none gives it one and changes no
// other weight.
func TestAnomalyHead(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	data := synthData(t)
	head := seghead.Config{Channels: []int64{8, 16}, NormGroups: 4}
	headTraining := seghead.TrainConfig{Steps: 12, BatchSize: 4, Crop: 32, DefectShare: 0.5,
		Optim: optim.AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}}

	c := smallConfig(t, data)
	c.OutDir = t.TempDir()
	c.StartTCandidates = []int{200}
	c.Scorer = "pixel"
	c.Head, c.HeadTraining = head, headTraining
	sum, err := Run(context.Background(), c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.ReadConfig(sum.Model)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scorer.Kind != scoring.KindSeg || cfg.Scorer.Scales["pixel"] <= 0 || len(cfg.Head.Channels) != 2 {
		t.Fatalf("scorer %+v head %+v: want the head's map, the pixel scale kept", cfg.Scorer, cfg.Head)
	}
	headSteps := 0
	for _, line := range strings.Split(string(filetest.Read(t, filepath.Join(c.OutDir, LogFile))), "\n") {
		if strings.Contains(line, `"stage":"head"`) && strings.Contains(line, `"msg":"step"`) {
			headSteps++
		}
	}
	if headSteps == 0 {
		t.Fatal("the log has no head steps")
	}
	m, _, err := model.Open(sum.Model, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if m.Head == nil {
		t.Fatal("the saved model opens without its head")
	}
	m.Free()

	headByRecalibration(t, data, head, headTraining)
	bad := c
	bad.ScorerCandidates = []string{"seg"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "anomaly head") {
		t.Errorf("scorer candidate seg: %v", err)
	}
	bad = c
	bad.Head = seghead.Config{}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "no channels") {
		t.Errorf("head training without a head: %v", err)
	}
}

// headByRecalibration: a model trained without a head gets one from
// Recalibrate, and no other tensor changes.
func headByRecalibration(t *testing.T, data string, head seghead.Config, headTraining seghead.TrainConfig) {
	plain, psum := trainPlain(t, data)
	re := plain
	re.OutDir = t.TempDir()
	re.Head, re.HeadTraining = head, headTraining
	rsum, err := Recalibrate(context.Background(), re, psum.Model, Options{})
	if err != nil {
		t.Fatal(err)
	}
	requireOnlyAdded(t, psum.Model, rsum.Model, seghead.Prefix)
}

// trainPlain trains the small config with the pixel scorer: a model with
// neither a head nor a patch memory.
func trainPlain(t *testing.T, data string) (Config, Summary) {
	t.Helper()
	plain := smallConfig(t, data)
	plain.OutDir = t.TempDir()
	plain.Scorer = "pixel"
	sum, err := Run(context.Background(), plain, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return plain, sum
}

// requireOnlyAdded fails t unless the model at after holds every tensor of
// the model at before, unchanged, and some more, all named with prefix.
func requireOnlyAdded(t *testing.T, before, after, prefix string) {
	t.Helper()
	a, b := openPair(t, before, after)
	added := 0
	for _, e := range b.Entries() {
		if strings.HasPrefix(e.Name, prefix) {
			added++
		}
	}
	if added == 0 || len(b.Entries()) != len(a.Entries())+added {
		t.Fatalf("recalibrated model has %d tensors (%d named %s), the original %d", len(b.Entries()), added, prefix, len(a.Entries()))
	}
	if name := firstDifferentTensor(t, a, b); name != "" {
		t.Fatalf("recalibration changed %s", name)
	}
}

// firstDifferentTensor names the first tensor of a that b holds with other
// values ("" when b holds every one of them unchanged).
func firstDifferentTensor(t *testing.T, a, b checkpoint.Reader) string {
	t.Helper()
	for _, e := range a.Entries() {
		x, err := a.Load(e.Name, gotch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		y, err := b.Load(e.Name, gotch.CPU)
		if err != nil {
			x.MustDrop()
			t.Fatal(err)
		}
		same := x.MustEqual(y, false)
		x.MustDrop()
		y.MustDrop()
		if !same {
			return e.Name
		}
	}
	return ""
}

// openPair opens two checkpoints for the test's length (closed at its end).
func openPair(t *testing.T, pathA, pathB string) (a, b checkpoint.Reader) {
	t.Helper()
	var err error
	if a, err = checkpoint.Open(pathA); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = checkpoint.Open(pathB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}
