package evaluate

import (
	"context"
	"fmt"
	"image"
	"image/png"
	"iter"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// Prediction is one new image's verdict, or why it has none.
type Prediction struct {
	Path      string  `json:"path"`
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	Anomalous bool    `json:"anomalous"`
	Overlay   string  `json:"overlay,omitempty"`
	// Error says why the image could not be scored (the others still are).
	Error string `json:"error,omitempty"`
}

// PartialError is Predict's error when some images could not be read: the
// others were scored (and stored) all the same.
type PartialError struct {
	Failed []Prediction
}

func (e *PartialError) Error() string {
	msg := fmt.Sprintf("predict: %d image(s) could not be scored", len(e.Failed))
	for i, f := range e.Failed {
		if i == 3 {
			msg += fmt.Sprintf("; and %d more", len(e.Failed)-3)
			break
		}
		msg += "; " + f.Error
	}
	return msg
}

// overlayNames gives each input a distinct overlay file name: its base name
// with _heatmap.png, prefixed with as many parent folders as it takes to
// tell inputs with the same base name apart (a/000.png, b/000.png ->
// a_000_heatmap.png, b_000_heatmap.png).
func overlayNames(paths []string) []string {
	names := make([]string, len(paths))
	parts := make([][]string, len(paths))
	for i, p := range paths {
		parts[i] = strings.Split(filepath.ToSlash(filepath.Clean(p)), "/")
	}
	depth := make([]int, len(paths))
	for i := range depth {
		depth[i] = 1
	}
	name := func(i int) string {
		ps := parts[i]
		k := min(depth[i], len(ps))
		base := strings.Join(ps[len(ps)-k:], "_")
		return strings.TrimSuffix(base, filepath.Ext(base)) + "_heatmap.png"
	}
	for round := 0; round < 64; round++ {
		seen := map[string][]int{}
		for i := range paths {
			names[i] = name(i)
			seen[names[i]] = append(seen[names[i]], i)
		}
		clash := false
		for _, idx := range seen {
			if len(idx) < 2 {
				continue
			}
			for _, i := range idx {
				if depth[i] < len(parts[i]) {
					depth[i]++
					clash = true
				}
			}
		}
		if !clash {
			break
		}
	}
	// The same file given twice (or paths equal after cleaning): number them.
	count := map[string]int{}
	for i, n := range names {
		count[n]++
		if c := count[n]; c > 1 {
			names[i] = strings.TrimSuffix(n, "_heatmap.png") + fmt.Sprintf("_%d_heatmap.png", c)
		}
	}
	return names
}

// PredictConfig adds the prediction's outputs to an evaluation config.
type PredictConfig struct {
	Config
	// OverlayDir receives <name>_heatmap.png overlays (none if empty).
	OverlayDir string
	// Store writes a results run of kind "predict" when true.
	Store bool
}

// Predict scores image files against a fixed threshold (cfg.Threshold must be
// a number: there are no labels to choose one from). An argument that is a
// folder stands for every image below it. With cfg.Shard it scores only the
// shard's images (by a hash of each image's path relative to its folder)
// and writes them as a partition of run cfg.RunID for `diad merge`; image
// ids are positions among all inputs, the same in every shard.
func Predict(ctx context.Context, cfg PredictConfig, args []string) ([]Prediction, string, error) {
	v, err := strconv.ParseFloat(cfg.Threshold, 64)
	th := results.ThresholdInfo{Value: v, Policy: "manual"}
	if err != nil || math.IsNaN(v) {
		return nil, "", fmt.Errorf("predict: give the decision threshold as a number (from a test run's threshold)")
	}
	start := time.Now()
	if cfg.Shard != nil {
		if err := cfg.Shard.Validate(); err != nil {
			return nil, "", fmt.Errorf("predict: %w", err)
		}
		cfg.Store = true
	}
	runID, err := cfg.runID(start)
	if err != nil {
		return nil, "", fmt.Errorf("predict: %w", err)
	}
	paths, mine, err := cfg.inputs(args)
	if err != nil {
		return nil, "", err
	}
	det, err := Open(cfg.Config)
	if err != nil {
		return nil, "", err
	}
	defer det.Free()
	size := det.Model.Config.ImageSize
	var preds, failed []Prediction
	var failedIDs []int64
	var out scoredRows
	overlays := overlayNames(paths)
	// An unreadable image does not stop the others; it is reported.
	unreadable := func(i int, err error) {
		f := Prediction{Path: paths[i], Threshold: th.Value, Score: math.NaN(), Error: err.Error()}
		preds, failed, failedIDs = append(preds, f), append(failed, f), append(failedIDs, int64(i))
	}
	batches := inputBatches(paths, mine, max(cfg.BatchSize, 1), size, unreadable)
	err = det.ScoreEach(ctx, batches, ScoreOptions{Seed: cfg.Seed}, func(b ScoredBatch) error {
		for i, it := range b.Items {
			sc := b.Scored[i]
			pr := Prediction{Path: it.Sample.Path, Score: sc.Score, Threshold: th.Value, Anomalous: shared.Predicted(sc.Score, th.Value)}
			if cfg.OverlayDir != "" {
				pr.Overlay = filepath.Join(cfg.OverlayDir, overlays[b.IDs[i]])
				ov := visual.Overlay(datasets.Denormalize(it.Image, size), sc.Map, visual.ThresholdScale(th.Value), 0.6)
				if err := writePNG(pr.Overlay, ov); err != nil {
					return err
				}
			}
			preds = append(preds, pr)
			pred := int32(0)
			if pr.Anomalous {
				pred = 1
			}
			out.add(results.ImageRow{RunID: runID, ImageID: b.IDs[i], Path: it.Sample.Path, Split: "predict", GroundTruth: -1,
				Score: pr.Score, Scorer: det.Scorer.Kind(), Threshold: th.Value, Predicted: pred, CreatedAt: start.UTC()}, size, sc.Map, nil, cfg.Shard != nil)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	inferred := time.Now()
	var partial error
	if len(failed) > 0 {
		partial = &PartialError{Failed: failed}
	}
	stored, err := cfg.write(det, runID, th, start, inferred, len(paths), failedIDs, out)
	if err != nil {
		return nil, "", err
	}
	return preds, stored, partial
}

// write stores the predictions: a shard's partition of run runID, the run
// itself when cfg.Store asks for it, or nothing. It returns the run stored.
func (cfg PredictConfig) write(det *Detector, runID string, th results.ThresholdInfo, start, inferred time.Time, inputs int, unreadable []int64, out scoredRows) (string, error) {
	if cfg.Shard != nil {
		run := meta(runID, "predict", cfg.Config, det, datasets.Index{}, results.ThresholdInfo{}, start.UTC())
		run.Timings = timings(start, inferred, len(out.images))
		_, err := writeShard(cfg.Config, run, inputs, unreadable, out)
		return runID, err
	}
	if !cfg.Store || len(out.images) == 0 {
		return "", nil
	}
	run := results.Run{Images: out.images, Maps: out.maps}
	run.Meta = meta(runID, "predict", cfg.Config, det, datasets.Index{}, th, start.UTC())
	run.Meta.Timings = timings(start, inferred, len(out.images))
	return runID, (results.Store{Root: cfg.ResultsDir}).Write(run)
}

// inputs expands the arguments (a folder stands for every image below it)
// into the paths of all inputs, and the positions of those this process
// scores (a shard's own, by a hash of the path relative to its argument).
func (cfg PredictConfig) inputs(args []string) (paths []string, mine []int, err error) {
	inputs, err := datasets.ExpandInputs(args)
	if err != nil {
		return nil, nil, fmt.Errorf("predict: %w", err)
	}
	paths = make([]string, len(inputs))
	for i, in := range inputs {
		paths[i] = in.Path
		if cfg.Shard == nil || cfg.Shard.Owns(in.Rel) {
			mine = append(mine, i)
		}
	}
	return paths, mine, nil
}

// inputBatches loads the inputs at positions mine, bs at a time, at the
// model's size; an image is its position among all inputs (its id, so its
// noise does not depend on which others could be read, or on the shard).
// unreadable hears of each input that could not be loaded.
func inputBatches(paths []string, mine []int, bs, size int, unreadable func(i int, err error)) iter.Seq2[Batch, error] {
	return func(yield func(Batch, error) bool) {
		for lo := 0; lo < len(mine); lo += bs {
			var b Batch
			for _, i := range mine[lo:min(lo+bs, len(mine))] {
				it, err := datasets.LoadItem(datasets.Sample{Path: paths[i], Split: "predict"}, size)
				if err != nil {
					unreadable(i, err)
					continue
				}
				b.Items, b.IDs = append(b.Items, it), append(b.IDs, int64(i))
			}
			if !yield(b, nil) {
				return
			}
		}
	}
}

func writePNG(path string, img image.Image) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("overlay %s: %w", path, err)
	}
	return f.Close()
}
