package evaluate_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/train"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
)

// TestEndToEndOnSyntheticData synthesises a small dataset, trains the tiny
// model on it (autoencoder, then denoiser), evaluates the test split, and
// checks that anomalies are detected clearly better than chance and that the
// results open with Apache Arrow's Parquet reader.
func TestEndToEndOnSyntheticData(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cats := []string{"woven", "disc"}
	tc := train.CPUConfig()
	if _, err := datasets.Synthesize(data, datasets.SynthConfig{Seed: 7, Size: 64, Train: 30, TestGood: 6, PerDefect: 3, Categories: cats}); err != nil {
		t.Fatal(err)
	}
	tc.Data = datasets.Source{Root: data, Layout: "mvtec"}
	tc.OutDir = filepath.Join(dir, "run")
	tc.Threads = 2
	// Fewer steps than the CPU preset's 200 + 300: what this test asserts
	// (detection clearly above chance, readable results) does not need
	// more, and make test runs it on every change.
	tc.AutoencoderSteps, tc.MaxSteps = 120, 180
	sum, err := train.Run(context.Background(), tc, train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("training: %+v", sum)
	if sum.Model == "" || !(sum.Loss < 1) {
		t.Fatalf("training summary %+v", sum)
	}
	ec := evaluate.DefaultConfig()
	ec.Checkpoint = sum.Model
	ec.Data = datasets.Source{Root: data, Layout: "mvtec"}
	ec.Features = features.Config{Arch: "resnet18", Layers: []int{1, 2, 3}}
	ec.Device = "cpu"
	ec.ResultsDir = filepath.Join(dir, "results")
	rep, err := evaluate.Test(context.Background(), ec, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("evaluation of %d images at %.1f images/s, threshold %+v\n%s", rep.Images, rep.ImagesPerSec, rep.Threshold, evaluate.FormatTable(rep.Table))
	auroc := rep.Table.Mean().Values[metrics.ImageAUROC]
	if math.IsNaN(auroc) || auroc < 0.8 {
		t.Fatalf("mean image AUROC %.3f, want clearly above chance (>= 0.8)", auroc)
	}
	rows, err := (results.Store{Root: ec.ResultsDir}).Images(rep.RunID)
	if err != nil || len(rows) != rep.Images {
		t.Fatalf("result rows %d: %v", len(rows), err)
	}
	// An independent reader (Apache Arrow's) opens every file of the run.
	for _, name := range []string{results.ImagesFile, results.MetricsFile, results.MapsFile} {
		f, err := os.Open(filepath.Join(ec.ResultsDir, rep.RunID, name))
		if err != nil {
			t.Fatal(err)
		}
		pr, err := file.NewParquetReader(f)
		if err != nil {
			t.Fatalf("arrow cannot open %s: %v", name, err)
		}
		want := int64(rep.Images)
		if name == results.MetricsFile {
			want = int64((len(rep.Table.Rows)) * len(metrics.PaperColumns))
		}
		if pr.NumRows() != want {
			t.Fatalf("%s: arrow reads %d rows, want %d", name, pr.NumRows(), want)
		}
		if err := pr.Close(); err != nil {
			t.Fatalf("close %s: %v", name, err)
		}
	}
}
