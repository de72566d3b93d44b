package merge_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/merge"
	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/summary"
	"github.com/diad-project/diad/results"
)

// mvtecSized is a scored split the size of MVTec-AD's test set: 1,725
// images in 15 categories, 1,258 of them anomalous, 256x256 maps.
func mvtecSized(runID string) []summary.Image {
	const n, w = 1725, 256
	r := rand.New(rand.NewPCG(7, 7))
	out := make([]summary.Image, n)
	for id := range out {
		m := make([]float32, w*w)
		for i := range m {
			m[i] = r.Float32()
		}
		var mask []bool
		gt, defect := int32(0), "good"
		if id%1725 < 1258 && id%4 != 0 || id%11 == 1 {
			gt, defect = 1, "crack"
			mask = make([]bool, w*w)
			x0, y0, s := r.IntN(w-40), r.IntN(w-40), 8+r.IntN(32)
			for y := y0; y < y0+s; y++ {
				for x := x0; x < x0+s; x++ {
					mask[y*w+x] = true
					m[y*w+x] += 0.3 + r.Float32()
				}
			}
		}
		cat := fmt.Sprintf("cat%02d", id%15)
		out[id] = summary.Image{Row: results.ImageRow{RunID: runID, ImageID: int64(id), Category: cat,
			Path: fmt.Sprintf("/data/%s/test/%s/%04d.png", cat, defect, id), Split: "test", GroundTruth: gt, Defect: defect,
			Score: float64(m[0]), Scorer: "pixel", CreatedAt: time.Unix(1700000000, 0).UTC()}, Width: w, Height: w, Map: m, Mask: mask}
	}
	return out
}

// peakRSSMiB reads the process's peak resident memory (VmHWM); resetPeak
// starts a new peak (Linux's clear_refs 5).
func peakRSSMiB(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

func resetPeak(b *testing.B) {
	// Return the setup's garbage to the system first, so the peak is the
	// measured work's own.
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkMergeMVTecSize merges 16 partitions of an MVTec-AD-sized run
// (the goal: <= 10 s, <= 2 GB); BenchmarkSummaryMVTecSize is its baseline,
// the metrics over the same images already in memory (what a single
// process computes after its inference). Compare ns/op and peak-MiB:
//
//	go test -run '^$' -bench 'MVTecSize' -benchtime 3x ./backend/merge
func BenchmarkMergeMVTecSize(b *testing.B) {
	store := results.Store{Root: b.TempDir()}
	runID := "20261129T120000Z-abcdef"
	func() {
		images := mvtecSized(runID)
		writeShardsB(b, store, runID, images, 16)
	}()
	b.ResetTimer()
	resetPeak(b)
	for range b.N {
		if _, err := merge.Run(store, runID, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(peakRSSMiB(b), "peak-MiB")
}

func BenchmarkSummaryMVTecSize(b *testing.B) {
	images := mvtecSized("20261129T120000Z-abcdef")
	b.ResetTimer()
	resetPeak(b)
	for range b.N {
		summary.Table(images, metrics.ReferenceEval)
	}
	b.ReportMetric(peakRSSMiB(b), "peak-MiB")
}

func writeShardsB(b *testing.B, store results.Store, runID string, images []summary.Image, count int) {
	b.Helper()
	for i := 0; i < count; i++ {
		sh := results.Shard{Info: results.ShardInfo{Run: meta(runID), Index: i, Count: count, SplitImages: len(images), Threshold: "max-f1", Metrics: metrics.ReferenceEval}}
		for _, im := range images {
			if int(im.Row.ImageID)%count != i {
				continue
			}
			sh.Images = append(sh.Images, im.Row)
			sh.Maps = append(sh.Maps, results.Quantize(runID, im.Row.ImageID, im.Width, im.Height, im.Map))
			sh.Pixels = append(sh.Pixels, results.NewPixelRow(runID, im.Row.ImageID, im.Width, im.Height, im.Map, im.Mask))
		}
		if err := store.WriteShard(sh); err != nil {
			b.Fatal(err)
		}
	}
}
