package main

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/cli/clitest"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
)

// runMainWith is runMain with extra environment variables.
func runMainWith(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	return clitest.RunMainEnv(t, env, args...)
}

// onlyRun is the one run in a results folder.
func onlyRun(t *testing.T, root string) (results.Store, string) {
	t.Helper()
	s := results.Store{Root: root}
	runs, err := s.Runs()
	if err != nil || len(runs) != 1 {
		t.Fatalf("%s: runs %+v, %v", root, runs, err)
	}
	return s, runs[0].RunID
}

// runImages is the image rows of the one run in a results folder.
func runImages(t *testing.T, root string) []results.ImageRow {
	t.Helper()
	s, id := onlyRun(t, root)
	rows, err := s.Images(id)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// Three shards - one from --shard, one as a Slurm array task, one as a
// Kubernetes Indexed Job pod, each with its own batch size - merged, give
// the metrics and scores of one `diad test --batch-invariant` process bit
// for bit.
func TestShardedTestEqualsOneProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the model 4 times")
	}
	dir, data, ckpt := shardFixture(t)
	common := []string{"test", "--checkpoint", ckpt, "--data", data, "--scorer", "pixel+ssim", "--device", "cpu", "--threads", "1", "--quiet", "--seed", "3"}
	single := filepath.Join(dir, "single")
	if out, code := runMain(t, append(common, "--batch", "4", "--batch-invariant", "--results", single)...); code != 0 {
		t.Fatalf("single process: exit %d\n%s", code, out)
	}
	runID, code := runMain(t, "run-id")
	runID = strings.TrimSpace(runID)
	if code != 0 || !results.ValidRunID(runID) {
		t.Fatalf("run-id printed %q (exit %d)", runID, code)
	}
	sharded := filepath.Join(dir, "sharded")
	shardArgs := append(common, "--results", sharded)
	runs := []struct {
		env  []string
		args []string
	}{
		{nil, []string{"--shard", "0/3", "--batch", "2", "--run-id", runID}},
		{[]string{"SLURM_ARRAY_TASK_ID=11", "SLURM_ARRAY_TASK_MIN=10", "SLURM_ARRAY_TASK_COUNT=3", EnvRunID + "=" + runID}, []string{"--batch", "3"}},
		{[]string{"JOB_COMPLETION_INDEX=2"}, []string{"--shards", "3", "--batch", "8", "--run-id", runID}},
	}
	for i, r := range runs {
		out, code := runMainWith(t, r.env, append(append([]string{}, shardArgs...), r.args...)...)
		if code != 0 || !strings.Contains(out, "shard "+[]string{"0/3", "1/3", "2/3"}[i]+" of run "+runID) {
			t.Fatalf("shard %d: exit %d\n%s", i, code, out)
		}
	}
	// Before the merge the server lists nothing: the run is not complete.
	if runs, err := (results.Store{Root: sharded}).Runs(); err != nil || len(runs) != 0 {
		t.Fatalf("unmerged run listed: %+v %v", runs, err)
	}
	if out, code := runMain(t, "merge", runID, "--results", sharded); code != 0 || !strings.Contains(out, "from 3 shards") {
		t.Fatalf("merge: exit %d\n%s", code, out)
	}
	sameRuns(t, single, sharded)

	// Bad input: an index out of range, a sharded run without a run id,
	// and a merge with a shard missing.
	if out, code := runMain(t, append(shardArgs, "--shard", "3/3", "--run-id", runID)...); code != 1 || !strings.Contains(out, "out of range 0..2") {
		t.Fatalf("--shard 3/3: exit %d\n%s", code, out)
	}
	if out, code := runMainWith(t, []string{"JOB_COMPLETION_INDEX=0"}, append(shardArgs, "--shards", "2")...); code != 1 || !strings.Contains(out, "run id") {
		t.Fatalf("no run id: exit %d\n%s", code, out)
	}
	other, code := runMain(t, "run-id")
	other = strings.TrimSpace(other)
	if out, code2 := runMain(t, append(shardArgs, "--shard", "1/2", "--run-id", other)...); code != 0 || code2 != 0 {
		t.Fatalf("shard 1/2: exit %d\n%s", code2, out)
	}
	if out, code := runMain(t, "merge", other, "--results", sharded); code != 1 || !strings.Contains(out, "shard=0000-of-0002 (not written)") {
		t.Fatalf("merge with a missing shard: exit %d\n%s", code, out)
	}
}

// sameRuns: the runs in two results folders (one each) have the same
// metrics and the same images, scores and verdicts, bit for bit.
func sameRuns(t *testing.T, single, sharded string) {
	a, aid := onlyRun(t, single)
	b, bid := onlyRun(t, sharded)
	am, err := a.Metrics(aid)
	if err != nil {
		t.Fatal(err)
	}
	bm, err := b.Metrics(bid)
	if err != nil {
		t.Fatal(err)
	}
	if len(am) == 0 || len(am) != len(bm) {
		t.Fatalf("%d and %d metric rows", len(am), len(bm))
	}
	defined := 0
	for i := range am {
		if am[i].Category != bm[i].Category || am[i].Metric != bm[i].Metric || math.Float64bits(am[i].Value) != math.Float64bits(bm[i].Value) {
			t.Errorf("%s %s: one process %v, merged %v", am[i].Category, am[i].Metric, am[i].Value, bm[i].Value)
		}
		if !math.IsNaN(am[i].Value) {
			defined++
		}
	}
	if defined < len(am)/2 {
		t.Fatalf("only %d of %d metrics defined: the comparison would prove little", defined, len(am))
	}
	ai, bi := runImages(t, single), runImages(t, sharded)
	if len(ai) != len(bi) || len(ai) == 0 {
		t.Fatalf("%d and %d images", len(ai), len(bi))
	}
	for i := range ai {
		if ai[i].ImageID != bi[i].ImageID || ai[i].Path != bi[i].Path || math.Float64bits(ai[i].Score) != math.Float64bits(bi[i].Score) || ai[i].Predicted != bi[i].Predicted {
			t.Fatalf("image %d: one process %+v, merged %+v", i, ai[i], bi[i])
		}
	}
}

// shardFixture is a small synthetic dataset and a tiny random model.
func shardFixture(t *testing.T) (dir, data, ckpt string) {
	t.Helper()
	dir = t.TempDir()
	data = filepath.Join(dir, "data")
	if _, err := datasets.Synthesize(data, datasets.SynthConfig{Seed: 5, Size: 64, Train: 2, TestGood: 3, PerDefect: 2, Categories: []string{"woven", "disc"}}); err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.TinyConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	ckpt = filepath.Join(dir, "tiny.safetensors")
	if err := m.Save(ckpt, nil); err != nil {
		t.Fatal(err)
	}
	m.Free()
	return dir, data, ckpt
}

// Sharded prediction over a folder (one file in it unreadable) merges into
// the run one process writes, score for score.
func TestShardedPredictEqualsOneProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the model 3 times")
	}
	dir, data, ckpt := shardFixture(t)
	folder := filepath.Join(data, "woven", "test")
	filetest.Write(t, filepath.Join(folder, "good", "broken.png"), []byte("not a png"))
	common := []string{"predict", "--checkpoint", ckpt, "--scorer", "pixel", "--device", "cpu", "--threads", "1", "--threshold", "0.5", folder}
	single := filepath.Join(dir, "single")
	if out, code := runMain(t, append(common, "--store", "--batch-invariant", "--results", single)...); code != 1 || !strings.Contains(out, "broken.png") {
		t.Fatalf("single process: exit %d (want 1: one image unreadable)\n%s", code, out)
	}
	runID, _ := runMain(t, "run-id")
	runID = strings.TrimSpace(runID)
	sharded := filepath.Join(dir, "sharded")
	for i := 0; i < 2; i++ {
		if out, code := runMain(t, append(common, "--shard", fmt.Sprintf("%d/2", i), "--run-id", runID, "--batch", "3", "--results", sharded)...); code > 1 || !strings.Contains(out, "of run "+runID+" written") {
			t.Fatalf("shard %d: exit %d\n%s", i, code, out)
		}
	}
	if out, code := runMain(t, "merge", runID, "--results", sharded); code != 0 {
		t.Fatalf("merge: exit %d\n%s", code, out)
	}
	ai, bi := runImages(t, single), runImages(t, sharded)
	b, bid := onlyRun(t, sharded)
	if len(ai) != len(bi) || len(ai) < 5 {
		t.Fatalf("%d and %d images", len(ai), len(bi))
	}
	for i := range ai {
		if ai[i].ImageID != bi[i].ImageID || ai[i].Path != bi[i].Path || math.Float64bits(ai[i].Score) != math.Float64bits(bi[i].Score) || ai[i].Predicted != bi[i].Predicted {
			t.Fatalf("image %d: one process %+v, merged %+v", i, ai[i], bi[i])
		}
	}
	if m, err := b.Meta(bid); err != nil || m.Kind != "predict" || m.Threshold.Value != 0.5 {
		t.Fatalf("merged predict run %+v, %v", m, err)
	}
}

// A shard computes each image alone unless told otherwise; a single
// process does not unless asked.
func TestShardFlagsBatchInvariance(t *testing.T) {
	cases := []struct {
		args []string
		want bool
	}{
		{[]string{"--shard", "1/2"}, true},
		{[]string{"--shard", "1/2", "--batch-invariant=false"}, false},
		{nil, false},
		{[]string{"--batch-invariant"}, true},
	}
	for _, c := range cases {
		cmd := &cobra.Command{Use: "x"}
		sf := shardFlags{getenv: func(string) string { return "" }}
		addShardFlags(cmd, &sf)
		if err := cmd.ParseFlags(c.args); err != nil {
			t.Fatal(err)
		}
		var cfg evaluate.Config
		if err := sf.resolve(&cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.BatchInvariant != c.want {
			t.Errorf("%v: batch invariant %v, want %v", c.args, cfg.BatchInvariant, c.want)
		}
	}
}
