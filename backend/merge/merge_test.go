package merge_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/merge"
	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/shard"
	"github.com/diad-project/diad/backend/summary"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

const side = 16

// fakeSplit makes a test split's scored images the way a model would:
// anomalous images have a defect square with higher map values.
func fakeSplit(runID string, n int, seed uint64) []summary.Image {
	r := rand.New(rand.NewPCG(seed, 1))
	var out []summary.Image
	cats := []string{"disc", "grid", "woven"}
	for id := 0; id < n; id++ {
		anomalous := id%4 != 0
		m := make([]float32, side*side)
		for i := range m {
			m[i] = r.Float32()
		}
		var mask []bool
		gt := int32(0)
		defect := "good"
		if anomalous {
			gt, defect = 1, "scratch"
			mask = make([]bool, side*side)
			x0, y0 := r.IntN(side-4), r.IntN(side-4)
			for y := y0; y < y0+4; y++ {
				for x := x0; x < x0+4; x++ {
					mask[y*side+x] = true
					m[y*side+x] += 0.5 + r.Float32()
				}
			}
		}
		score := 0.0
		for _, v := range m {
			score = math.Max(score, float64(v))
		}
		cat := cats[id%len(cats)]
		row := results.ImageRow{RunID: runID, ImageID: int64(id), Category: cat, Path: fmt.Sprintf("/data/%s/test/%s/%03d.png", cat, defect, id),
			Split: "test", GroundTruth: gt, Defect: defect, Score: score, Scorer: "pixel", CreatedAt: time.Unix(1700000000, 0).UTC()}
		out = append(out, summary.Image{Row: row, Width: side, Height: side, Map: m, Mask: mask})
	}
	return out
}

func meta(runID string) results.RunMeta {
	return results.RunMeta{RunID: runID, Kind: "test", Preset: "tiny", CheckpointSHA: "abc", Scorer: "pixel", Seed: 1,
		Sampler: &shared.SamplerConfig{Kind: "ddim", StartT: 200, Steps: 10}, BatchInvariant: true,
		Dataset: shared.RunDataset{Root: "/data", Layout: "mvtec", Categories: []string{"disc", "grid", "woven"}},
		Timings: map[string]float64{"inference": 1}}
}

// writeShards writes images as count shards (split by path hash), with
// change applied to each shard's info before it is written.
func writeShards(t *testing.T, store results.Store, runID string, images []summary.Image, count int, change func(*results.ShardInfo)) {
	t.Helper()
	for i := 0; i < count; i++ {
		spec := shard.Spec{Index: i, Count: count}
		sh := results.Shard{Info: results.ShardInfo{Run: meta(runID), Index: i, Count: count, SplitImages: len(images), Threshold: "max-f1", Metrics: metrics.ReferenceEval}}
		for _, im := range images {
			if !spec.Owns(strings.TrimPrefix(im.Row.Path, "/data/")) {
				continue
			}
			sh.Images = append(sh.Images, im.Row)
			sh.Maps = append(sh.Maps, results.Quantize(runID, im.Row.ImageID, im.Width, im.Height, im.Map))
			sh.Pixels = append(sh.Pixels, results.NewPixelRow(runID, im.Row.ImageID, im.Width, im.Height, im.Map, im.Mask))
		}
		if change != nil {
			change(&sh.Info)
		}
		if err := store.WriteShard(sh); err != nil {
			t.Fatal(err)
		}
	}
}

// The merged metrics equal those computed over all images in one process,
// bit for bit, and the merged run opens like any run.
func TestMergeEqualsOneProcess(t *testing.T) {
	store := results.Store{Root: t.TempDir()}
	runID := "20261129T120000Z-abcdef"
	images := fakeSplit(runID, 60, 1)
	want := summary.Table(images, metrics.ReferenceEval)
	writeShards(t, store, runID, images, 4, nil)
	rep, err := merge.Run(store, runID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images != 60 || rep.Shards != 4 {
		t.Fatalf("report %+v", rep)
	}
	got, err := store.Metrics(runID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want.Rows)*len(metrics.PaperColumns) {
		t.Fatalf("%d metric rows", len(got))
	}
	for _, g := range got {
		var w float64
		found := false
		for _, r := range want.Rows {
			if r.Category == g.Category {
				w, found = r.Values[g.Metric], true
			}
		}
		if !found || math.Float64bits(w) != math.Float64bits(g.Value) {
			t.Errorf("%s %s: merged %v, one process %v", g.Category, g.Metric, g.Value, w)
		}
	}
	if v := want.Mean().Values[metrics.PixelAUROC]; math.IsNaN(v) || v < 0.9 {
		t.Fatalf("the fake split should be detectable: P-AUROC %v", v)
	}
	runs, err := store.Runs()
	if err != nil || len(runs) != 1 || runs[0].Shards != 4 || runs[0].Threshold.Policy != "max-f1" {
		t.Fatalf("listed runs %+v, %v", runs, err)
	}
	rows, err := store.Images(runID)
	if err != nil || len(rows) != 60 {
		t.Fatalf("images %d, %v", len(rows), err)
	}
	for i, r := range rows {
		if r.ImageID != int64(i) || r.Score != images[i].Row.Score {
			t.Fatalf("row %d: %+v", i, r)
		}
	}
	maps, err := store.Maps(runID)
	if err != nil || len(maps) != 60 {
		t.Fatalf("maps %d, %v", len(maps), err)
	}
}

func TestMergeRefusesWhatIsNotOneRun(t *testing.T) {
	runID := "20261129T120000Z-abcdef"
	images := fakeSplit(runID, 40, 2)
	cases := []struct {
		name  string
		setup func(t *testing.T, store results.Store)
		want  string
	}{
		{"missing shard", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 4, nil)
			if err := os.RemoveAll(s.ShardDir(runID, "shard=0002-of-0004")); err != nil {
				t.Fatal(err)
			}
		}, "shard=0002-of-0004 (not written)"},
		{"killed shard", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 4, nil)
			// A shard killed while writing leaves its temporary folder,
			// and an older partition without shard.json is not complete.
			if err := os.Rename(s.ShardDir(runID, "shard=0001-of-0004"), s.ShardDir(runID, ".tmp-shard=0001-of-0004-123")); err != nil {
				t.Fatal(err)
			}
		}, "shard=0001-of-0004 (a shard is writing it"},
		{"mismatched counts", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 4, nil)
			writeShards(t, s, runID, images[:0], 2, nil)
		}, "mismatched shard counts"},
		{"another checkpoint", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 3, func(i *results.ShardInfo) {
				if i.Index == 1 {
					i.Run.CheckpointSHA = "other"
				}
			})
		}, "checkpoint (SHA-256)"},
		{"another sampler", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 3, func(i *results.ShardInfo) {
				if i.Index == 2 {
					i.Run.Sampler.StartT = 999
				}
			})
		}, "differ in sampler"},
		{"another dataset", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 3, func(i *results.ShardInfo) {
				if i.Index == 0 {
					i.SplitImages = 41
				}
			})
		}, "split size"},
		{"images missing", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 3, func(i *results.ShardInfo) { i.SplitImages = 50 })
		}, "hold 40 of the split's 50 images"},
		{"corrupt partition", func(t *testing.T, s results.Store) {
			writeShards(t, s, runID, images, 2, nil)
			p := filepath.Join(s.ShardDir(runID, "shard=0001-of-0002"), results.PixelsFile)
			b := filetest.Read(t, p)
			b[len(b)/2] ^= 0xff
			filetest.Write(t, p, b)
		}, "corrupt"},
		{"no partitions", func(t *testing.T, s results.Store) {
			if err := os.MkdirAll(s.Dir(runID), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "no finished shard partitions"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store := results.Store{Root: t.TempDir()}
			c.setup(t, store)
			_, err := merge.Run(store, runID, time.Now())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if runs, err := store.Runs(); err != nil || len(runs) != 0 {
				t.Fatalf("a refused merge wrote a run: %+v %v", runs, err)
			}
		})
	}
}

// A shard run again replaces its partition only; merging again keeps the
// analysts' labels, their history and a threshold set by hand.
func TestRemergeKeepsAnalystWork(t *testing.T) {
	store := results.Store{Root: t.TempDir()}
	runID := "20261129T120000Z-abcdef"
	images := fakeSplit(runID, 30, 3)
	writeShards(t, store, runID, images, 3, nil)
	if _, err := merge.Run(store, runID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetLabels(runID, []results.Label{{ImageID: 4, Verdict: results.VerdictAnomalous, User: "ana", Note: "seen"}}, results.ActionSet, time.Now()); err != nil {
		t.Fatal(err)
	}
	manual := results.ThresholdInfo{Value: 1.25, Policy: "manual"}
	if err := store.SetThreshold(runID, manual); err != nil {
		t.Fatal(err)
	}
	// Shard 1 runs again (same images): only its partition changes.
	before, err := os.Stat(filepath.Join(store.ShardDir(runID, "shard=0000-of-0003"), results.ShardFile))
	if err != nil {
		t.Fatal(err)
	}
	writeShardsOnly(t, store, runID, images, 3, 1)
	after, err := os.Stat(filepath.Join(store.ShardDir(runID, "shard=0000-of-0003"), results.ShardFile))
	if err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("re-running shard 1 touched shard 0: %v", err)
	}
	if _, err := merge.Run(store, runID, time.Now()); err != nil {
		t.Fatal(err)
	}
	m, err := store.Meta(runID)
	if err != nil || m.Threshold.Value != manual.Value || m.Threshold.Policy != manual.Policy || m.Threshold.SetBy != manual.SetBy {
		t.Fatalf("threshold after re-merge %+v, %v", m.Threshold, err)
	}
	rows, err := store.Images(runID)
	if err != nil {
		t.Fatal(err)
	}
	if rows[4].AnalystLabel != results.VerdictAnomalous || rows[4].AnalystUser != "ana" || rows[4].Threshold != 1.25 {
		t.Fatalf("row 4 after re-merge: %+v", rows[4])
	}
	// The label history stays, its checksum recorded.
	if h, err := store.LabelHistory(runID); err != nil || len(h) != 1 || h[0].ImageID != 4 || h[0].ToVerdict != results.VerdictAnomalous {
		t.Fatalf("label history after re-merge: %+v, %v", h, err)
	}
	if m.Files[results.HistoryFile] == "" {
		t.Fatal("re-merge dropped the label history's checksum")
	}
	entries, err := os.ReadDir(store.Dir(runID))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") || strings.HasPrefix(e.Name(), ".merge-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func writeShardsOnly(t *testing.T, store results.Store, runID string, images []summary.Image, count, only int) {
	t.Helper()
	tmp := results.Store{Root: t.TempDir()}
	writeShards(t, tmp, runID, images, count, nil)
	parts, _, err := tmp.Partitions(runID)
	if err != nil {
		t.Fatal(err)
	}
	p := parts[only]
	im, err := p.Images()
	if err != nil {
		t.Fatal(err)
	}
	mp, err := p.Maps()
	if err != nil {
		t.Fatal(err)
	}
	px, err := p.Pixels()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteShard(results.Shard{Info: p.Info, Images: im, Maps: mp, Pixels: px}); err != nil {
		t.Fatal(err)
	}
}

func TestPixelRowRoundTrip(t *testing.T) {
	m := []float32{0, -1.5, float32(math.Inf(1)), 3.25, 1e-30}
	mask := []bool{false, true, false, true, true}
	r := results.NewPixelRow("x", 1, 5, 1, m, mask)
	gm, gmask, err := r.Values()
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		if math.Float32bits(gm[i]) != math.Float32bits(m[i]) || gmask[i] != mask[i] {
			t.Fatalf("pixel %d: %v %v", i, gm[i], gmask[i])
		}
	}
	r.Mask = r.Mask[:0]
	if _, mk, err := r.Values(); err != nil || mk != nil {
		t.Fatalf("no mask: %v %v", mk, err)
	}
	r.Map = r.Map[:7]
	if _, _, err := r.Values(); err == nil {
		t.Fatal("short map accepted")
	}
}
