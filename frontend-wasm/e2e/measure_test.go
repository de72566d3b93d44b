//go:build !js

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/frontend-wasm/api"
	"github.com/diad-project/diad/frontend-wasm/hook"
	"github.com/diad-project/diad/shared"
)

// workPerSecond is the page's work between two states, per kind, in ms
// per second of the window ("" when none was accounted).
func workPerSecond(before, after map[string]float64, window time.Duration) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, (after[k]-before[k])/window.Seconds()))
	}
	return strings.Join(parts, ", ")
}

type fpsSummary struct{ mean, min, median float64 }

func (f fpsSummary) String() string {
	return fmt.Sprintf("mean %.1f, min %.1f, median %.1f frames/s", f.mean, f.min, f.median)
}

func summarize(samples []float64) fpsSummary {
	if len(samples) == 0 {
		return fpsSummary{}
	}
	sort.Float64s(samples)
	var f fpsSummary
	for _, v := range samples {
		f.mean += v / float64(len(samples))
	}
	f.min, f.median = samples[0], samples[len(samples)/2]
	return f
}

// waitFile waits for a finished download with the extension in dir.
func waitFile(t *testing.T, dir, ext string) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		entries, err := os.ReadDir(dir) // the download folder exists from the start
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ext) {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err == nil && len(b) > 0 {
					return b
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s download in %s", ext, dir)
	return nil
}

// browserCPUSeconds is the CPU time (user + system) of every Chromium
// process on the machine, from /proc.
func browserCPUSeconds(t *testing.T) float64 {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ticks float64
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // the process ended
		}
		// pid (comm) state ... utime stime: fields 14 and 15, counted after
		// the comm, which may hold spaces.
		st := string(b)
		open, end := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || end < open || !strings.Contains(strings.ToLower(st[open+1:end]), "chrom") {
			continue
		}
		f := strings.Fields(st[end+1:])
		if len(f) < 13 {
			continue
		}
		u, err1 := strconv.ParseFloat(f[11], 64)
		sy, err2 := strconv.ParseFloat(f[12], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		ticks += u + sy
	}
	return ticks / 100 // USER_HZ
}

// baselineUnderLoad is the empty-game baseline measured while the server
// computes and streams the trajectory req to a websocket client of this
// test - the load the explorer's streaming runs under, without the page's
// own work. It returns the frames per second counted over the stream.
func baselineUnderLoad(t *testing.T, base string, req shared.DenoiseRequest) (fps float64, frames int, took time.Duration) {
	t.Helper()
	bp := openBrowser(t, base+"/?baseline=1", 1280, 800, 1)
	defer bp.close()
	bp.wait("the baseline page", time.Minute, func(s hook.State) bool { return s.Ready && s.Frames > 30 })
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := api.New(base, "").DialDenoise(ctx) // the client the page uses, natively
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s0, t0 := bp.state(), time.Now()
	if err := d.Request(ctx, req); err != nil {
		t.Fatal(err)
	}
	for {
		f, _, err := d.Next(ctx)
		if err != nil {
			t.Fatalf("the load's trajectory: %v", err)
		}
		if f.Type == shared.TypeFinal {
			break
		}
		frames++
	}
	took = time.Since(t0)
	s1 := bp.state()
	return float64(s1.Frames-s0.Frames) / took.Seconds(), frames, took
}
