package server

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// The live HTTP fuzz sends this many mutated requests (make test: a few
// thousand; make fuzz: 10^5).
var httpFuzzRequests = flag.Int("httpfuzz", 3000, "requests TestLiveHTTPFuzz sends to a live server")

// fuzzSeed is one valid request that mutations start from.
type fuzzSeed struct {
	method, path, contentType string
	body                      []byte
}

// fuzzTokens are the values mutations splice in: the ones that broke
// parsers before (huge numbers, traversal, NUL, odd encodings).
var fuzzTokens = []string{
	"", "0", "-1", "1e19", "9223372036854775807", "-9223372036854775808", "Inf", "NaN", "1e-400", "0x10",
	"..", "../..", "%2e%2e", "%2F", "%00", "\x00", "/etc/passwd", "synth", "woven", "🙂", "\xff\xfe",
	strings.Repeat("a", 5000), "null", "true", "[]", "{}", `{"a":`, `"`, "\\", "?", "#", "&", "=",
	"max-f1", "fpr<=0.05", "fpr<=abc", "ddim", "dpm++2m", "ddpm", "anomalous", "normal", "pixel", "ae+ssim",
}

// fuzzRequest mutates a seed 0-3 times: its method, a path segment, the
// query, the body's bytes or one of its JSON values, the content type.
func fuzzRequest(rng *rand.Rand, s fuzzSeed) fuzzSeed {
	s.body = bytes.Clone(s.body)
	for range rng.IntN(4) {
		tok := fuzzTokens[rng.IntN(len(fuzzTokens))]
		switch rng.IntN(7) {
		case 0:
			s.method = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}[rng.IntN(7)]
		case 1:
			path, query, _ := strings.Cut(s.path, "?")
			seg := strings.Split(path, "/")
			seg[1+rng.IntN(len(seg)-1)] = url.PathEscape(tok)
			s.path = strings.Join(seg, "/")
			if query != "" {
				s.path += "?" + query
			}
		case 2:
			keys := []string{"offset", "limit", "sort", "category", "min_score", "max_score", "verdict", "format", "token", "split", "predicted"}
			sep := "?"
			if strings.Contains(s.path, "?") {
				sep = "&"
			}
			s.path += sep + keys[rng.IntN(len(keys))] + "=" + url.QueryEscape(tok)
		case 3:
			if len(s.body) > 0 {
				i := rng.IntN(len(s.body))
				s.body[i] ^= byte(1 + rng.IntN(255))
			}
		case 4:
			if len(s.body) > 0 {
				s.body = s.body[:rng.IntN(len(s.body))]
			}
		case 5:
			s.body = mutateJSONValue(rng, s.body, tok)
		case 6:
			s.contentType = []string{"", "application/json", "text/plain", "multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"}[rng.IntN(6)]
		}
	}
	return s
}

// mutateJSONValue replaces one value of a JSON object body (any depth) with
// tok, as a string or, when it parses, as raw JSON; other bodies are kept.
func mutateJSONValue(rng *rand.Rand, body []byte, tok string) []byte {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return body
	}
	var repl any = tok
	var raw any
	if json.Unmarshal([]byte(tok), &raw) == nil {
		repl = raw
	}
	var walk func(x any) bool
	walk = func(x any) bool {
		m, ok := x.(map[string]any)
		if !ok || len(m) == 0 {
			return false
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		k := keys[rng.IntN(len(keys))]
		if rng.IntN(2) == 0 && walk(m[k]) {
			return true
		}
		m[k] = repl
		return true
	}
	walk(v)
	out, err := json.Marshal(v)
	if err != nil {
		return body
	}
	return out
}

// TestLiveHTTPFuzz sends mutated requests from many clients to a live server
// on loopback: no 5xx except the documented 503 (busy), the server keeps
// answering, accepted jobs are cancelled at once (so no training runs), and
// its memory stays bounded.
func TestLiveHTTPFuzz(t *testing.T) {
	e := startEnv(t, nil)
	run := "20260101T000000Z-f00f00"
	var rows []results.ImageRow
	for i, rel := range []string{"woven/test/good/000.png", "disc/test/missing/000.png"} {
		rows = append(rows, results.ImageRow{ImageID: int64(i), Category: strings.Split(rel, "/")[0], Path: filepath.Join(e.dataset, rel),
			GroundTruth: int32(i), Score: 0.1 + 0.3*float64(i), Predicted: int32(i)})
	}
	writeRun(t, e, run, 0.25, rows)
	// Connections idle for less than the server keeps them: a PUT sent on
	// one the server is closing fails and is not retried.
	f := &httpFuzz{t: t, e: e, seeds: fuzzSeeds(t, e, run), statuses: map[int]int{},
		client: &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: serverIdleTimeout / 4}}}
	// Cancel accepted jobs as they come, so that the fuzz measures the
	// server, not a training run.
	stopCancel, cancelled := make(chan struct{}), make(chan struct{})
	go f.cancelJobs(stopCancel, cancelled)
	const workers = 8
	n := int64(*httpFuzzRequests)
	start := time.Now()
	rssWarm := f.sendAll(workers, n)
	close(stopCancel)
	<-cancelled
	elapsed := time.Since(start)
	torchrt.TrimHeap()
	rssEnd := torchrt.RSSMiB()
	e.alive(t)
	f.report(n, workers, elapsed, rssWarm, rssEnd)
}

// httpFuzz is the live fuzz's clients and what they saw.
type httpFuzz struct {
	t      *testing.T
	e      *env
	seeds  []fuzzSeed
	client *http.Client
	resets atomic.Int64

	mu        sync.Mutex
	statuses  map[int]int
	bad       []string
	jobsTaken []string
}

// fuzzSeeds are well-formed requests to every route, which the fuzz
// mutates.
func fuzzSeeds(t *testing.T, e *env, run string) []fuzzSeed {
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	fw, err := mw.CreateFormFile("image", "x.png")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(pngBytes(t, 16, 16, color.Gray{Y: 128})); err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	testJob := shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "batch_size": 4,
		"sampler": map[string]any{"steps": 2}, "threshold": "max-f1"}}
	return []fuzzSeed{
		{method: "GET", path: "/api/v1/status"},
		{method: "GET", path: "/api/v1/runs"},
		{method: "GET", path: "/api/v1/runs/" + run},
		{method: "GET", path: "/api/v1/runs/" + run + "/images?category=woven&sort=-score&limit=3&offset=0&verdict=unlabelled"},
		{method: "GET", path: "/api/v1/runs/" + run + "/images/1/source"},
		{method: "GET", path: "/api/v1/runs/" + run + "/images/1/map"},
		{method: "GET", path: "/api/v1/runs/" + run + "/metrics"},
		{method: "GET", path: "/api/v1/runs/" + run + "/files/images.parquet"},
		{method: "GET", path: "/api/v1/runs/" + run + "/export?format=csv"},
		{method: "PUT", path: "/api/v1/runs/" + run + "/images/0/label", contentType: "application/json", body: js(shared.LabelRequest{Verdict: "anomalous", Note: "dent", User: "qa"})},
		{method: "PUT", path: "/api/v1/runs/" + run + "/labels", contentType: "application/json", body: js(shared.BulkLabelRequest{Action: "bulk", User: "qa", Labels: []shared.ImageLabel{{ImageID: 0, Verdict: "normal"}, {ImageID: 1, Verdict: "anomalous", Note: "dent"}}})},
		{method: "GET", path: "/api/v1/runs/" + run + "/labels/history"},
		{method: "PUT", path: "/api/v1/runs/" + run + "/threshold", contentType: "application/json", body: []byte(`{"policy":"max-f1"}`)},
		{method: "POST", path: "/api/v1/datasets", contentType: "application/json", body: []byte(`{"name":"mine","path":"synth"}`)},
		{method: "GET", path: "/api/v1/datasets"},
		{method: "GET", path: "/api/v1/models"},
		{method: "POST", path: "/api/v1/models/load", contentType: "application/json", body: js(map[string]string{"path": e.model})},
		{method: "POST", path: "/api/v1/jobs", contentType: "application/json", body: js(testJob)},
		{method: "GET", path: "/api/v1/jobs"},
		{method: "GET", path: "/api/v1/jobs/j-1"},
		{method: "POST", path: "/api/v1/jobs/j-1/cancel"},
		{method: "POST", path: "/api/v1/uploads", contentType: mw.FormDataContentType(), body: form.Bytes()},
		{method: "GET", path: "/api/v1/ws/denoise"},
		{method: "GET", path: "/api/v1/trajectory?run_id=" + run + "&image_id=1&steps=2&format=strip&panels=image,map&side=32"},
		{method: "GET", path: "/api/v1/openapi.json"},
		{method: "GET", path: "/metrics"},
		{method: "GET", path: "/"},
	}

}

// send sends one mutated seed and records its answer.
func (f *httpFuzz) send(rng *rand.Rand) {
	s := fuzzRequest(rng, f.seeds[rng.IntN(len(f.seeds))])
	req, err := http.NewRequestWithContext(context.Background(), s.method, f.e.base+s.path, bytes.NewReader(s.body))
	if err != nil {
		return // a URL no client can send
	}
	if s.contentType != "" {
		req.Header.Set("Content-Type", s.contentType)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		// No answer on a kept-alive connection (about once in ten runs a
		// PUT to an unrouted path met "connection reset"; not explained
		// yet): counted, and sent once more on a new connection - the
		// server must answer that one.
		f.resets.Add(1)
		first := err
		if req, err = http.NewRequestWithContext(context.Background(), s.method, f.e.base+s.path, bytes.NewReader(s.body)); err == nil {
			req.Close = true
			if s.contentType != "" {
				req.Header.Set("Content-Type", s.contentType)
			}
			resp, err = f.client.Do(req)
		}
		if err != nil {
			f.mu.Lock()
			f.bad = append(f.bad, fmt.Sprintf("%s %q (%s, %d-byte body): %v, and again on a new connection: %v", s.method, s.path, s.contentType, len(s.body), first, err))
			f.mu.Unlock()
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses[resp.StatusCode]++
	switch {
	case err != nil:
		f.bad = append(f.bad, fmt.Sprintf("%s %q: reading the answer: %v", s.method, s.path, err))
	case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		// Documented: the upload decoder is busy.
	case resp.StatusCode >= 500:
		f.bad = append(f.bad, fmt.Sprintf("%s %q (%s, %d-byte body): %d %s", s.method, s.path, s.contentType, len(s.body), resp.StatusCode, body))
	case s.method == "POST" && strings.HasSuffix(s.path, "/jobs") && resp.StatusCode/100 == 2:
		var j shared.Job
		if json.Unmarshal(body, &j) == nil && j.ID != "" {
			f.jobsTaken = append(f.jobsTaken, j.ID)
		}
	}
}

// cancelJobs cancels the jobs the fuzz started until stop closes, then
// closes done.
func (f *httpFuzz) cancelJobs(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		f.mu.Lock()
		ids := f.jobsTaken
		f.jobsTaken = nil
		f.mu.Unlock()
		for _, id := range ids {
			if _, err := f.e.srv.runner.Cancel(id); err != nil {
				f.t.Errorf("cancel %s: %v", id, err)
			}
		}
	}
}

// sendAll sends n requests from workers clients at once and returns the
// trimmed RSS after the first tenth.
func (f *httpFuzz) sendAll(workers int, n int64) (rssWarm float64) {
	var sent atomic.Int64
	warm := n / 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(7, uint64(w)))
			for {
				i := sent.Add(1)
				if i > n {
					return
				}
				if i == warm {
					torchrt.TrimHeap() // live memory, not the allocators' caches
					rssWarm = torchrt.RSSMiB()
				}
				f.send(rng)
			}
		}()
	}
	wg.Wait()
	return rssWarm
}

// report logs the statuses and memory and fails on an unintended 5xx, no
// answer, seeds that no longer reach the handlers, or memory that grew.
func (f *httpFuzz) report(n int64, workers int, elapsed time.Duration, rssWarm, rssEnd float64) {
	t := f.t
	codes := make([]int, 0, len(f.statuses))
	for c := range f.statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var summary []string
	for _, c := range codes {
		summary = append(summary, fmt.Sprintf("%d: %d", c, f.statuses[c]))
	}
	t.Logf("%d requests in %s (%.0f/s) from %d clients; statuses %s; RSS %.0f MiB after 10%%, %.0f MiB at the end, peak %.0f MiB; %d sent again after no answer",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), workers, strings.Join(summary, ", "), rssWarm, rssEnd, torchrt.PeakRSSMiB(), f.resets.Load())
	if f.resets.Load() > n/500 {
		t.Errorf("%d of %d requests got no answer on their kept-alive connection", f.resets.Load(), n)
	}
	if len(f.bad) > 0 {
		for _, b := range f.bad[:min(len(f.bad), 10)] {
			t.Error(b)
		}
		t.Fatalf("%d of %d requests got an unintended 5xx or no answer", len(f.bad), n)
	}
	if f.statuses[200] == 0 || f.statuses[400] == 0 || f.statuses[404] == 0 {
		t.Fatalf("statuses %v: the seeds no longer reach the handlers", summary)
	}
	// Bounded memory: what the server holds must not grow with the number
	// of requests (uploads go to disk, events to bounded queues).
	if growth := rssEnd - rssWarm; growth > 256 {
		t.Fatalf("RSS grew by %.0f MiB over %d requests", growth, n-n/10)
	}
}
