// Package evaluate runs a trained DiAD model over a test split or new images:
// reconstruction, anomaly maps and image scores in batches, the per-category
// metric table (the paper's seven metrics and mAD), a decision threshold, and
// a results run (Parquet) with optional heatmap overlays.
package evaluate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/shard"
	"github.com/diad-project/diad/backend/summary"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/backend/version"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// Config is an evaluation.
type Config struct {
	Checkpoint string          `yaml:"checkpoint"`
	Data       datasets.Source `yaml:"data"`
	Features   features.Config `yaml:"features"`
	// Scorer selects the anomaly map (see ResolveScorer); empty = automatic.
	Scorer string `yaml:"scorer"`
	// Preset, if set, is the preset the checkpoint must be.
	Preset string `yaml:"preset"`
	// Scoring is the map/score post-processing; the zero value means the
	// reference's, scaled to the model's image size (ForImageSize).
	Scoring scoring.Config `yaml:"scoring"`
	// Sampler overrides the model's sampler, field by field (unset = keep;
	// diffusion.SamplerConfig.With).
	Sampler   diffusion.SamplerOverride `yaml:"sampler"`
	BatchSize int                       `yaml:"batch_size"`
	Seed      uint64                    `yaml:"seed"`
	Device    string                    `yaml:"device"`
	Threads   int                       `yaml:"threads"`
	// Threshold is "max-f1", "fpr<=x" or "fnr<=x" (chosen on the evaluated
	// set's labels), or a number.
	Threshold string `yaml:"threshold"`
	// RecordSteps scores every sampler step's predicted image too (slower).
	RecordSteps bool               `yaml:"record_steps"`
	ResultsDir  string             `yaml:"results_dir"`
	Metrics     metrics.EvalConfig `yaml:"metrics"`
	// BatchInvariant reconstructs and scores each image of a batch alone,
	// so its map does not depend on which images shared its batch: what
	// makes a sharded run equal a single-process one bit for bit, at the
	// speed of batch size 1. `diad test` turns it on for shards unless
	// told not to; a merge requires every shard to agree.
	BatchInvariant bool `yaml:"batch_invariant"`
	// Shard, if set, scores only this shard's images (shard.Spec.Owns) and
	// writes them as a partition of run RunID for `diad merge`.
	Shard *shard.Spec `yaml:"-"`
	// RunID names the run (a new one if empty; required with Shard, the
	// same for every shard).
	RunID string `yaml:"-"`
}

// DefaultConfig is the reference evaluation.
func DefaultConfig() Config {
	return Config{Features: features.ReferenceConfig, BatchSize: 8, Seed: 1,
		Device: "auto", Threshold: "max-f1", ResultsDir: "results/runs", Metrics: metrics.ReferenceEval}
}

// Report is an evaluation's outcome.
type Report struct {
	RunID        string
	Table        metrics.Table
	Threshold    results.ThresholdInfo
	Images       int
	ImagesPerSec float64
	Pretrained   bool   // whether the feature extractor had real weights
	Scorer       string // the anomaly map's terms
	// Shard and Partition are set for a shard's run: no table or
	// threshold until `diad merge`.
	Shard     *shard.Spec
	Partition string
}

// Detector is a loaded model with its anomaly scorer and sampler settings:
// it reconstructs and scores batches (what `diad test`, `diad predict`, jobs
// and the engine share).
type Detector struct {
	Model *model.DiAD
	// Ext is the ImageNet extractor when the scorer uses one (else nil).
	Ext     *features.Extractor
	Scorer  *scoring.Scorer
	Sampler diffusion.SamplerConfig
	Seed    uint64
	// BatchInvariant: see Config.BatchInvariant.
	BatchInvariant bool
}

// Open loads the model checkpoint and the feature extractor.
func Open(cfg Config) (*Detector, error) {
	dev, err := torchrt.ParseDevice(cfg.Device)
	if err != nil {
		return nil, err
	}
	torchrt.SetThreads(cfg.Threads)
	m, _, err := model.Open(cfg.Checkpoint, dev)
	if err != nil {
		return nil, err
	}
	if cfg.Preset != "" && cfg.Preset != m.Config.Preset {
		m.Free()
		return nil, fmt.Errorf("evaluate: checkpoint %s is preset %q, not the requested %q", cfg.Checkpoint, m.Config.Preset, cfg.Preset)
	}
	kind, err := ResolveScorer(cfg.Scorer, m.Config, cfg.Features, cfg.Checkpoint)
	if err != nil {
		m.Free()
		return nil, err
	}
	sc, ext, err := NewScorer(m, kind, cfg.Features, cfg.Scoring)
	if err != nil {
		m.Free()
		return nil, err
	}
	det := &Detector{Model: m, Ext: ext, Scorer: sc, Sampler: m.Config.Sampler.With(cfg.Sampler), Seed: cfg.Seed, BatchInvariant: cfg.BatchInvariant}
	if err := det.Sampler.Validate(m.Schedule.T()); err != nil {
		det.Free()
		return nil, fmt.Errorf("evaluate: sampler of %s with the requested changes: %w", cfg.Checkpoint, err)
	}
	return det, nil
}

// Free releases the model and extractor.
func (d *Detector) Free() {
	d.Model.Free()
	if d.Ext != nil {
		d.Ext.Free()
	}
}

// Pretrained reports whether the scorer's ImageNet features had real weights
// (false for scorers that use none).
func (d *Detector) Pretrained() bool { return d.Ext != nil && d.Ext.Pretrained() }

// Scored is one image's outcome.
type Scored struct {
	Score      float64
	Map        []float32 // H*W smoothed anomaly map
	Recon      []float32 // 3*H*W reconstruction, ImageNet-normalised
	StepScores []float64
}

// ScoreBatch reconstructs and scores ImageNet-normalised images [B, 3, S, S],
// holding the process's compute lane (torchrt.LockCompute) meanwhile. Each
// image's noise comes from its own seed (results.ImageSeed), so an image
// gives the same result in any batch. groups are the images' categories
// (nil, or "" for an image: unknown), which a scorer with a patch memory
// compares each image with. stepHook, if not nil, sees every step.
func (d *Detector) ScoreBatch(ctx context.Context, x *ts.Tensor, seeds []uint64, groups []string, recordSteps bool, stepHook diffusion.Callback) (out []Scored, err error) {
	defer torchrt.Pin()()
	defer torchrt.LockCompute()()
	b := int(x.MustSize()[0])
	if len(seeds) != b || (groups != nil && len(groups) != b) {
		return nil, fmt.Errorf("evaluate: %d seeds and %d groups for a batch of %d", len(seeds), len(groups), b)
	}
	if d.BatchInvariant && b > 1 {
		// Each image alone: libtorch picks kernels by the batch's shape
		// and the companions' layout (measured: an image's map differed by
		// ~1e-6 alone and in a batch of 8, and with different companions
		// in batches of 2), so only a batch of one gives every image the
		// same result in any batch and any shard.
		for i := range b {
			xi := x.MustNarrow(0, int64(i), 1, false)
			var gi []string
			if groups != nil {
				gi = groups[i : i+1]
			}
			one, err := d.scoreBatch(ctx, xi, seeds[i:i+1], gi, recordSteps, stepHook)
			xi.MustDrop()
			if err != nil {
				return nil, err
			}
			out = append(out, one...)
		}
		return out, nil
	}
	return d.scoreBatch(ctx, x, seeds, groups, recordSteps, stepHook)
}

// scoreBatch is ScoreBatch on one batch as it is.
func (d *Detector) scoreBatch(ctx context.Context, x *ts.Tensor, seeds []uint64, groups []string, recordSteps bool, stepHook diffusion.Callback) (out []Scored, err error) {
	b := int(x.MustSize()[0])
	steps := make([][]float64, b)
	cb := stepHook
	if recordSteps {
		cb = func(s diffusion.Step) error {
			if stepHook != nil {
				if err := stepHook(s); err != nil {
					return err
				}
			}
			dec := d.PredictedImage(s)
			r, err := d.Scorer.ScoreGroups(x, dec, groups, false)
			dec.MustDrop()
			if err != nil {
				return err
			}
			for i := range r.Scores {
				steps[i] = append(steps[i], r.Scores[i])
			}
			r.Free()
			return nil
		}
	}
	rec, err := d.Model.Reconstruct(ctx, x, d.Sampler, diffusion.NewBatchNoise(seeds), cb)
	if err != nil {
		return nil, err
	}
	defer rec.Free()
	r, err := d.Scorer.ScoreGroups(x, rec.Image, groups, false)
	if err != nil {
		return nil, err
	}
	defer r.Free()
	maps := torchrt.Float32s(r.Map)
	recons := torchrt.Float32s(rec.Image)
	hw := len(maps) / b
	out = make([]Scored, b)
	for i := range out {
		out[i] = Scored{Score: r.Scores[i], Map: maps[i*hw : (i+1)*hw], Recon: recons[3*i*hw : 3*(i+1)*hw], StepScores: steps[i]}
	}
	return out, nil
}

// Progress reports images done out of total.
type Progress func(done, total int)

// TestSplit is cfg.Data's test split (the shard's part of it when cfg.Shard
// is set), loaded at the model's size, and the detector that scores it
// (which the caller frees).
type TestSplit struct {
	Index   datasets.Index
	Samples []datasets.Sample
	// IDs are the samples' image ids: their positions in the whole split,
	// whatever shard scores them (an image's noise seed derives from it).
	IDs []int64
	// Total is the number of images in the whole split.
	Total    int
	Loader   *datasets.Loader
	Detector *Detector
}

// OpenTestSplit opens the test split of cfg.Data and the model.
func OpenTestSplit(cfg Config) (TestSplit, error) {
	ix, err := cfg.Data.Open()
	if err != nil {
		return TestSplit{}, err
	}
	all := ix.Select(datasets.Test)
	if len(all) == 0 {
		return TestSplit{}, fmt.Errorf("evaluate: %s has no test images", cfg.Data.Root)
	}
	samples, ids := all, make([]int64, len(all))
	for i := range ids {
		ids[i] = int64(i)
	}
	if cfg.Shard != nil {
		if err := cfg.Shard.Validate(); err != nil {
			return TestSplit{}, fmt.Errorf("evaluate: %w", err)
		}
		samples, ids = nil, nil
		for i, s := range all {
			if cfg.Shard.Owns(RelPath(ix.Root, s.Path)) {
				samples = append(samples, s)
				ids = append(ids, int64(i))
			}
		}
	}
	det, err := Open(cfg)
	if err != nil {
		return TestSplit{}, err
	}
	var loader *datasets.Loader
	if len(samples) > 0 {
		loader, err = datasets.NewLoader(samples, datasets.LoaderConfig{Size: det.Model.Config.ImageSize, BatchSize: max(cfg.BatchSize, 1), Workers: cfg.Data.Workers})
		if err != nil {
			det.Free()
			return TestSplit{}, err
		}
	}
	return TestSplit{Index: ix, Samples: samples, IDs: ids, Total: len(all), Loader: loader, Detector: det}, nil
}

// RelPath is path relative to root with / separators (the path itself when
// it is not under root): what a shard's hash and a result row's identity use.
func RelPath(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(r, "..") {
		return filepath.ToSlash(r)
	}
	return filepath.ToSlash(path)
}

// runID is the run a command writes: cfg.RunID, which a shard must give
// (every shard of a run writes into it), or a new one.
func (cfg Config) runID(now time.Time) (string, error) {
	switch {
	case cfg.RunID == "" && cfg.Shard != nil:
		return "", fmt.Errorf("a sharded run needs a run id shared by every shard (--run-id, e.g. from `diad run-id`)")
	case cfg.RunID == "":
		return results.NewRunID(now), nil
	case !results.ValidRunID(cfg.RunID):
		return "", fmt.Errorf("bad run id %q (want the form `diad run-id` prints)", cfg.RunID)
	}
	return cfg.RunID, nil
}

// Test evaluates the test split of cfg.Data and writes a results run, or,
// with cfg.Shard, the shard's partition of run cfg.RunID.
func Test(ctx context.Context, cfg Config, progress Progress) (Report, error) {
	start := time.Now()
	runID, err := cfg.runID(start)
	if err != nil {
		return Report{}, fmt.Errorf("evaluate: %w", err)
	}
	split, err := OpenTestSplit(cfg)
	if err != nil {
		return Report{}, err
	}
	det := split.Detector
	defer det.Free()
	size := det.Model.Config.ImageSize
	now := start.UTC()
	var images []summary.Image
	var out scoredRows
	err = det.ScoreEach(ctx, split.Batches(ctx), ScoreOptions{Seed: cfg.Seed, RecordSteps: cfg.RecordSteps}, func(b ScoredBatch) error {
		for i, it := range b.Items {
			s := it.Sample
			gt := int32(0)
			var mask []bool
			if s.Anomalous {
				gt, mask = 1, it.Mask
			}
			row := results.ImageRow{RunID: runID, ImageID: b.IDs[i], Category: s.Category, Path: s.Path, Split: s.Split,
				GroundTruth: gt, Defect: s.Defect, Score: b.Scored[i].Score, Scorer: det.Scorer.Kind(), StepScores: b.Scored[i].StepScores, CreatedAt: now}
			images = append(images, summary.Image{Row: row, Width: size, Height: size, Map: b.Scored[i].Map, Mask: mask})
			out.add(row, size, b.Scored[i].Map, mask, cfg.Shard != nil)
		}
		if progress != nil {
			progress(len(images), len(split.Samples))
		}
		return nil
	})
	if err != nil {
		return Report{}, err
	}
	inferred := time.Now()
	rep := Report{RunID: runID, Images: len(images), ImagesPerSec: float64(len(images)) / inferred.Sub(start).Seconds(), Pretrained: det.Pretrained(), Scorer: det.Scorer.Kind()}
	if cfg.Shard != nil {
		run := meta(runID, "test", cfg, det, split.Index, results.ThresholdInfo{}, now)
		run.Timings = timings(start, inferred, len(images))
		rep.Shard = cfg.Shard
		rep.Partition, err = writeShard(cfg, run, split.Total, nil, out)
		return rep, err
	}
	rep.Table = summary.Table(images, cfg.Metrics)
	if rep.Threshold, err = summary.ChooseThreshold(cfg.Threshold, out.images); err != nil {
		return Report{}, fmt.Errorf("evaluate: %w", err)
	}
	// The rows were copied into images before the threshold: the stored
	// rows carry it, the table is computed from scores alone.
	results.ApplyThreshold(out.images, rep.Threshold)
	run := results.Run{Images: out.images, Maps: out.maps, Metrics: summary.MetricRows(runID, rep.Table)}
	run.Meta = meta(runID, "test", cfg, det, split.Index, rep.Threshold, now)
	run.Meta.Timings = timings(start, inferred, len(images))
	if err := (results.Store{Root: cfg.ResultsDir}).Write(run); err != nil {
		return Report{}, err
	}
	return rep, nil
}

// CheckThreshold validates a threshold spec without any scores, so that a
// job can be refused at submit rather than after its inference.
func CheckThreshold(spec string) error {
	if err := summary.CheckThreshold(spec); err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	return nil
}

// CheckSampler validates sampler changes against the sampler of the
// checkpoint they will apply to (read without loading its weights), so that
// a job fails at submit, not at run time.
func CheckSampler(checkpoint string, o diffusion.SamplerOverride) error {
	mc, err := model.ReadConfig(checkpoint)
	if err != nil {
		return err
	}
	if err := mc.Sampler.With(o).Validate(mc.Schedule.Timesteps); err != nil {
		return fmt.Errorf("evaluate: sampler of %s with the requested changes: %w", filepath.Base(checkpoint), err)
	}
	return nil
}

func meta(runID, kind string, cfg Config, det *Detector, ix datasets.Index, th results.ThresholdInfo, now time.Time) results.RunMeta {
	m := results.RunMeta{RunID: runID, Kind: kind, CreatedAt: now, Preset: det.Model.Config.Preset, Checkpoint: cfg.Checkpoint,
		CheckpointSHA: fileSHA256(cfg.Checkpoint), Seed: cfg.Seed, Threshold: th, Device: torchrt.DeviceName(det.Model.Device()), Config: cfg}
	m.Dataset.Root, m.Dataset.Layout, m.Dataset.Categories = ix.Root, ix.Layout, ix.Categories
	v := version.Read()
	m.Versions = map[string]string{"diad": v.Diad, "revision": v.Revision, "gotch": v.Gotch, "libtorch": torchrt.LibtorchVersion(), "go": v.Go}
	m.Features.Arch, m.Features.Pretrained, m.Features.Weights = cfg.Features.Arch, det.Pretrained(), cfg.Features.Weights
	m.Scorer = det.Scorer.Kind()
	m.BatchInvariant = det.BatchInvariant
	sampler := det.Sampler.With(shared.SamplerOverride{}) // a copy
	m.Sampler = &sampler
	return m
}

func fileSHA256(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// FormatTable renders a metric table in the paper's layout (percentages).
func FormatTable(t metrics.Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s", "category")
	for _, c := range metrics.PaperColumns {
		fmt.Fprintf(&b, " %8s", c)
	}
	b.WriteString("\n")
	rows := append([]metrics.Row(nil), t.Rows...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[j].Category == "mean" && rows[i].Category != "mean" })
	for _, r := range rows {
		fmt.Fprintf(&b, "%-14s", r.Category)
		for _, c := range metrics.PaperColumns {
			v := r.Values[c]
			if math.IsNaN(v) {
				fmt.Fprintf(&b, " %8s", "-")
			} else {
				fmt.Fprintf(&b, " %8.1f", 100*v)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
