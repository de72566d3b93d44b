package server

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

// loadStreams is how many websocket clients stream a trajectory while a job
// runs in the load test and benchmark (one more client asks and never reads).
const loadStreams = 50

// loadEnv starts a server whose data root holds a larger test set, and
// returns it with a test job over that set and an uploaded image to stream.
func loadEnv(tb testing.TB) (*env, shared.JobRequest, shared.Upload) {
	tb.Helper()
	e := startEnv(tb, nil)
	big := filepath.Join(e.dataRoot, "load")
	if _, err := os.Stat(big); err != nil {
		if _, err := datasets.Synthesize(big, datasets.SynthConfig{Seed: 9, Size: 64, Train: 2, TestGood: 30, PerDefect: 5, Categories: []string{"woven", "disc"}}); err != nil {
			tb.Fatal(err)
		}
	}
	job := shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "load"}, "batch_size": 4}}
	img := filetest.Read(tb, filepath.Join(e.dataset, "woven", "test", "hole", "000.png"))
	return e, job, upload(tb, e, img)
}

// loadedRun is what one job run under streaming load measured.
type loadedRun struct {
	job              shared.Job
	rss0, rss1, peak float64 // MiB: before, after (allocator caches trimmed), peak
}

// runUnderLoad submits job and, while it runs, has loadStreams clients
// stream u's trajectory and one more ask and never read. It fails tb unless
// every reading client got the complete trajectory.
func runUnderLoad(tb testing.TB, e *env, job shared.JobRequest, u shared.Upload) loadedRun {
	tb.Helper()
	// RSS is read with the allocators' free caches handed back, so the
	// reading is memory the load keeps, not what glibc and Go hold on to
	// (untrimmed readings varied by +-30 MiB between runs).
	torchrt.TrimHeap()
	run := loadedRun{rss0: torchrt.RSSMiB()}
	if err := torchrt.ResetPeakRSS(); err != nil {
		tb.Fatal(err)
	}
	j := submit(tb, e, job)
	waitJob(tb, e, j.ID, shared.JobRunning)
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stalledCtx, stopStalled := context.WithCancel(ctx)
	stalled := make(chan error, 1)
	go func() {
		_, _, err := denoise(tb, stalledCtx, e.base, shared.DenoiseRequest{UploadID: u.ID, Seed: 1}, false)
		stalled <- err
	}()
	var wg sync.WaitGroup
	errs := make([]error, loadStreams)
	frames := make([][]shared.Frame, loadStreams)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			frames[i], _, errs[i] = denoise(tb, ctx, e.base, shared.DenoiseRequest{UploadID: u.ID, Seed: 1}, true)
		}(i)
	}
	wg.Wait()
	run.job = waitJob(tb, e, j.ID, shared.JobSucceeded)
	run.peak = torchrt.PeakRSSMiB()
	torchrt.TrimHeap()
	run.rss1 = torchrt.RSSMiB()
	stopStalled()
	if err := <-stalled; err != nil {
		tb.Fatalf("the stalled client never asked: %v", err)
	}
	for i, f := range frames {
		if errs[i] != nil || len(f) != 11 || f[10].Type != shared.TypeFinal {
			tb.Fatalf("client %d did not get a complete trajectory (%d frames): %v", i, len(f), errs[i])
		}
	}
	return run
}

func jobSeconds(j shared.Job) float64 { return j.Finished.Sub(*j.Started).Seconds() }

// TestLoadFiftyStreamsDuringAJob runs a test job while 50 websocket clients
// stream a denoising trajectory (plus one client that never reads): every
// reading client must get the complete trajectory, the job must succeed,
// and memory must stay bounded. How much the clients slow the job is
// BenchmarkJobUnderStreamingLoad's to measure.
func TestLoadFiftyStreamsDuringAJob(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	e, job, u := loadEnv(t)
	// One run alone first: the model load and the allocators' first growth
	// are not the load's.
	waitJob(t, e, submit(t, e, job).ID, shared.JobSucceeded)
	run := runUnderLoad(t, e, job, u)
	t.Logf("test job with %d streaming clients + 1 stalled: %.2f s; RSS %.0f -> %.0f MiB (peak %.0f); dropped frames %d; trajectories computed %d",
		loadStreams, jobSeconds(run.job), run.rss0, run.rss1, run.peak, e.srv.stats.Dropped.Load(), e.srv.trajCount.Load())
	if got := e.srv.trajCount.Load(); got != 1 {
		t.Errorf("the %d identical requests computed %d trajectories, want 1 (shared)", loadStreams+1, got)
	}
	if run.rss1-run.rss0 > 300 {
		t.Errorf("RSS grew by %.0f MiB during the load", run.rss1-run.rss0)
	}
}

// BenchmarkJobUnderStreamingLoad measures how much 50 streaming clients
// (and one stalled client) slow a test job: throughput-ratio is the job's
// time alone over its time under load, where "alone" is the mean of a run
// before and a run after the loaded one (which cancels the machine's drift).
func BenchmarkJobUnderStreamingLoad(b *testing.B) {
	e, job, u := loadEnv(b)
	var alone, loaded float64
	for i := 0; i < b.N; i++ {
		before := waitJob(b, e, submit(b, e, job).ID, shared.JobSucceeded)
		run := runUnderLoad(b, e, job, u)
		after := waitJob(b, e, submit(b, e, job).ID, shared.JobSucceeded)
		alone += (jobSeconds(before) + jobSeconds(after)) / 2
		loaded += jobSeconds(run.job)
	}
	b.ReportMetric(alone/loaded, "throughput-ratio")
	b.ReportMetric(alone/float64(b.N), "s-alone/job")
	b.ReportMetric(loaded/float64(b.N), "s-loaded/job")
}
